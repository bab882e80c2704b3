"""The backend's logic in-process: config parsing, checks against the ONNX graph, batching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from tests.triton_local.tiny_models import affine_onnx, scale_onnx
from triton_local.ort_runner import (
    ExecutionError,
    ModelConfigError,
    ModelSpec,
    OnnxRunner,
    RequestError,
    SessionSettings,
    TensorSpec,
    parse_model_config,
)

Array = np.ndarray[Any, Any]


def affine_spec(*, dims: tuple[int, ...] = (1, -1, -1), max_batch_size: int = 8) -> ModelSpec:
    return ModelSpec(
        name="affine",
        max_batch_size=max_batch_size,
        inputs=(TensorSpec("x", "TYPE_FP32", dims),),
        outputs=(TensorSpec("y", "TYPE_FP32", dims), TensorSpec("s", "TYPE_FP32", (1,))),
        model_filename="model.onnx",
        settings=SessionSettings(intra_op_threads=1),
    )


@pytest.fixture
def affine_path(tmp_path: Path) -> Path:
    return affine_onnx(tmp_path / "model.onnx")


def reference(path: Path, x: Array) -> list[Array]:
    """The same graph run by ONNX Runtime directly: what Triton must return."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return list(session.run(["y", "s"], {"x": x}))


def test_config_json_is_parsed_like_triton_writes_it() -> None:
    spec = parse_model_config(
        {
            "name": "m",
            "max_batch_size": 4,
            "default_model_filename": "net.onnx",
            "input": [{"name": "x", "data_type": "TYPE_UINT8", "dims": ["3", "-1"]}],
            "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [3]}],
            "parameters": {
                "intra_op_thread_count": {"string_value": "3"},
                "allow_spinning": {"string_value": "true"},
            },
        }
    )
    assert spec.inputs == (TensorSpec("x", "TYPE_UINT8", (3, -1)),)
    assert spec.model_filename == "net.onnx"
    assert spec.settings == SessionSettings(intra_op_threads=3, allow_spinning=True)


def test_defaults_suit_a_small_cpu() -> None:
    spec = parse_model_config(
        {
            "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
            "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}],
        }
    )
    assert spec.model_filename == "model.onnx"
    assert spec.max_batch_size == 0
    assert spec.settings.inter_op_threads == 1
    assert not spec.settings.allow_spinning
    assert spec.settings.intra_op_threads >= 1


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"input": [{"name": "x", "data_type": "TYPE_STRING", "dims": [1]}]}, "TYPE_STRING"),
        (
            {
                "input": [
                    {"name": "x", "data_type": "TYPE_FP32", "dims": [4], "reshape": {"shape": [2]}}
                ]
            },
            "reshape",
        ),
        ({"parameters": {"intra_op_thread_count": {"string_value": "two"}}}, "integer"),
        ({"parameters": {"allow_spinning": {"string_value": "maybe"}}}, "true or false"),
    ],
)
def test_unusable_configs_say_why(entry: dict[str, Any], message: str) -> None:
    config: dict[str, Any] = {
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}],
        **entry,
    }
    with pytest.raises(ModelConfigError, match=message):
        parse_model_config(config)


def test_one_session_run_per_batch_gives_each_request_its_own_result(affine_path: Path) -> None:
    runner = OnnxRunner(affine_spec(), affine_path)
    rng = np.random.default_rng(0)
    requests = [
        {"x": rng.random((2, 1, 4, 4), dtype=np.float32)},
        {"x": rng.random((1, 1, 6, 5), dtype=np.float32)},  # another size: its own group
        {"x": rng.random((3, 1, 4, 4), dtype=np.float32)},
    ]
    results = runner.run(requests)
    for inputs, result in zip(requests, results, strict=True):
        assert isinstance(result, dict)
        expected_y, expected_s = reference(affine_path, inputs["x"])
        np.testing.assert_allclose(result["y"], expected_y, rtol=1e-6)
        np.testing.assert_allclose(result["s"], expected_s, rtol=1e-6)


def test_a_bad_request_fails_alone(affine_path: Path) -> None:
    runner = OnnxRunner(affine_spec(), affine_path)
    good = {"x": np.ones((1, 1, 2, 2), np.float32)}
    results = runner.run([good, {"x": np.ones((1, 1, 2, 2), np.float64)}, good])
    assert isinstance(results[0], dict) and isinstance(results[2], dict)
    assert isinstance(results[1], RequestError)
    assert "has data type TYPE_FP64; the model expects TYPE_FP32" in str(results[1])


def test_shape_errors_name_the_expected_shape(tmp_path: Path) -> None:
    path = affine_onnx(tmp_path / "model.onnx", height=4, width=4)
    runner = OnnxRunner(affine_spec(), path)  # config says any size, the graph says 4 x 4
    with pytest.raises(
        RequestError, match=r"shape \[2, 1, 5, 5\]; the model expects \[N, 1, 4, 4\]"
    ):
        runner.check({"x": np.zeros((2, 1, 5, 5), np.float32)})
    with pytest.raises(RequestError, match="'x' is missing"):
        runner.check({})


