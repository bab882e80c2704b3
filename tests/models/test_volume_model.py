"""The volumetric example model's folder: what its card says, a model the gateway's own
parameter parser accepts, and an ONNX graph with the tensors its config declares."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from gateway.pipelines.params import VolumeParams, parse
from gateway.pipelines.tasks import TASKS
from training.cards import render_config
from training.volume_cards import VOLUME_CARDS, render_volume_readme

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
NAMES = sorted(VOLUME_CARDS)


@pytest.mark.parametrize("name", NAMES)
def test_the_folder_is_what_the_card_says(name: str) -> None:
    folder, card = REPOSITORY / name, VOLUME_CARDS[name]
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == ["1/model.onnx", "README.md", "config.pbtxt", "metrics.json"]
    assert (folder / "1" / "model.onnx").stat().st_size < 2 * 1024 * 1024
    record = json.loads((folder / "metrics.json").read_text())
    assert (folder / "config.pbtxt").read_text() == render_config(card)
    assert (folder / "README.md").read_text() == render_volume_readme(card, record)


@pytest.mark.parametrize("name", NAMES)
def test_the_gateway_reads_its_parameters_and_its_graph_has_their_tensors(name: str) -> None:
    card = VOLUME_CARDS[name]
    params = parse(name, card.parameters(), TASKS[card.task].spec)
    assert isinstance(params, VolumeParams)
    assert params.window.roi == card.roi and params.input.spacing == card.spacing
    assert (params.window.batch or card.max_batch_size) <= card.max_batch_size
    graph = onnx.load(str(REPOSITORY / name / "1" / "model.onnx")).graph

    def dims(value: onnx.ValueInfoProto) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    (image,), (logits,) = graph.input, graph.output
    assert (image.name, dims(image)[1:]) == ("image", [1, *card.roi])
    assert (logits.name, dims(logits)[1:]) == ("logits", [card.channels, *card.roi])
    assert isinstance(dims(image)[0], str), "a dynamic batch axis"


@pytest.mark.parametrize("name", NAMES)
def test_the_held_out_figures_are_worth_showing(name: str) -> None:
    held_out = json.loads((REPOSITORY / name / "metrics.json").read_text())["held_out"]
    assert held_out["dice_lung"] >= 0.9
    assert held_out["dice_nodule"] >= 0.5
