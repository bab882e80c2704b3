"""Every route that runs a model goes through the one runner, and so records its stages.

``/invocations``, the DICOMweb route and the viewer's render each take one request here, against
the real gateway, Triton and Orthanc, each under its own ``model`` label; ``/metrics`` must then
count every stage of each. The DICOMweb route once built its request without the stage
observer, so none of its stages reached ``gateway_stage_duration_seconds``.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest

from tests.e2e.conftest import Orthanc, dicom_form
from tests.factories import make_ct_series
from training.phantoms import phantom_slice

pytestmark = pytest.mark.e2e

TIMEOUT_S = 300.0
"""Bounds a request so a hung gateway fails the test instead of the run; not a measurement."""
MODEL_STAGES = {"parse", "read", "preprocess", "triton", "postprocess", "format"}


@pytest.fixture(scope="module")
def http(pacs_http: httpx.Client) -> httpx.Client:
    return pacs_http


@pytest.fixture(scope="module")
def ct_slice(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    chest = phantom_slice(np.random.default_rng(11), 512, lesions=[20.0])
    return make_ct_series(
        tmp_path_factory.mktemp("slice"), chest.hu[None], spacing=(1.0, 0.7, 0.7), seed=31
    )


def stage_counts(http: httpx.Client, model: str) -> dict[str, float]:
    """``stage -> count`` of the stage histogram for one ``model`` label."""
    counts = {}
    for line in http.get("/metrics").text.splitlines():
        if not line.startswith("gateway_stage_duration_seconds_count{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels.get("model") == model:
            counts[labels["stage"]] = float(line.rsplit(" ", 1)[1])
    return counts


def test_invocations_record_every_stage(http: httpx.Client, ct_slice: list[Path]) -> None:
    answer = http.post("/models/lesion_classifier/invocations", **dicom_form(ct_slice))  # type: ignore[arg-type]
    assert answer.status_code == 200, answer.text
    counts = stage_counts(http, "lesion_classifier")
    assert set(counts) == MODEL_STAGES and min(counts.values()) >= 1, counts


def test_the_dicomweb_route_records_every_stage(
    http: httpx.Client, orthanc: Orthanc, ct_slice: list[Path]
) -> None:
    orthanc.upload(ct_slice)
    study = str(pydicom.dcmread(ct_slice[0], stop_before_pixels=True).StudyInstanceUID)
    answer = http.post(
        "/models/lesion_detector/dicomweb/invocations", json={"study_instance_uid": study}
    )
    assert answer.status_code == 200, answer.text
    counts = stage_counts(http, "lesion_detector")
    assert set(counts) == MODEL_STAGES and min(counts.values()) >= 1, counts


def test_the_viewer_render_records_its_stages(http: httpx.Client, ct_slice: list[Path]) -> None:
    answer = http.post("/viewer/render", **dicom_form(ct_slice))  # type: ignore[arg-type]
    assert answer.status_code == 200, answer.text
    counts = stage_counts(http, "viewer/render")
    assert set(counts) == {"parse", "read", "format"} and min(counts.values()) >= 1, counts
