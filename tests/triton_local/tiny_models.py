"""Tiny ONNX models and model folders for the local Triton tests, built with ``onnx.helper``.

Small enough to load in a fraction of a second, with outputs that are easy to compute by hand,
so backend behaviour (batching, shapes, dtypes, errors) is tested without the example models.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import onnx
from onnx import TensorProto, helper

OPSET = 17

# y = 2x + 1 on [N, 1, H, W] images and s = sum of y over each image ([N, 1]).
AFFINE_CONFIG = """
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 1, -1, -1 ] } ]
output [
  { name: "y" data_type: TYPE_FP32 dims: [ 1, -1, -1 ] },
  { name: "s" data_type: TYPE_FP32 dims: [ 1 ] }
]
instance_group [ { count: 1 } ]
dynamic_batching { max_queue_delay_microseconds: 200000 }
"""

# uint8 [N, 3] -> float [N, 3] in 0..1, for a second input dtype and no dynamic batching.
SCALE_CONFIG = """
backend: "onnxruntime"
max_batch_size: 4
input [ { name: "pixels" data_type: TYPE_UINT8 dims: [ 3 ] } ]
output [ { name: "scaled" data_type: TYPE_FP32 dims: [ 3 ] } ]
instance_group [ { count: 1 } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""


def affine_onnx(
    path: Path, *, batch: int | str = "N", height: int | str = "H", width: int | str = "W"
) -> Path:
    """Write the affine model; ints fix a dimension in the graph, strings leave it dynamic."""
    image = [batch, 1, height, width]
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["doubled"]),
        helper.make_node("Add", ["doubled", "one"], ["y"]),
        helper.make_node("ReduceSum", ["y", "axes"], ["s"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, image)],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, image),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, [batch, 1]),
        ],
        [
            helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
            helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
        ],
    )
    return _save(graph, path)


def scale_onnx(path: Path) -> Path:
    """Write the uint8 -> float scaling model."""
    nodes = [
        helper.make_node("Cast", ["pixels"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["as_float", "max"], ["scaled"]),
    ]
    graph = helper.make_graph(
        nodes,
        "scale",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["N", 3])],
        [helper.make_tensor_value_info("scaled", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor("max", TensorProto.FLOAT, [], [255.0])],
    )
    return _save(graph, path)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    # ONNX Runtime releases lag behind the onnx package's newest IR version.
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def model_folder(
    root: Path, name: str, config: str, *, onnx_file: str | None = "model.onnx"
) -> Path:
    """Write ``root/name`` with ``config.pbtxt`` and, unless ``onnx_file`` is None, ``1/<file>``.

    The ONNX graph is chosen by the config's input name, so a config can be reused under many
    model names.
    """
    folder = root / name
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(textwrap.dedent(config).lstrip())
    if onnx_file is not None:
        build = scale_onnx if '"pixels"' in config else affine_onnx
        build(folder / "1" / onnx_file)
    return folder
