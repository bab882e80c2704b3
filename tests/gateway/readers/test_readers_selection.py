"""The series rules over DICOM JSON, as a PACS lists series (the upload side is in
test_readers_series.py)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import NoSuitableSeries
from gateway.readers.selection import Candidate, choose, json_getter

AXIAL = [1, 0, 0, 0, 1, 0]
CORONAL = [1, 0, 0, 0, 0, -1]


def instance(**values: Any) -> dict[str, Any]:
    tags = {
        "Modality": "00080060",
        "ImageType": "00080008",
        "ImageOrientationPatient": "00200037",
        "Rows": "00280010",
        "SeriesNumber": "00200011",
        "SeriesDescription": "0008103E",
    }
    defaults: dict[str, Any] = {"Modality": "CT", "ImageType": ["ORIGINAL", "PRIMARY"], "Rows": 512}
    merged = {**defaults, **values}
    return {
        tags[k]: {"vr": "XX", "Value": v if isinstance(v, list) else [v]}
        for k, v in merged.items()
        if v is not None
    }


def series(uid: str, count: int, **values: Any) -> Candidate:
    return Candidate.of(uid, [json_getter(instance(**values)) for _ in range(count)])


def test_axial_then_most_slices_then_lowest_number() -> None:
    chosen = choose(
        [
            series("coronal", 300, ImageOrientationPatient=CORONAL, SeriesNumber=2),
            series("thick", 60, ImageOrientationPatient=AXIAL, SeriesNumber=3),
            series("thin", 240, ImageOrientationPatient=AXIAL, SeriesNumber=5),
            series("thin-again", 240, ImageOrientationPatient=AXIAL, SeriesNumber=4),
        ]
    )
    assert chosen.uid == "thin-again"


def test_each_rule_names_itself() -> None:
    passed_over = [
        series("seg", 1, Modality="SEG", SeriesNumber=10),
        series("nopixels", 3, Rows=None, SeriesNumber=11),
        series("scout", 3, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], SeriesNumber=12),
        series("mip", 3, ImageType=["DERIVED", "SECONDARY", "MIP"], SeriesNumber=13),
        Candidate.of(
            "mixed",
            [
                json_getter(instance(ImageOrientationPatient=AXIAL, SeriesNumber=14)),
                json_getter(instance(ImageOrientationPatient=CORONAL, SeriesNumber=14)),
            ],
        ),
        series("short", 1, SeriesNumber=15, SeriesDescription="one slice"),
    ]
    with pytest.raises(NoSuitableSeries) as refused:
        choose(passed_over, min_slices=2)
    reasons = refused.value.details["series"]
    assert reasons == {
        "seg": "series 10 (SEG, 1 slice): Modality SEG is not an image modality",
        "nopixels": "series 11 (CT, 3 slices): its instances have no pixels",
        "scout": "series 12 (CT, 3 slices): ImageType says LOCALIZER",
        "mip": "series 13 (CT, 3 slices): ImageType says DERIVED\\SECONDARY",
        "mixed": "series 14 (CT, 2 slices): its instances have 2 orientations",
        "short": "series 15 'one slice' (CT, 1 slice): 1 slice, and the model needs at least 2",
    }
    with pytest.raises(NoSuitableSeries, match="the study has no series"):
        choose([])
