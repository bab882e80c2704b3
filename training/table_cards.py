"""The tabular and hybrid example models: what each means to the gateway, and its files.

As :mod:`training.cards` is for the image models, a :class:`TableCard` is the one source of its
folder's ``config.pbtxt`` and README; numpy-free and torch-free, so the tests compare the
committed files with the cards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from training.cards import MetricRow, TensorSpec, parameter_texts, readme_tail, render_config
from training.phantoms import LUNG_WINDOW
from training.tables import (
    BREAST_CANCER_COLUMNS,
    CLINICAL_COLUMNS,
    CLINICAL_INTEGERS,
    DIABETES_COLUMNS,
    HOUSING_COLUMNS,
    WINE_COLUMNS,
    WINE_GRADES,
)

__all__ = ["TABLE_CARDS", "TableCard", "render_table_config", "render_table_readme"]


@dataclass(frozen=True)
class TableCard:
    name: str
    task: str
    summary: str
    data: str
    """Where the training table comes from, for the README."""
    columns: tuple[tuple[str, str], ...]
    """``(name, dtype)`` in the order of the ``features`` tensor."""
    outputs: tuple[TensorSpec, ...]
    output: Mapping[str, Any]
    description: str
    metrics: tuple[MetricRow, ...]
    baseline: str
    """What the baseline column of the README's table is."""
    categories: tuple[Mapping[str, Any], ...] = ()
    regressions: tuple[Mapping[str, Any], ...] = ()
    window_size: int = 1
    image_size: int | None = None
    """Hybrid models: the image side, as ``aicoco.input.size``."""
    max_batch_size: int = 4096
    queue_delay_us: int = 0
    seed: int = 0
    """Of the training (and of the split, for the real data sets)."""
    steps: int = 3000
    card_file: ClassVar[str] = "training/table_cards.py"

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        features = TensorSpec("features", "TYPE_FP32", (self.window_size, len(self.columns)))
        if self.image_size is None:
            return (features,)
        return (TensorSpec("image", "TYPE_FP32", (1, self.image_size, self.image_size)), features)

    def parameters(self) -> dict[str, str]:
        values: dict[str, Any] = {"aicoco.task": self.task}
        if self.categories:
            values["aicoco.categories"] = [dict(c) for c in self.categories]
        if self.regressions:
            values["aicoco.regressions"] = [dict(r) for r in self.regressions]
        values["aicoco.table"] = {
            "columns": [{"name": name, "dtype": dtype} for name, dtype in self.columns],
            "window_size": self.window_size,
        }
        if self.image_size is not None:
            values["aicoco.input"] = {
                "size": [self.image_size, self.image_size],
                "window": list(LUNG_WINDOW),
                "scale": "dtype",
                "dims": 2,
            }
        values["aicoco.output"] = dict(self.output)
        return parameter_texts(values)


def render_table_config(card: TableCard) -> str:
    return render_config(card)


def _columns_table(card: TableCard) -> str:
    rows = [f"| {i} | `{name}` | {dtype} |" for i, (name, dtype) in enumerate(card.columns)]
    return "| position | column | dtype |\n|---|---|---|\n" + "\n".join(rows)


def _outputs_table(card: TableCard) -> str:
    rows = []
    for channel, spec in enumerate(card.categories or card.regressions):
        extras = ", ".join(f"{k}: {v}" for k, v in spec.items() if k != "name") or "-"
        rows.append(f"| {channel} | `{spec['name']}` | {extras} |")
    return "| channel | name | declared with |\n|---|---|---|\n" + "\n".join(rows)


