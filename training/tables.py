"""The example table models' data: synthetic tables with the columns of FLaVor's example
requests, made here from a seed, and two clinical data sets that scikit-learn ships.

FLaVor's tabular examples use the red-wine quality table (11 physico-chemical columns, quality
grades 3 to 8), the California housing table (8 census-block columns, value in units of
$100,000) and a 22-column clinical table for its hybrid example. None of them ships with a
package that works offline (scikit-learn's ``fetch_california_housing`` downloads, and its
bundled sets have other columns), so the example models train on tables generated here: each
column drawn near the published marginal statistics of the original table, with the
correlations that matter (density with acidity and alcohol, bedrooms with rooms, BMI from
height and weight, eGFR from creatinine and age), and the target from a stated formula plus
noise. The formulas follow what is known of the real data (quality rises with alcohol and
sulphates and falls with volatile acidity; value rises with income and near the coast) so that
a model has something real to learn, but they are models of the data, not the data: the
example models are for showing the service, not for wine, houses or patients.

Two example models learn from real data instead: the Wisconsin diagnostic breast cancer table
(569 fine-needle aspirates, 30 nucleus measurements) and the diabetes table (442 patients, 10
baseline variables, a progression score a year later), both bundled with scikit-learn and read
without a download (:func:`bundled_table`).

numpy only at import (scikit-learn is imported by :func:`bundled_table`, in the training
environment): the tests import this module to check the committed models' held-out figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

WINE_COLUMNS = (
    "fixed acidity",
    "volatile acidity",
    "citric acid",
    "residual sugar",
    "chlorides",
    "free sulfur dioxide",
    "total sulfur dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
)
WINE_GRADES = (3, 4, 5, 6, 7, 8)
_WINE_SHARES = (0.006, 0.033, 0.426, 0.399, 0.124, 0.012)
"""The grades' shares in the red-wine table (1,599 wines)."""

HOUSING_COLUMNS = (
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
)
_COAST = ((37.77, -122.42), (34.05, -118.25), (32.72, -117.16))
"""San Francisco, Los Angeles, San Diego: where blocks cluster and values are highest."""

CLINICAL_COLUMNS = (
    "AGE",
    "GENDER",
    "BH",
    "BW",
    "BMI",
    "SMOKE",
    "HBsAg",
    "Anti_HCV",
    "SBP",
    "DBP",
    "HbA1c",
    "GLU_AC",
    "CREAT",
    "eGFR_MDRD",
    "eGFR_EPI",
    "GPT",
    "T_CHO",
    "HDL",
    "LDL",
    "TG",
    "UACR",
    "UACR_STAGE",
)
CLINICAL_INTEGERS = frozenset({"GENDER", "SMOKE", "HBsAg", "Anti_HCV", "UACR_STAGE"})


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    values: FloatArray
    """``(rows, columns)``."""
    target: npt.NDArray[np.float64]
    """Class index (classification) or value (regression) per row."""


def _positive(rng: np.random.Generator, mean: float, sd: float, n: int) -> npt.NDArray[np.float64]:
    """A log-normal column with this mean and standard deviation (skewed, never negative)."""
    sigma2 = np.log1p((sd / mean) ** 2)
    drawn: npt.NDArray[np.float64] = rng.lognormal(np.log(mean) - sigma2 / 2, np.sqrt(sigma2), n)
    return drawn


