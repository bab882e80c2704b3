"""Training, export and held-out evaluation of the tabular and hybrid example models.

Small dense networks (and, for the hybrid model, a small convolutional image branch) on the
tables of :mod:`training.tables`. Each network standardises its inputs itself, with the
training rows' means and spreads stored in the graph, so the gateway sends the raw cells.
Evaluation runs the exported ONNX file with ONNX Runtime, as Triton does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.datasets import LESION, SliceSet, make_slice_set, model_input
from training.fit import _cells_near_lesions, onnx_file
from training.metrics import roc_auc
from training.nets import LesionClassifierNet
from training.table_cards import TableCard
from training.tables import (
    BREAST_CANCER,
    DIABETES,
    Table,
    bundled_table,
    clinical_table,
    housing_table,
    hybrid_labels,
    split,
    wine_table,
)

log = logging.getLogger("training")

BATCH = 128
SMALL_BATCH = 32
IMAGE_BATCH = 32
TRAIN_ROWS = 12_000
HELD_OUT_ROWS = 3_000
HYBRID_TRAIN = 1_600
HYBRID_HELD_OUT = 400
CELL = 8
"""The image branch's grid stride, in pixels."""


@dataclass(frozen=True)
class Result:
    onnx_bytes: bytes
    training: dict[str, Any]
    evaluation: dict[str, Any]


class Standardise(nn.Module):
    def __init__(self, values: npt.NDArray[np.float32]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(values.mean(axis=0)))
        self.register_buffer("scale", torch.from_numpy(1.0 / (values.std(axis=0) + 1e-6)))

    mean: Tensor
    scale: Tensor

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) * self.scale


class TableNet(nn.Module):
    """``features`` ``[B, 1, C]`` -> softmax probabilities, a sigmoid, or values
    (un-standardised). ``hidden``: the widths of the hidden layers (small for small tables)."""

    def __init__(
        self,
        values: npt.NDArray[np.float32],
        outputs: int,
        kind: str,
        target: tuple[float, float] = (0.0, 1.0),
        hidden: tuple[int, ...] = (64, 64),
    ) -> None:
        super().__init__()
        self.standardise = Standardise(values)
        layers: list[nn.Module] = []
        width = values.shape[1]
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.body = nn.Sequential(*layers, nn.Linear(width, outputs))
        self.kind = kind
        self.target_mean, self.target_sd = target

    def logits(self, features: Tensor) -> Tensor:
        out: Tensor = self.body(self.standardise(features.flatten(1)))
        return out

    def forward(self, features: Tensor) -> Tensor:
        out = self.logits(features)
        if self.kind == "classification":
            return torch.softmax(out, dim=1)
        if self.kind == "binary":
            return torch.sigmoid(out)
        return out * self.target_sd + self.target_mean


class HybridNet(nn.Module):
    """``image`` ``[B, 1, S, S]`` and ``features`` ``[B, 1, C]`` -> softmax over two classes.

    The image branch is the lesion classifier's network (per-cell nodule logits on a stride-8
    grid, trained on the phantoms' nodule masks as that model is); its image-level logit joins
    the standardised row in a small dense head.
    """

    def __init__(self, values: npt.NDArray[np.float32]) -> None:
        super().__init__()
        self.image = LesionClassifierNet(categories=1)
        self.standardise = Standardise(values)
        self.table = nn.Sequential(nn.Linear(values.shape[1], 32), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(32 + 1, 32), nn.ReLU(), nn.Linear(32, 2))

    def parts(self, image: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        """The class logits and the image branch's per-cell nodule logits."""
        cells = self.image.maps(image)
        seen = torch.amax(cells, dim=(2, 3))
        row = self.table(self.standardise(features.flatten(1)))
        return self.head(torch.cat([row, seen], dim=1)), cells

    def forward(self, image: Tensor, features: Tensor) -> Tensor:
        return torch.softmax(self.parts(image, features)[0], dim=1)


def _optimise(net: nn.Module, steps: int, lr: float, loss: Callable[[], Tensor]) -> float:
    net.train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    start = time.perf_counter()
    for step in range(steps):
        optimiser.zero_grad()
        value = loss()
        value.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        schedule.step()
        if step % 500 == 0:
            log.info("step %d loss %.4f", step, float(value.detach()))
    net.eval()
    return time.perf_counter() - start


def _export(net: nn.Module, card: TableCard, examples: tuple[Tensor, ...]) -> bytes:
    inputs = [spec.name for spec in card.inputs]
    outputs = [spec.name for spec in card.outputs]
    return onnx_file(net, examples, inputs, outputs, f"{card.name}: {card.summary}")


def _session(onnx_bytes: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])