def test_uint8_input_without_batching(tmp_path: Path) -> None:
    spec = ModelSpec(
        name="scale",
        max_batch_size=0,
        inputs=(TensorSpec("pixels", "TYPE_UINT8", (-1, 3)),),
        outputs=(TensorSpec("scaled", "TYPE_FP32", (-1, 3)),),
        model_filename="model.onnx",
        settings=SessionSettings(intra_op_threads=1),
    )
    runner = OnnxRunner(spec, scale_onnx(tmp_path / "model.onnx"))
    pixels = np.array([[0, 51, 255], [255, 0, 102]], np.uint8)
    results = runner.run([{"pixels": pixels}, {"pixels": pixels[:1]}])
    assert all(isinstance(result, dict) for result in results)
    np.testing.assert_allclose(results[0]["scaled"], pixels / 255.0, rtol=1e-6)  # type: ignore[index]
    np.testing.assert_allclose(results[1]["scaled"], pixels[:1] / 255.0, rtol=1e-6)  # type: ignore[index]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            affine_spec(dims=(2, -1, -1)),
            r"dims \[2, -1, -1\] in config.pbtxt but the ONNX shape is \['N', 1, 'H', 'W'\]",
        ),
        (affine_spec(dims=(4, 4)), "config dims exclude the batch dimension"),
        (
            ModelSpec(
                name="affine",
                max_batch_size=8,
                inputs=(TensorSpec("image", "TYPE_FP32", (1, -1, -1)),),
                outputs=(TensorSpec("y", "TYPE_FP32", (1, -1, -1)),),
                model_filename="model.onnx",
                settings=SessionSettings(intra_op_threads=1),
            ),
            "does not declare",
        ),
        (
            ModelSpec(
                name="affine",
                max_batch_size=8,
                inputs=(TensorSpec("x", "TYPE_FP16", (1, -1, -1)),),
                outputs=(TensorSpec("y", "TYPE_FP32", (1, -1, -1)),),
                model_filename="model.onnx",
                settings=SessionSettings(intra_op_threads=1),
            ),
            "is TYPE_FP16 in config.pbtxt but TYPE_FP32 in the ONNX model",
        ),
        (
            ModelSpec(
                name="affine",
                max_batch_size=8,
                inputs=(TensorSpec("x", "TYPE_FP32", (1, -1, -1)),),
                outputs=(TensorSpec("mask", "TYPE_UINT8", (1, -1, -1)),),
                model_filename="model.onnx",
                settings=SessionSettings(intra_op_threads=1),
            ),
            r"declares output 'mask' but the ONNX model's outputs are \['s', 'y'\]",
        ),
    ],
)
def test_config_that_contradicts_the_graph_fails_the_load(
    affine_path: Path, spec: ModelSpec, message: str
) -> None:
    with pytest.raises(ModelConfigError, match=message):
        OnnxRunner(spec, affine_path)


def test_batching_needs_a_dynamic_batch_dimension(tmp_path: Path) -> None:
    fixed = affine_onnx(tmp_path / "model.onnx", batch=2)
    with pytest.raises(ModelConfigError, match="no dynamic first"):
        OnnxRunner(affine_spec(), fixed)
    # Without batching the first dimension is an ordinary one.
    spec = ModelSpec(
        name="affine",
        max_batch_size=0,
        inputs=(TensorSpec("x", "TYPE_FP32", (2, 1, -1, -1)),),
        outputs=(TensorSpec("s", "TYPE_FP32", (2, 1)),),
        model_filename="model.onnx",
        settings=SessionSettings(intra_op_threads=1),
    )
    [result] = OnnxRunner(spec, fixed).run([{"x": np.ones((2, 1, 3, 3), np.float32)}])
    assert isinstance(result, dict)
    np.testing.assert_allclose(result["s"], np.full((2, 1), 27.0))


def test_missing_model_file_names_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match=r"model.onnx not found.*default_model_filename"):
        OnnxRunner(affine_spec(), tmp_path / "1" / "model.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelConfigError, match="ONNX Runtime cannot load"):
        OnnxRunner(affine_spec(), tmp_path / "garbage.onnx")


def test_outputs_that_contradict_the_config_are_an_execution_error(affine_path: Path) -> None:
    spec = ModelSpec(
        name="affine",
        max_batch_size=8,
        inputs=(TensorSpec("x", "TYPE_FP32", (1, -1, -1)),),
        # The graph leaves the image size open; the config promises 3 x 3.
        outputs=(TensorSpec("y", "TYPE_FP32", (1, 3, 3)),),
        model_filename="model.onnx",
        settings=SessionSettings(intra_op_threads=1),
    )
    runner = OnnxRunner(spec, affine_path)
    [result] = runner.run([{"x": np.zeros((1, 1, 2, 2), np.float32)}])
    assert isinstance(result, ExecutionError)
    assert "output 'y' has shape [1, 1, 2, 2] but config.pbtxt declares [N, 1, 3, 3]" in str(result)
