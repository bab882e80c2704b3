"""The PACS round trip against a real Orthanc with its DICOMweb plugin (Debian's packages).

The fixture starts Orthanc on a free port with a throwaway storage folder and HTTP basic
authentication, and stops it after the module. Studies go in through Orthanc's own REST API;
the gateway reaches Orthanc only over DICOMweb (QIDO-RS, WADO-RS, STOW-RS), as it would a
hospital's PACS. What the gateway stored is fetched back from Orthanc, read with highdicom,
validated with ``dciodvfy`` and compared with the AiCOCO answer.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest

from tests.e2e.conftest import USER, Orthanc, StartGateway
from tests.e2e.test_dicom_outputs import (
    aicoco_masks,
    error_of,
    finding_names,
    findings,
    report_of,
    validate,
)
from tests.factories import make_ct_series
from training.phantoms import phantom_slice, phantom_volume
from triton_local import LocalTriton, free_port

pytestmark = pytest.mark.e2e

TIMEOUT_S = 300.0
"""Bounds a request so a hung gateway fails the test instead of the run; not a measurement."""


@pytest.fixture(scope="module")
def http(pacs_http: httpx.Client) -> httpx.Client:
    return pacs_http


@dataclass(frozen=True)
class Study:
    study: str
    series: str
    paths: list[Path]


def uids(path: Path) -> tuple[str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


@pytest.fixture(scope="module")
def ct_study(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> Study:
    """A CT study of three series: the 24-slice volume, a 2-slice scout and an earlier SEG's
    stand-in (a secondary capture); the rules must pick the volume."""
    folder = tmp_path_factory.mktemp("ct-study")
    volume = phantom_volume(
        np.random.default_rng(5), slices=24, size=256, lesions=[25.0], slice_thickness_mm=2.5
    )
    paths = make_ct_series(folder / "volume", volume.hu, seed=21, shuffle=2)
    study, series = uids(paths[0])
    scouts = make_ct_series(folder / "scout", volume.hu[:2], seed=21)
    for k, scout in enumerate(scouts):
        ds = pydicom.dcmread(scout)
        ds.SeriesInstanceUID = hd.UID()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = hd.UID()
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.save_as(scout)
    orthanc.upload([*paths, *scouts])
    return Study(study, series, paths)


@pytest.fixture(scope="module")
def slice_study(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> Study:
    chest = phantom_slice(np.random.default_rng(7), 512, lesions=[20.0])
    paths = make_ct_series(
        tmp_path_factory.mktemp("slice-study"), chest.hu[None], spacing=(1.0, 0.7, 0.7), seed=22
    )
    orthanc.upload(paths)
    study, series = uids(paths[0])
    return Study(study, series, paths)


def round_trip(http: httpx.Client, model: str, **asked: Any) -> dict[str, Any]:
    response = http.post(f"/models/{model}/dicomweb/invocations", json=asked)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_the_3d_model_stores_a_seg_equal_to_its_aicoco_answer(
    http: httpx.Client, orthanc: Orthanc, ct_study: Study, tmp_path: Path
) -> None:
    answer = round_trip(
        http, "lesion_segmenter_3d", study_instance_uid=ct_study.study, store=True, min_slices=2
    )
    assert answer["series_instance_uid"] == ct_study.series, "the rules chose the wrong series"
    (stored,) = answer["stored"]
    assert stored["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    content = orthanc.instance(stored["sop_instance_uid"])
    validate(content, tmp_path)
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(content)))
    assert str(seg.StudyInstanceUID) == ct_study.study
    assert str(seg.SeriesInstanceUID) == stored["series_instance_uid"]
    document = answer["aicoco"]
    assert len(document["images"]) == len(ct_study.paths)
    # The gateway names each retrieved instance by its SOPInstanceUID.
    expected = aicoco_masks(document, (256, 256))
    assert expected, "the 3D model found nothing: the test compares nothing"
    labels = {n: seg.get_segment_description(n).segment_label for n in seg.segment_numbers}
    assert sorted(labels.values()) == ["lung", "nodule"]
    for path in ct_study.paths:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[uid],
            segment_numbers=list(seg.segment_numbers),
            assert_missing_frames_are_empty=True,
        )[0]
        for k, number in enumerate(seg.segment_numbers):
            truth = expected.get((f"{uid}.dcm", labels[number]), np.zeros((256, 256), bool))
            np.testing.assert_array_equal(pixels[..., k] > 0, truth, f"{uid} {labels[number]}")


def test_the_detector_and_the_classifier_store_srs(
    http: httpx.Client, orthanc: Orthanc, slice_study: Study, tmp_path: Path
) -> None:
    answer = round_trip(http, "lesion_detector", study_instance_uid=slice_study.study, store=True)
    (stored,) = answer["stored"]
    content = orthanc.instance(stored["sop_instance_uid"])
    validate(content, tmp_path)
    groups = report_of(pydicom.dcmread(io.BytesIO(content))).get_planar_roi_measurement_groups()
    boxes = [a["bbox"][0] for a in answer["aicoco"]["annotations"]]
    assert len(groups) == len(boxes) >= 1
    for group, (x1, y1, x2, y2) in zip(groups, boxes, strict=True):
        assert group.roi is not None
        np.testing.assert_allclose(
            group.roi.value, [[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], rtol=1e-6
        )
    answer = round_trip(
        http,
        "lesion_classifier",
        study_instance_uid=slice_study.study,
        series_instance_uid=slice_study.series,
        store=True,
        output="sr",
    )
    (stored,) = answer["stored"]
    content = orthanc.instance(stored["sop_instance_uid"])
    validate(content, tmp_path)
    document = answer["aicoco"]
    names = finding_names(document)
    report = report_of(pydicom.dcmread(io.BytesIO(content)))
    assert findings(report.get_image_measurement_groups()) == [
        names[i] for i in document["images"][0]["category_ids"]
    ]


def test_without_store_nothing_is_written(
    http: httpx.Client, orthanc: Orthanc, slice_study: Study
) -> None:
    with orthanc.rest() as client:
        before = len(client.get("/instances").json())
    answer = round_trip(http, "lesion_size_regressor", study_instance_uid=slice_study.study)
    assert answer["stored"] == []
    assert answer["aicoco"]["images"][0]["regressions"]
    with orthanc.rest() as client:
        assert len(client.get("/instances").json()) == before


def test_unknown_study_bad_requests_and_a_study_with_no_fitting_series(
    http: httpx.Client, orthanc: Orthanc, ct_study: Study
) -> None:
    route = "/models/lesion_classifier/dicomweb/invocations"
    message = error_of(
        http.post(route, json={"study_instance_uid": "1.2.3.4"}), 404, "study_not_found"
    )
    assert "1.2.3.4" in message
    error_of(http.post(route, json={"study_instance_uid": "not-a-uid"}), 422, "invalid_input")
    error_of(http.post(route, content=b"{nope"), 400, "malformed_json")
    message = error_of(
        http.post(route, json={"study_instance_uid": ct_study.study, "min_slices": 100}),
        422,
        "no_suitable_series",
    )
    assert "24 slices, and the model needs at least 100" in message
    assert "ImageType says LOCALIZER" in message


def test_a_pacs_that_is_down_is_a_503_at_once(
    triton: LocalTriton, start_gateway: StartGateway
) -> None:
    closed = free_port()
    url, _ = start_gateway(
        triton.grpc_url, {"DICOMWEB_URL": f"http://127.0.0.1:{closed}/dicom-web"}
    )
    started = time.monotonic()
    response = httpx.post(
        f"{url}/dicomweb/invocations", json={"study_instance_uid": "1.2.3"}, timeout=TIMEOUT_S
    )
    message = error_of(response, 503, "pacs_unavailable")
    assert f"127.0.0.1:{closed}" in message
    assert response.headers["retry-after"] == "10"
    assert time.monotonic() - started < TIMEOUT_S


def test_wrong_credentials_are_named(
    orthanc: Orthanc, ct_study: Study, triton: LocalTriton, start_gateway: StartGateway
) -> None:
    env = {"DICOMWEB_URL": orthanc.dicomweb, "DICOMWEB_USERNAME": USER, "DICOMWEB_PASSWORD": "no"}
    url, _ = start_gateway(triton.grpc_url, env)
    response = httpx.post(
        f"{url}/dicomweb/invocations",
        json={"study_instance_uid": ct_study.study},
        timeout=TIMEOUT_S,
    )
    assert "DICOMWEB_USERNAME" in error_of(response, 502, "pacs_error")


def test_the_round_trip_as_a_job_stores_its_seg_and_answers_as_the_synchronous_call(
    http: httpx.Client, orthanc: Orthanc, ct_study: Study
) -> None:
    """``POST /models/{name}/dicomweb/jobs``: the same JSON, validated before the 202; the
    retrieval, the run and the STOW happen in the job; its result is the PacsResult."""
    asked = {"study_instance_uid": ct_study.study, "store": True, "min_slices": 2}
    refused = http.post("/models/lesion_classifier/dicomweb/jobs", json={**asked, "output": "seg"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_parameter"), (
        "a classifier has no SEG: refused before the 202"
    )
    submitted = http.post("/models/lesion_segmenter_3d/dicomweb/jobs", json=asked)
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["kind"] == "dicomweb"
    location = submitted.headers["location"]
    deadline = time.monotonic() + TIMEOUT_S
    stages = set()
    while (status := http.get(location).json())["state"] not in ("succeeded", "failed"):
        stages.add(status["stage"])
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert status["state"] == "succeeded", status
    answer = http.get(location + "/result").json()
    assert answer["series_instance_uid"] == ct_study.series
    (stored,) = answer["stored"]
    assert orthanc.instance(stored["sop_instance_uid"])
    synchronous = round_trip(http, "lesion_segmenter_3d", **{**asked, "store": False})
    assert len(answer["aicoco"]["annotations"]) == len(synchronous["aicoco"]["annotations"])
    assert stages - {None} <= {
        "starting",
        "retrieve",
        "read",
        "preprocess",
        "triton",
        "postprocess",
        "format",
        "store",
        "save",
    }