def _facts(
    net: nn.Module, onnx_bytes: bytes, steps: int, seconds: float, seed: int, batch: int
) -> dict[str, Any]:
    return {
        "parameters": sum(p.numel() for p in net.parameters()),
        "onnx_bytes": len(onnx_bytes),
        "steps": steps,
        "batch": batch,
        "seconds": round(seconds, 1),
        "seed": seed,
        "torch": torch.__version__,
    }


def _rows(table: Table) -> npt.NDArray[np.float32]:
    return table.values[:, None, :]


@dataclass(frozen=True)
class Fit:
    """How one table model is optimised: steps, learning rate, rows per step, seed."""

    steps: int
    lr: float
    batch: int
    seed: int


@dataclass(frozen=True)
class Fitted:
    onnx_bytes: bytes
    training: dict[str, Any]
    held_out: npt.NDArray[np.float32]
    """The exported model's output on the held-out rows."""

    def result(self, evaluation: dict[str, Any]) -> Result:
        return Result(self.onnx_bytes, self.training, evaluation)


Criterion = Callable[[Tensor, Tensor], Tensor]


def _first(criterion: Criterion) -> Criterion:
    """``criterion`` on a one-output network's only column."""
    return lambda logits, target: criterion(logits[:, 0], target)


def _fit_rows(
    net: TableNet,
    card: TableCard,
    train: Table,
    held: Table,
    criterion: Criterion,
    y: Tensor,
    fit: Fit,
) -> Fitted:
    """Train on random batches of ``train``'s rows, export, and run the ONNX file on ``held``."""
    x = torch.from_numpy(_rows(train))
    generator = torch.Generator().manual_seed(fit.seed)

    def loss() -> Tensor:
        pick = torch.randint(0, len(x), (fit.batch,), generator=generator)
        return criterion(net.logits(x[pick]), y[pick])

    seconds = _optimise(net, fit.steps, fit.lr, loss)
    onnx_bytes = _export(net, card, (x[:2],))
    outputs = _session(onnx_bytes).run(None, {"features": _rows(held)})[0]
    facts = _facts(net, onnx_bytes, fit.steps, seconds, fit.seed, fit.batch)
    return Fitted(onnx_bytes, facts, outputs)


def train_classifier(card: TableCard, steps: int, seed: int) -> Result:
    torch.manual_seed(seed)
    train, held = wine_table(seed, TRAIN_ROWS), wine_table(seed + 1000, HELD_OUT_ROWS)
    net = TableNet(train.values, len(card.categories), "classification")
    y = torch.from_numpy(train.target.astype(np.int64))
    fitted = _fit_rows(net, card, train, held, F.cross_entropy, y, Fit(steps, 3e-3, BATCH, seed))
    predicted = fitted.held_out.argmax(axis=1)
    truth = held.target.astype(np.int64)
    majority = np.bincount(train.target.astype(np.int64)).argmax()
    evaluation = {
        "model": _class_metrics(predicted, truth, len(card.categories)),
        "baseline": _class_metrics(np.full_like(truth, majority), truth, len(card.categories)),
    }
    return fitted.result(evaluation)