def _z(column: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    scaled: npt.NDArray[np.float64] = (column - column.mean()) / column.std()
    return scaled


def wine_table(seed: int, rows: int) -> Table:
    """Red wines; the target is the grade's index in :data:`WINE_GRADES`."""
    rng = np.random.default_rng(seed)
    fixed = _positive(rng, 8.32, 1.74, rows)
    volatile = _positive(rng, 0.53, 0.18, rows)
    citric = np.clip(0.27 + 0.07 * (fixed - 8.32) - 0.3 * (volatile - 0.53), 0, None)
    citric = np.clip(citric + rng.normal(0, 0.13, rows), 0, 1)
    sugar = _positive(rng, 2.54, 1.41, rows)
    chlorides = _positive(rng, 0.087, 0.047, rows)
    free = _positive(rng, 15.9, 10.5, rows)
    total = free + _positive(rng, 30.6, 25.0, rows)
    alcohol = np.clip(rng.normal(10.42, 1.07, rows), 8.4, 14.9)
    density = (
        0.9967 + 0.00067 * (fixed - 8.32) - 0.0007 * (alcohol - 10.42) + 0.0002 * (sugar - 2.54)
    )
    density = density + rng.normal(0, 0.0006, rows)
    ph = 3.31 - 0.06 * (fixed - 8.32) + rng.normal(0, 0.11, rows)
    sulphates = _positive(rng, 0.66, 0.17, rows)
    score = (
        1.0 * _z(alcohol)
        - 0.65 * _z(volatile)
        + 0.45 * _z(np.log(sulphates))
        - 0.25 * _z(total)
        + 0.15 * _z(citric)
        - 0.1 * _z(chlorides)
        + rng.normal(0, 0.55, rows)
    )
    edges = np.quantile(score, np.cumsum(_WINE_SHARES)[:-1])
    grade = np.searchsorted(edges, score)
    columns = (fixed, volatile, citric, sugar, chlorides, free, total, density, ph, sulphates)
    values = np.stack([*columns, alcohol], axis=1).astype(np.float32)
    return Table(WINE_COLUMNS, values, grade.astype(np.float64))


def housing_table(seed: int, rows: int) -> Table:
    """Census blocks; the target is the median house value in units of $100,000."""
    rng = np.random.default_rng(seed)
    income = np.clip(_positive(rng, 3.87, 1.9, rows), 0.5, 15.0)
    age = np.clip(np.rint(rng.normal(28.6, 12.6, rows)), 1, 52)
    rooms = np.clip(3.6 + 0.45 * income + rng.normal(0, 0.9, rows), 1.0, 20.0)
    bedrooms = np.clip(rooms * rng.normal(0.2, 0.03, rows), 0.5, 5.0)
    population = np.clip(_positive(rng, 1425.0, 1100.0, rows), 3, 35000)
    occupancy = np.clip(_positive(rng, 2.95, 0.8, rows), 0.7, 12.0)
    city = rng.integers(0, len(_COAST), rows)
    inland = rng.random(rows) < 0.45
    centre = np.asarray(_COAST)[city]
    spread = np.where(inland, 1.6, 0.35)
    latitude = centre[:, 0] + rng.normal(0, 1, rows) * spread
    longitude = centre[:, 1] + np.abs(rng.normal(0, 1, rows)) * spread
    distance = np.hypot(latitude - centre[:, 0], longitude - centre[:, 1])
    value = (
        0.42 * income
        + 1.6 * np.exp(-distance / 0.5)
        + 0.006 * age
        - 0.12 * (occupancy - 2.95)
        + rng.normal(0, 0.3, rows)
    )
    value = np.clip(value, 0.15, 5.0)
    columns = (income, age, rooms, bedrooms, population, occupancy, latitude, longitude)
    return Table(HOUSING_COLUMNS, np.stack(columns, axis=1).astype(np.float32), value)


def clinical_table(seed: int, rows: int) -> Table:
    """Adult check-ups; the target is a 0..1 metabolic risk score (before the image adds to
    it): :func:`hybrid_labels` turns it and the image's finding into the hybrid label."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(55, 13, rows), 20, 95)
    female = rng.random(rows) < 0.5
    height = np.where(female, rng.normal(157, 6, rows), rng.normal(170, 7, rows))
    bmi_drawn = np.clip(rng.normal(24.5, 3.8, rows), 15, 45)
    weight = bmi_drawn * (height / 100) ** 2
    bmi = weight / (height / 100) ** 2
    smoke = (rng.random(rows) < np.where(female, 0.05, 0.3)).astype(np.float64)
    hbsag = (rng.random(rows) < 0.13).astype(np.float64)
    hcv = (rng.random(rows) < 0.04).astype(np.float64)
    sbp = np.clip(rng.normal(118, 12, rows) + 0.45 * (age - 55) + 0.9 * (bmi - 24.5), 85, 210)
    dbp = np.clip(0.55 * sbp + rng.normal(12, 7, rows), 50, 130)
    hba1c = np.clip(_positive(rng, 5.9, 0.9, rows) + 0.04 * (bmi - 24.5), 4.2, 14)
    glucose = np.clip(28.7 * hba1c - 46.7 + rng.normal(0, 12, rows), 60, 400)
    creatinine = np.clip(_positive(rng, 0.85, 0.22, rows) * np.where(female, 0.85, 1.12), 0.3, 8)
    mdrd = 175 * creatinine**-1.154 * age**-0.203 * np.where(female, 0.742, 1.0)
    kappa = np.where(female, 0.7, 0.9)
    alpha = np.where(female, -0.241, -0.302)
    ratio = creatinine / kappa
    epi = (
        142
        * np.minimum(ratio, 1) ** alpha
        * np.maximum(ratio, 1) ** -1.2
        * 0.9938**age
        * np.where(female, 1.012, 1.0)
    )
    gpt = np.clip(_positive(rng, 24, 14, rows) + 12 * hbsag, 4, 300)
    cholesterol = np.clip(rng.normal(190, 35, rows), 90, 380)
    hdl = np.clip(rng.normal(np.where(female, 58, 47), 12, rows) - 0.4 * (bmi - 24.5), 20, 110)
    triglycerides = np.clip(_positive(rng, 125, 80, rows) + 4 * (bmi - 24.5), 30, 1200)
    ldl = np.clip(cholesterol - hdl - triglycerides / 5, 30, 260)
    uacr = np.clip(
        _positive(rng, 12, 25, rows) * np.exp(0.35 * (hba1c - 5.9)) * np.exp((sbp - 125) / 60),
        1,
        3000,
    )
    stage = np.where(uacr < 30, 1, np.where(uacr <= 300, 2, 3)).astype(np.float64)
    risk_logit = (
        0.9 * _z(hba1c)
        + 0.6 * _z(sbp)
        + 0.5 * _z(age)
        - 0.45 * _z(epi)
        + 0.5 * smoke
        + 0.3 * _z(np.log(uacr))
    )
    columns = (
        age,
        (~female).astype(np.float64),
        height,
        weight,
        bmi,
        smoke,
        hbsag,
        hcv,
        np.rint(sbp),
        np.rint(dbp),
        hba1c,
        np.rint(glucose),
        creatinine,
        mdrd,
        epi,
        np.rint(gpt),
        np.rint(cholesterol),
        hdl,
        ldl,
        np.rint(triglycerides),
        uacr,
        stage,
    )
    values = np.stack(columns, axis=1).astype(np.float32)
    return Table(CLINICAL_COLUMNS, values, risk_logit)


BREAST_CANCER = "breast_cancer"
DIABETES = "diabetes"
BREAST_CANCER_COLUMNS = tuple(
    pattern.format(measure)
    for pattern in ("mean {}", "{} error", "worst {}")
    for measure in (
        "radius",
        "texture",
        "perimeter",
        "area",
        "smoothness",
        "compactness",
        "concavity",
        "concave points",
        "symmetry",
        "fractal dimension",
    )
)
"""scikit-learn's names: ``mean radius`` ... then ``radius error`` ... then ``worst radius``."""
DIABETES_COLUMNS = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")


def bundled_table(name: str) -> Table:
    """A data set scikit-learn ships: ``breast_cancer`` (target 1 = malignant) or ``diabetes``
    (raw units: age in years, sex 1/2, BMI, mean blood pressure, six serum measurements)."""
    from sklearn import datasets

    if name == BREAST_CANCER:
        bunch = datasets.load_breast_cancer()
        target = (bunch.target == list(bunch.target_names).index("malignant")).astype(np.float64)
    elif name == DIABETES:
        bunch = datasets.load_diabetes(scaled=False)
        target = bunch.target.astype(np.float64)
    else:
        raise ValueError(f"no bundled table {name!r}")
    columns = tuple(str(column) for column in bunch.feature_names)
    if columns != {BREAST_CANCER: BREAST_CANCER_COLUMNS, DIABETES: DIABETES_COLUMNS}[name]:
        raise ValueError(f"scikit-learn's {name} table has other columns now: {columns}")
    return Table(columns, np.asarray(bunch.data, dtype=np.float32), target)


def split(table: Table, seed: int, held_out: float) -> tuple[Table, Table]:
    """A seeded random split into training and held-out rows."""
    order = np.random.default_rng(seed).permutation(len(table.target))
    cut = round(len(order) * (1 - held_out))
    train, held = order[:cut], order[cut:]
    return (
        Table(table.columns, table.values[train], table.target[train]),
        Table(table.columns, table.values[held], table.target[held]),
    )


def hybrid_labels(
    seed: int, risk_logit: npt.NDArray[np.float64], lesion: npt.NDArray[np.bool_]
) -> npt.NDArray[np.int64]:
    """Label 1 (refer) when the metabolic risk and a nodule on the image together pass a
    threshold: either alone is rarely enough, so neither the table nor the image suffices."""
    rng = np.random.default_rng(seed)
    logit = risk_logit + 2.2 * lesion.astype(np.float64) - 1.4 + rng.logistic(0, 0.35, len(lesion))
    return (logit > 0).astype(np.int64)
