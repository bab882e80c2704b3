"""The model folders are what Triton and the gateway expect, and agree with their ONNX files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format  # type: ignore[import-untyped]
from tritonclient.grpc import model_config_pb2

from training.cards import CARDS, ModelCard, render_config, render_readme
from training.table_cards import TABLE_CARDS
from training.volume_cards import VOLUME_CARDS

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
NAMES = sorted(CARDS)
TASKS = {"classification", "regression", "detection", "segmentation"}
OUTPUT_KEYS = {
    "classification": {"threshold"},
    "regression": set(),
    "detection": {"score_threshold", "iou_threshold"},
    "segmentation": {"threshold", "instances"},
}


def _config(name: str) -> Any:
    config = model_config_pb2.ModelConfig()
    text_format.Parse((REPOSITORY / name / "config.pbtxt").read_text(), config)
    return config


def _parameters(name: str) -> dict[str, Any]:
    """The ``aicoco.*`` parameters as the gateway decodes them (JSON except the task)."""
    raw = {key: value.string_value for key, value in _config(name).parameters.items()}
    return {key: value if key == "aicoco.task" else json.loads(value) for key, value in raw.items()}


def test_repository_holds_exactly_the_example_models() -> None:
    folders = sorted(p.name for p in REPOSITORY.iterdir() if p.is_dir())
    assert folders == sorted([*NAMES, *TABLE_CARDS, *VOLUME_CARDS])
    index = (REPOSITORY / "README.md").read_text()
    for name in folders:
        assert f"[{name}]({name}/README.md)" in index


@pytest.mark.parametrize("name", NAMES)
def test_folder_layout(name: str) -> None:
    folder = REPOSITORY / name
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == ["1/model.onnx", "README.md", "config.pbtxt", "metrics.json"]
    assert (folder / "1" / "model.onnx").stat().st_size < 2 * 1024 * 1024


@pytest.mark.parametrize("name", NAMES)
def test_config_is_triton_ready(name: str) -> None:
    config = _config(name)
    card = CARDS[name]
    assert config.name == name
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == card.max_batch_size > 0
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == card.queue_delay_us == 0
    for group in config.instance_group:
        assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_AUTO
        assert group.count == 1
        assert not group.gpus
    assert [(i.name, list(i.dims)) for i in config.input] == [("image", [1, card.size, card.size])]
    assert all(i.data_type == model_config_pb2.TYPE_FP32 for i in config.input)
    assert [(o.name, tuple(o.dims)) for o in config.output] == [
        (o.name, o.dims) for o in card.outputs
    ]


@pytest.mark.parametrize("name", NAMES)
def test_committed_files_match_the_training_cards(
    name: str, records: dict[str, dict[str, Any]]
) -> None:
    folder = REPOSITORY / name
    assert (folder / "config.pbtxt").read_text() == render_config(CARDS[name])
    assert (folder / "README.md").read_text() == render_readme(CARDS[name], records[name])


def _channels(card: ModelCard, output_dims: dict[str, tuple[int, ...]]) -> int:
    if card.task == "detection":
        return output_dims["scores"][1]
    if card.task == "regression":
        return output_dims["values"][0]
    return output_dims["probabilities"][0]


@pytest.mark.parametrize("name", NAMES)
def test_aicoco_parameters_follow_the_documented_format(name: str) -> None:
    parameters = _parameters(name)
    card = CARDS[name]
    task = parameters["aicoco.task"]
    assert task in TASKS
    assert set(parameters) == {
        "aicoco.task",
        "aicoco.regressions" if task == "regression" else "aicoco.categories",
        "aicoco.input",
        "aicoco.output",
    }
    output_dims = {o.name: tuple(o.dims) for o in _config(name).output}
    declared = parameters.get("aicoco.categories") or parameters["aicoco.regressions"]
    assert len(declared) == _channels(card, output_dims)
    assert all(isinstance(entry["name"], str) and entry["name"] for entry in declared)
    assert len({entry["name"] for entry in declared}) == len(declared)
    preprocessing = parameters["aicoco.input"]
    assert set(preprocessing) == {"size", "window", "scale", "dims"}
    assert preprocessing["size"] == [card.size, card.size]
    center, width = preprocessing["window"]
    assert width > 0 and -1024 <= center <= 3071
    assert preprocessing["scale"] in {"dtype", "minmax"}
    assert preprocessing["dims"] in {2, 3}
    assert set(parameters["aicoco.output"]) == OUTPUT_KEYS[task]


@pytest.mark.parametrize("name", NAMES)
def test_onnx_matches_the_config(name: str) -> None:
    path = REPOSITORY / name / "1" / "model.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert model.ir_version <= 8
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    config = _config(name)
    inputs = session.get_inputs()
    assert [(i.name, i.type) for i in inputs] == [("image", "tensor(float)")]
    batch_axis = inputs[0].shape[0]
    assert isinstance(batch_axis, str), "the batch axis must be dynamic"
    assert inputs[0].shape[1:] == list(config.input[0].dims)
    outputs = {o.name: o for o in session.get_outputs()}
    assert set(outputs) == {o.name for o in config.output}
    for expected in config.output:
        actual = outputs[expected.name]
        assert actual.type == "tensor(float)"
        assert actual.shape[0] == batch_axis
        assert actual.shape[1:] == list(expected.dims)
    for batch in (1, config.max_batch_size):
        image = np.zeros((batch, *config.input[0].dims), dtype=np.float32)
        for value, spec in zip(
            session.run(None, {"image": image}), session.get_outputs(), strict=True
        ):
            assert value.shape == (batch, *outputs[spec.name].shape[1:])
            assert np.isfinite(value).all()


BEATS_CHANCE = {
    "lesion_classifier": [("auc_nodule", 0.3), ("auc_large_nodule", 0.3)],
    "lesion_size_regressor": [("mae_diameter_mm", -0.5), ("mae_area_mm2", -0.5)],
    "lesion_detector": [("ap50", 0.5)],
    "lung_segmenter": [("dice_left_lung", 0.1), ("dice_right_lung", 0.1)],
    "lesion_segmenter_3d": [("dice_lung", 0.1), ("dice_nodule", 0.4)],
}


@pytest.mark.parametrize("name", NAMES)
def test_documented_accuracy_clearly_beats_chance(
    name: str, records: dict[str, dict[str, Any]]
) -> None:
    """Margins are absolute, or relative to the baseline error when negative."""
    held_out = records[name]["held_out"]
    for key, margin in BEATS_CHANCE[name]:
        chance = held_out["baseline"][key]
        for source in ("hu", "png"):
            value = held_out[source][key]
            if margin >= 0:
                assert value >= chance + margin, (key, source, value, chance)
            else:
                assert value <= chance * (1.0 + margin), (key, source, value, chance)