def _class_metrics(
    predicted: npt.NDArray[np.int64], truth: npt.NDArray[np.int64], classes: int
) -> dict[str, float]:
    recalls = [
        float((predicted[truth == c] == c).mean()) for c in range(classes) if (truth == c).any()
    ]
    return {
        "accuracy": float((predicted == truth).mean()),
        "within_one": float((np.abs(predicted - truth) <= 1).mean()),
        "macro_recall": float(np.mean(recalls)),
    }


def train_binary(card: TableCard, steps: int, seed: int) -> Result:
    """A binary classifier on a bundled data set: one sigmoid output."""
    torch.manual_seed(seed)
    train, held = split(bundled_table(BREAST_CANCER), seed, 0.25)
    net = TableNet(train.values, 1, "binary")
    y = torch.from_numpy(train.target.astype(np.float32))
    fitted = _fit_rows(
        net,
        card,
        train,
        held,
        _first(F.binary_cross_entropy_with_logits),
        y,
        Fit(steps, 1e-3, BATCH, seed),
    )
    scores = fitted.held_out[:, 0]
    truth = held.target.astype(np.int64)
    majority = float(np.round(train.target.mean()))
    evaluation = {
        "model": _diagnosis_metrics(scores, truth),
        "baseline": _diagnosis_metrics(np.full(len(truth), majority), truth),
    }
    return fitted.result(evaluation)


def _diagnosis_metrics(scores: npt.NDArray[Any], truth: npt.NDArray[np.int64]) -> dict[str, float]:
    positive = scores >= 0.5
    return {
        **_binary_metrics(scores, truth),
        "sensitivity": float(positive[truth == 1].mean()),
        "specificity": float((~positive[truth == 0]).mean()),
    }


def train_regressor(card: TableCard, steps: int, seed: int) -> Result:
    """The housing regressor, or the diabetes one: 442 patients would be memorised by the
    housing network (held-out R squared below 0), so it gets one hidden layer of 8 and
    smaller batches."""
    small = card.name == "diabetes_progression_regressor"
    if small:
        train, held = split(bundled_table(DIABETES), seed, 0.25)
    else:
        train, held = housing_table(seed, TRAIN_ROWS), housing_table(seed + 1000, HELD_OUT_ROWS)
    torch.manual_seed(seed)
    target = (float(train.target.mean()), float(train.target.std()))
    batch = SMALL_BATCH if small else BATCH
    net = TableNet(train.values, 1, "regression", target, hidden=(8,) if small else (64, 64))
    y = torch.from_numpy(((train.target - target[0]) / target[1]).astype(np.float32))
    fitted = _fit_rows(net, card, train, held, _first(F.mse_loss), y, Fit(steps, 3e-3, batch, seed))
    predicted = fitted.held_out[:, 0]
    evaluation = {
        "model": _regression_metrics(predicted, held.target),
        "baseline": _regression_metrics(np.full(len(held.target), target[0]), held.target),
    }
    return fitted.result(evaluation)


def _regression_metrics(predicted: npt.NDArray[Any], truth: npt.NDArray[Any]) -> dict[str, float]:
    error = predicted.astype(np.float64) - truth
    return {
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "r2": float(1 - (error**2).sum() / ((truth - truth.mean()) ** 2).sum()),
    }


def _hybrid_set(seed: int, count: int, size: int) -> tuple[SliceSet, Table, npt.NDArray[np.int64]]:
    """Phantom slices, a check-up row for each, and the labels they make together."""
    slices = make_slice_set(seed, count, size)
    lesion: npt.NDArray[np.bool_] = np.asarray(
        (slices.labels & LESION).reshape(count, -1).any(axis=1)
    )
    table = clinical_table(seed + 7, count)
    return slices, table, hybrid_labels(seed + 13, table.target, lesion)