def _metric_table(card: TableCard, record: Mapping[str, Any]) -> str:
    held_out = record["held_out"]
    lines = ["| metric | model | baseline |", "|---|---|---|"]
    for row in card.metrics:
        values = [
            f"{held_out[source][row.key]:.{row.digits}f}" if row.key in held_out[source] else "-"
            for source in ("model", "baseline")
        ]
        lines.append(f"| {row.label} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def render_table_readme(card: TableCard, record: Mapping[str, Any]) -> str:
    training = record["training"]
    inputs = "\n".join(f"- `{t.name}` FP32 [{', '.join(map(str, t.dims))}]" for t in card.inputs)
    outputs = "\n".join(f"- `{t.name}` FP32 [{', '.join(map(str, t.dims))}]" for t in card.outputs)
    image = ""
    if card.image_size is not None:
        image = (
            f"\nThe image is resized to {card.image_size} x {card.image_size}; CT in Hounsfield "
            f"units goes through the lung window {LUNG_WINDOW[0]}/{LUNG_WINDOW[1]}, an 8-bit "
            "image is divided by 255, as for the image models.\n"
        )
    return f"""# {card.name}

{card.summary} Task: **{card.task}**. An example model trained on synthetic data: it shows how
a tabular{" and image" if card.image_size else ""} model is served through the gateway. It is
not a medical device, nor advice on {"patients" if card.image_size else "anything"}.

## Training data

{card.data}

## Input

{inputs}

(+ the batch dimension: up to {card.max_batch_size} records per call, dynamic batching). Each
record is {card.window_size} row(s) of the table, columns in this order (the gateway reorders a
table's columns by name, and refuses a table that lacks one or has another):

{_columns_table(card)}
{image}
## Output

{outputs}

{_outputs_table(card)}

{card.description}

## Accuracy on held-out rows

{record["held_out_description"]}

{_metric_table(card, record)}

Baseline: {card.baseline}

{readme_tail(card, training, "rows")}"""


_FLAVOR = "FLaVor's example request for this task (its `test_data/{}`) is answered by this model."

WINE_QUALITY_CLASSIFIER = TableCard(
    name="wine_quality_classifier",
    seed=21,
    steps=3000,
    task="tabular_classification",
    summary="Which quality grade, 3 to 8, does a red wine get from its lab analysis?",
    data=(
        "A synthetic red-wine table (`training/tables.py`, 12,000 rows): the 11 columns of the "
        "red-wine quality table that FLaVor's example uses, drawn near its published means and "
        "spreads, the grade from alcohol, volatile acidity, sulphates, sulphur dioxide, citric "
        "acid and chlorides plus noise, with the original grades' shares. "
        + _FLAVOR.format("tabular/cls")
    ),
    columns=tuple((name, "float") for name in WINE_COLUMNS),
    outputs=(TensorSpec("probabilities", "TYPE_FP32", (len(WINE_GRADES),)),),
    categories=tuple({"name": str(grade)} for grade in WINE_GRADES),
    output={"mode": "argmax"},
    description=(
        "`probabilities` are a softmax over the grades; `mode: argmax` gives each record "
        "exactly one category (multiclass), as FLaVor's one-hot output does. The network "
        "standardises the columns itself (the training means and spreads are in the graph), "
        "so the raw lab values go in."
    ),
    metrics=(
        MetricRow("accuracy", "accuracy"),
        MetricRow("within one grade", "within_one"),
        MetricRow("macro-averaged recall", "macro_recall"),
    ),
    baseline="always the most frequent grade of the training rows.",
)

HOUSE_VALUE_REGRESSOR = TableCard(
    name="house_value_regressor",
    seed=22,
    steps=3000,
    task="tabular_regression",
    summary="What is the median house value of a census block, in units of $100,000?",
    data=(
        "A synthetic housing table (`training/tables.py`, 12,000 rows): the 8 columns of the "
        "California housing table that FLaVor's example uses, around three coastal cities and "
        "inland, the value from income, distance to the city centre, house age and occupancy "
        "plus noise, clipped to 0.15 to 5 as in the original. " + _FLAVOR.format("tabular/reg")
    ),
    columns=tuple((name, "float") for name in HOUSING_COLUMNS),
    outputs=(TensorSpec("values", "TYPE_FP32", (1,)),),
    regressions=({"name": "reg_value", "unit": "100k USD"},),
    output={},
    description=(
        "`values` is the predicted value, in the regression's unit. The network standardises "
        "the columns itself, so the raw block figures go in."
    ),
    metrics=(
        MetricRow("mean absolute error (100k USD)", "mae"),
        MetricRow("root mean squared error (100k USD)", "rmse"),
        MetricRow("R squared", "r2"),
    ),
    baseline="the mean value of the training rows, for every block.",
)

LESION_RISK_HYBRID = TableCard(
    name="lesion_risk_hybrid",
    seed=23,
    steps=2500,
    task="hybrid_classification",
    summary=(
        "Should a patient be referred, from a chest CT slice (a nodule or not) and the "
        "patient's check-up results together?"
    ),
    data=(
        "Synthetic patients: a CT phantom slice each (`training/phantoms.py`, half with nodules)"
        " and a check-up row with the 22 columns of FLaVor's hybrid example "
        "(`training/tables.py`: age, sex, height, weight, BMI, smoking, hepatitis markers, "
        "blood pressure, HbA1c and fasting glucose, creatinine and two eGFR formulas, liver and "
        "lipid panels, urine albumin). The label is 1 when a metabolic risk score from the row "
        "and a nodule on the image together pass a threshold: neither alone is enough. "
        + _FLAVOR.format("hybrid")
    ),
    columns=tuple(
        (name, "int" if name in CLINICAL_INTEGERS else "float") for name in CLINICAL_COLUMNS
    ),
    outputs=(TensorSpec("probabilities", "TYPE_FP32", (2,)),),
    categories=({"name": "0"}, {"name": "1"}),
    output={"threshold": 0.5},
    image_size=128,
    max_batch_size=32,
    description=(
        "`probabilities` are a softmax over `0` (no referral) and `1` (refer); with "
        "`threshold` 0.5 each image gets exactly one. The image branch is the lesion "
        "classifier's network (nodule logits on a stride-8 grid, trained on the phantoms' "
        "nodule masks), the table branch a dense layer over the standardised row, and a dense "
        "head reads both."
    ),
    metrics=(
        MetricRow("accuracy", "accuracy"),
        MetricRow("ROC AUC", "auc"),
    ),
    baseline="a logistic regression on the table alone (the image left out), trained on the "
    "same rows.",
)

BREAST_CANCER_CLASSIFIER = TableCard(
    name="breast_cancer_classifier",
    seed=24,
    steps=600,
    task="tabular_classification",
    summary="Is a breast mass malignant, from 30 measurements of its cell nuclei?",
    data=(
        "Real data: the Wisconsin diagnostic breast cancer table that scikit-learn ships "
        "(`sklearn.datasets.load_breast_cancer`, no download): 569 fine-needle aspirates, 212 "
        "malignant, each with the mean, standard error and worst value of ten nucleus "
        "measurements from a digitised image. A seeded 75 / 25 split; the held-out quarter "
        "was never trained on."
    ),
    columns=tuple((name, "float") for name in BREAST_CANCER_COLUMNS),
    outputs=(TensorSpec("probabilities", "TYPE_FP32", (1,)),),
    categories=({"name": "malignant"},),
    output={"threshold": 0.5, "mode": "threshold"},
    description=(
        "`probabilities` is a sigmoid: the record is `malignant` when it reaches `threshold` "
        "(binary, one category), and has no category otherwise. The network standardises the "
        "measurements itself, so the raw values go in."
    ),
    metrics=(
        MetricRow("accuracy", "accuracy"),
        MetricRow("ROC AUC", "auc"),
        MetricRow("sensitivity (malignant found)", "sensitivity"),
        MetricRow("specificity (benign cleared)", "specificity"),
    ),
    baseline="always the most frequent class of the training rows (benign); its AUC is 0.5.",
)

DIABETES_PROGRESSION_REGRESSOR = TableCard(
    name="diabetes_progression_regressor",
    seed=25,
    steps=300,
    task="tabular_regression",
    summary="How far will a patient's diabetes progress in a year, from ten baseline values?",
    data=(
        "Real data: the diabetes table that scikit-learn ships (`sklearn.datasets."
        "load_diabetes(scaled=False)`, no download): 442 patients, age, sex, BMI, mean blood "
        "pressure and six blood serum measurements, and a quantitative measure of disease "
        "progression one year later (25 to 346). A seeded 75 / 25 split; the held-out quarter "
        "was never trained on."
    ),
    columns=tuple(
        (name, "int" if name in ("age", "sex") else "float") for name in DIABETES_COLUMNS
    ),
    outputs=(TensorSpec("values", "TYPE_FP32", (1,)),),
    regressions=({"name": "progression", "unit": "score"},),
    output={},
    description=(
        "`values` is the predicted progression score. The table is small and noisy: linear "
        "models explain a third to a half of its variance, depending on the split; this "
        "network (one hidden layer of 8) does no better, and the baseline shows what that is "
        "worth."
    ),
    metrics=(
        MetricRow("mean absolute error", "mae", 1),
        MetricRow("root mean squared error", "rmse", 1),
        MetricRow("R squared", "r2"),
    ),
    baseline="the mean progression of the training rows, for every patient.",
)

TABLE_CARDS = {
    card.name: card
    for card in (
        WINE_QUALITY_CLASSIFIER,
        HOUSE_VALUE_REGRESSOR,
        LESION_RISK_HYBRID,
        BREAST_CANCER_CLASSIFIER,
        DIABETES_PROGRESSION_REGRESSOR,
    )
}
