"""Which series of a study a model runs on: one rule set, for a PACS study and for an upload.

A study holds several series (a localizer, the thin and thick reconstructions, secondary
captures, earlier AI results). The model gets one; the rules, in order, pass a series over when:

1. its Modality is not an image modality (SEG, SR, PR, KO, RTSTRUCT... are results, not images);
2. it has no pixels (no Rows);
3. its ImageType says LOCALIZER (a scout), or DERIVED with SECONDARY (a screen capture, a MIP);
4. its instances have more than one orientation (a localizer set or a mixed series);
5. it has fewer slices than the model needs (two for a 3-D model).

Of the series left, the first by: axial orientation, then the most slices (the thinnest
reconstruction), then the lowest SeriesNumber. When none is left, the 422 ``no_suitable_series``
names every series and the rule that passed it over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from gateway.errors import NoSuitableSeries

NOT_IMAGES = frozenset(
    {"SEG", "SR", "PR", "KO", "DOC", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "REG", "FID"}
)
"""Modalities of results and documents (PS3.3 C.7.3.1.1.1), never a model's input."""
AXIAL_COSINE = 0.9
"""|z| of the slice normal above which a series counts as axial."""

Getter = Callable[[str], list[Any]]
"""An instance's values of a DICOM keyword ([] when absent)."""


@dataclass(frozen=True)
class Candidate:
    uid: str
    number: int | None
    description: str
    modality: str
    slices: int
    image_types: frozenset[str]
    orientations: int
    axial: bool
    has_pixels: bool

    @classmethod
    def of(cls, uid: str, instances: Sequence[Getter]) -> Candidate:
        def first(keyword: str, getter: Getter) -> Any:
            values = getter(keyword)
            return values[0] if values else None

        orientations = {
            tuple(np.round(np.asarray(values, float), 3))
            for values in (get("ImageOrientationPatient") for get in instances)
            if len(values) == 6
        }
        axial = all(abs(float(np.cross(o[:3], o[3:])[2])) > AXIAL_COSINE for o in orientations)
        head = instances[0]
        number = first("SeriesNumber", head)
        slices = 0
        for get in instances:
            frames = first("NumberOfFrames", get)
            slices += int(frames) if frames else 1
        return cls(
            uid=uid,
            number=int(number) if number is not None else None,
            description=str(first("SeriesDescription", head) or ""),
            modality=str(first("Modality", head) or ""),
            slices=slices,
            image_types=frozenset(str(v).upper() for get in instances for v in get("ImageType")),
            orientations=len(orientations),
            axial=bool(orientations) and axial,
            has_pixels=all(first("Rows", get) is not None for get in instances),
        )

    def passed_over(self, min_slices: int) -> str | None:
        """Why the rules pass this series over, or None when it fits."""
        if self.modality in NOT_IMAGES:
            return f"Modality {self.modality} is not an image modality"
        if not self.has_pixels:
            return "its instances have no pixels"
        if "LOCALIZER" in self.image_types:
            return "ImageType says LOCALIZER"
        if {"DERIVED", "SECONDARY"} <= self.image_types:
            return "ImageType says DERIVED\\SECONDARY"
        if self.orientations > 1:
            return f"its instances have {self.orientations} orientations"
        if self.slices < min_slices:
            return f"{_slices(self.slices)}, and the model needs at least {min_slices}"
        return None

    def describe(self) -> str:
        number = f"series {self.number}" if self.number is not None else "a series"
        about = f" '{self.description}'" if self.description else ""
        return f"{number}{about} ({self.modality or 'no modality'}, {_slices(self.slices)})"


def choose(candidates: Iterable[Candidate], min_slices: int = 1) -> Candidate:
    """The series the model runs on, by the rules of the module's docstring."""
    considered = list(candidates)
    fitting = [c for c in considered if c.passed_over(min_slices) is None]
    if not fitting:
        reasons = {c.uid: f"{c.describe()}: {c.passed_over(min_slices)}" for c in considered}
        listed = "; ".join(reasons.values()) or "the study has no series"
        raise NoSuitableSeries(f"no series fits the model: {listed}", details={"series": reasons})
    return min(
        fitting,
        key=lambda c: (not c.axial, -c.slices, c.number if c.number is not None else 1 << 31),
    )


def chosen_series(datasets: Sequence[Dataset]) -> list[int]:
    """Positions of the datasets that belong to the series the rules choose (all of them when
    they are one series): what an upload of a whole study is read, and answered, as."""
    groups: dict[str, list[int]] = {}
    for i, dataset in enumerate(datasets):
        groups.setdefault(str(dataset.get("SeriesInstanceUID") or ""), []).append(i)
    if len(groups) == 1:
        return list(range(len(datasets)))
    chosen = choose(
        Candidate.of(uid, [dataset_getter(datasets[i]) for i in members])
        for uid, members in groups.items()
    )
    return groups[chosen.uid]


def _slices(count: int) -> str:
    return "1 slice" if count == 1 else f"{count} slices"


def json_getter(instance: Mapping[str, Any]) -> Getter:
    """Values of a DICOM JSON instance (PS3.18 F.2), as QIDO-RS and WADO-RS metadata give."""

    def get(keyword: str) -> list[Any]:
        tag = tag_for_keyword(keyword)
        element = instance.get(f"{tag:08X}") if tag is not None else None
        values = element.get("Value") if isinstance(element, Mapping) else None
        return list(values) if isinstance(values, list) else []

    return get


def dataset_getter(dataset: Dataset) -> Getter:
    def get(keyword: str) -> list[Any]:
        if keyword not in dataset or dataset[keyword].value in (None, ""):
            return []
        value = dataset[keyword].value
        return list(value) if isinstance(value, MultiValue | list | tuple) else [value]

    return get