def train_hybrid(card: TableCard, steps: int, seed: int) -> Result:
    assert card.image_size is not None
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    slices, table, labels = _hybrid_set(seed, HYBRID_TRAIN, card.image_size)
    held, held_table, held_labels = _hybrid_set(seed + 1000, HYBRID_HELD_OUT, card.image_size)
    hu, held_hu = slices.hu, held.hu
    net = HybridNet(table.values)
    rows = torch.from_numpy(_rows(table))
    y = torch.from_numpy(labels)
    grid = card.image_size // CELL
    cells = np.stack(
        [_cells_near_lesions(slices.lesions_of(i), grid, CELL) for i in range(len(hu))]
    )
    targets = torch.from_numpy(cells[:, None].astype(np.float32))
    weight = torch.full((1, 1, 1), 4.0)

    def loss() -> Tensor:
        pick = rng.integers(0, len(hu), IMAGE_BATCH)
        image = torch.from_numpy(model_input(hu[pick], rng))
        index = torch.from_numpy(pick)
        logits, maps = net.parts(image, rows[index])
        target = targets[index]
        dense = F.binary_cross_entropy_with_logits(maps, target, pos_weight=weight)
        pooled = F.binary_cross_entropy_with_logits(maps.amax(dim=(2, 3)), target.amax(dim=(2, 3)))
        return F.cross_entropy(logits, y[index]) + dense + pooled

    seconds = _optimise(net, steps, 2e-3, loss)
    example = (torch.from_numpy(model_input(hu[:2])), rows[:2])
    onnx_bytes = _export(net, card, example)
    session = _session(onnx_bytes)
    probabilities = np.concatenate(
        [
            session.run(
                None,
                {
                    "image": model_input(held_hu[i : i + 32]),
                    "features": _rows(held_table)[i : i + 32],
                },
            )[0]
            for i in range(0, len(held_hu), 32)
        ]
    )
    baseline = _table_only_scores(table, labels, held_table)
    evaluation = {
        "model": _binary_metrics(probabilities[:, 1], held_labels),
        "baseline": _binary_metrics(baseline, held_labels),
    }
    return Result(
        onnx_bytes, _facts(net, onnx_bytes, steps, seconds, seed, IMAGE_BATCH), evaluation
    )


def _table_only_scores(
    train: Table, labels: npt.NDArray[np.int64], held: Table
) -> npt.NDArray[np.float64]:
    """A logistic regression on the standardised table (Newton's method, lightly ridged)."""
    mean, sd = train.values.mean(axis=0), train.values.std(axis=0) + 1e-6
    x = np.hstack([np.ones((len(train.values), 1)), (train.values - mean) / sd]).astype(np.float64)
    w = np.zeros(x.shape[1])
    for _ in range(25):
        p = 1 / (1 + np.exp(-x @ w))
        hessian = x.T @ (x * (p * (1 - p))[:, None]) + 1e-3 * np.eye(len(w))
        w -= np.linalg.solve(hessian, x.T @ (p - labels) + 1e-3 * w)
    held_x = np.hstack([np.ones((len(held.values), 1)), (held.values - mean) / sd])
    scores: npt.NDArray[np.float64] = 1 / (1 + np.exp(-held_x @ w))
    return scores


def _binary_metrics(scores: npt.NDArray[Any], truth: npt.NDArray[np.int64]) -> dict[str, float]:
    return {
        "accuracy": float(((scores >= 0.5) == truth).mean()),
        "auc": float(roc_auc(truth, scores)),
    }


TRAINERS: dict[str, Callable[[TableCard, int, int], Result]] = {
    "wine_quality_classifier": train_classifier,
    "house_value_regressor": train_regressor,
    "lesion_risk_hybrid": train_hybrid,
    "breast_cancer_classifier": train_binary,
    "diabetes_progression_regressor": train_regressor,
}
DESCRIPTIONS = {
    "wine_quality_classifier": f"{HELD_OUT_ROWS:,} wines generated with another seed.",
    "house_value_regressor": f"{HELD_OUT_ROWS:,} blocks generated with another seed.",
    "lesion_risk_hybrid": (
        f"{HYBRID_HELD_OUT} patients generated with other seeds (phantom slices through the "
        "lung window, as the gateway feeds a CT)."
    ),
    "breast_cancer_classifier": "The held-out quarter of the table: 142 aspirates.",
    "diabetes_progression_regressor": "The held-out quarter of the table: 110 patients.",
}
