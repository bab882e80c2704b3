"""``python -m training [NAME ...]``: train, export, evaluate and document the example models.

Writes ``model_repository/<name>/`` for each model: ``1/model.onnx``, ``config.pbtxt``,
``metrics.json`` (held-out results, read by the tests) and ``README.md``. Needs the training
environment (``make models`` creates it); ``--evaluate-only`` needs no torch and re-measures
the committed ONNX files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from training import volume_eval
from training.cards import CARDS, ModelCard, render_config, render_readme
from training.datasets import SliceSet, make_slice_set, make_volume_slice_set
from training.evaluate import EVALUATORS, open_session
from training.table_cards import TABLE_CARDS, render_table_config, render_table_readme
from training.volume_cards import VOLUME_CARDS, render_volume_readme

log = logging.getLogger("training")

REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"

_STEPS = {
    "lesion_classifier": 2000,
    "lesion_size_regressor": 1500,
    "lesion_detector": 2000,
    "lung_segmenter": 800,
    "lesion_segmenter_3d": 1500,
}
_SEEDS = {
    "lesion_classifier": 11,
    "lesion_size_regressor": 12,
    "lesion_detector": 13,
    "lung_segmenter": 14,
    "lesion_segmenter_3d": 15,
}
_DATA_SEEDS = {256: 1, 128: 2, 0: 3}
"""Seeds of the training sets: slices by size, and 0 for the volumes."""
_DETECTOR_TOP_K = 16
_PATCH = 128


class _Data:
    """Training sets, made on first use and shared between models."""

    def __init__(self) -> None:
        self._sets: dict[str, SliceSet] = {}

    def _get(self, key: str, make: Callable[[], SliceSet]) -> SliceSet:
        if key not in self._sets:
            start = time.perf_counter()
            self._sets[key] = make()
            log.info("made %s in %.0f s", key, time.perf_counter() - start)
        return self._sets[key]

    def slices(self, size: int) -> SliceSet:
        return self._get(f"slices at {size}", lambda: make_slice_set(_DATA_SEEDS[size], 2000, size))

    def volume_slices(self) -> SliceSet:
        return self._get(
            "volume slices", lambda: make_volume_slice_set(_DATA_SEEDS[0], 48, 32, 256)[0]
        )


def _train(name: str, data: _Data, scale: float) -> tuple[bytes, dict[str, Any]]:
    # Imported here so that --evaluate-only runs without torch.
    import torch

    from training import fit

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    card = CARDS[name]
    steps = max(1, round(_STEPS[name] * scale))
    seed = _SEEDS[name]
    if name == "lesion_classifier":
        trained = fit.train_lesion_classifier(data.slices(card.size), steps, seed)
    elif name == "lesion_size_regressor":
        trained = fit.train_lesion_size_regressor(data.slices(card.size), steps, seed)
    elif name == "lesion_detector":
        trained = fit.train_lesion_detector(data.slices(card.size), steps, seed, _DETECTOR_TOP_K)
    elif name == "lung_segmenter":
        trained = fit.train_lung_segmenter(data.slices(card.size), steps, seed)
    else:
        trained = fit.train_lesion_segmenter_3d(data.volume_slices(), steps, seed, _PATCH)
    onnx_bytes = fit.export_onnx(trained.net, card)
    facts = {
        "parameters": sum(p.numel() for p in trained.net.parameters()),
        "onnx_bytes": len(onnx_bytes),
        "steps": trained.steps,
        "batch": fit.BATCH,
        "seconds": round(trained.seconds, 1),
        "seed": seed,
        "torch": torch.__version__,
    }
    return onnx_bytes, facts


def _write(card: ModelCard, onnx_bytes: bytes | None, training: dict[str, Any]) -> dict[str, Any]:
    folder = REPOSITORY / card.name
    model_path = folder / "1" / "model.onnx"
    if onnx_bytes is not None:
        model_path.parent.mkdir(parents=True, exist_ok=True)
        model_path.write_bytes(onnx_bytes)
    start = time.perf_counter()
    record: dict[str, Any] = {"model": card.name, "training": training}
    record.update(EVALUATORS[card.name](card, open_session(str(model_path))))
    log.info("evaluated %s in %.0f s", card.name, time.perf_counter() - start)
    (folder / "metrics.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    (folder / "config.pbtxt").write_text(render_config(card))
    (folder / "README.md").write_text(render_readme(card, record))
    return record


def _table_model(name: str, evaluate_only: bool, scale: float) -> dict[str, Any]:
    """Train (or, with ``evaluate_only``, re-render from metrics.json) one table model."""
    card = TABLE_CARDS[name]
    folder = REPOSITORY / name
    record: dict[str, Any]
    if evaluate_only:
        record = json.loads((folder / "metrics.json").read_text())
    else:
        import torch

        from training import table_fit

        torch.set_num_threads(min(2, os.cpu_count() or 1))
        steps = max(1, round(card.steps * scale))
        result = table_fit.TRAINERS[name](card, steps, card.seed)
        (folder / "1").mkdir(parents=True, exist_ok=True)
        (folder / "1" / "model.onnx").write_bytes(result.onnx_bytes)
        record = {
            "model": name,
            "training": result.training,
            "held_out": result.evaluation,
            "held_out_description": table_fit.DESCRIPTIONS[name],
        }
        (folder / "metrics.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    (folder / "config.pbtxt").write_text(render_table_config(card))
    (folder / "README.md").write_text(render_table_readme(card, record))
    return record


def _volume_model(name: str, evaluate_only: bool, scale: float) -> dict[str, Any]:
    """Train (or, with ``evaluate_only``, re-measure the committed file of) the volumetric
    model."""
    card = VOLUME_CARDS[name]
    folder = REPOSITORY / name
    model_path = folder / "1" / "model.onnx"
    if evaluate_only:
        training = json.loads((folder / "metrics.json").read_text())["training"]
    else:
        import torch

        from training import volume_fit

        torch.set_num_threads(min(2, os.cpu_count() or 1))
        steps = max(1, round(card.steps * scale))
        trained = volume_fit.train(card, volume_fit.make_volumes(card, card.seed), steps, card.seed)
        onnx_bytes = volume_fit.export(trained.net, card)
        model_path.parent.mkdir(parents=True, exist_ok=True)
        model_path.write_bytes(onnx_bytes)
        training = {
            "parameters": sum(p.numel() for p in trained.net.parameters()),
            "onnx_bytes": len(onnx_bytes),
            "steps": steps,
            "batch": volume_fit.BATCH,
            "crop": list(volume_fit.CROP),
            "seconds": round(trained.seconds, 1),
            "seed": card.seed,
            "torch": torch.__version__,
        }
    record: dict[str, Any] = {"model": name, "training": training}
    record.update(volume_eval.evaluate(card, open_session(str(model_path))))
    (folder / "metrics.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    (folder / "config.pbtxt").write_text(render_config(card))
    (folder / "README.md").write_text(render_volume_readme(card, record))
    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    names = [*CARDS, *TABLE_CARDS, *VOLUME_CARDS]
    parser.add_argument("models", nargs="*", metavar="NAME", help=f"any of {', '.join(names)}")
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="re-measure the committed ONNX files and rewrite config, metrics and README",
    )
    parser.add_argument(
        "--steps-scale",
        type=float,
        default=1.0,
        help="multiply every model's training steps (a quick trial run: 0.05)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models) - set(names))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    data = _Data()
    for name in args.models or names:
        if name in VOLUME_CARDS:
            log.info("training %s", name)
            volume_record = _volume_model(name, args.evaluate_only, args.steps_scale)
            log.info("%s: %s", name, json.dumps(volume_record["held_out"]))
            continue
        if name in TABLE_CARDS:
            log.info("training %s", name)
            table_record = _table_model(name, args.evaluate_only, args.steps_scale)
            log.info("%s: %s", name, json.dumps(table_record["held_out"]))
            continue
        card = CARDS[name]
        if args.evaluate_only:
            previous = json.loads((REPOSITORY / name / "metrics.json").read_text())
            record = _write(card, None, previous["training"])
        else:
            log.info("training %s", name)
            onnx_bytes, facts = _train(name, data, args.steps_scale)
            record = _write(card, onnx_bytes, facts)
        log.info("%s: %s", name, json.dumps(record["held_out"]["hu"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
