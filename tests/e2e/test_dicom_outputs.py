"""DICOM results for uploads: SEG from the segmenters, TID 1500 SR from the other models.

Each request is made twice against the real gateway and Triton, once for AiCOCO and once for
DICOM, and the DICOM is read back with highdicom and compared with the AiCOCO answer: masks voxel
for voxel on every source slice, boxes to the coordinate, categories and values with their units.
Every file produced is validated with ``dciodvfy`` (dicom3tools), which must report no error.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image

import gateway
from aicoco.masks import polygons_to_mask
from tests.factories import make_ct_series
from training.phantoms import phantom_slice, phantom_volume

pytestmark = pytest.mark.e2e

TIMEOUT_S = 300.0
"""Bounds a request so a hung gateway fails the test instead of the run; not a measurement."""


def validate(content: bytes, tmp_path: Path) -> None:
    """``dciodvfy`` reports no error (warnings about the phantoms' empty Type 2 values are fine)."""
    program = shutil.which("dciodvfy")
    if program is None:
        pytest.skip(
            "dciodvfy is not installed: `make test` installs Debian's dicom3tools package when "
            "it runs as root on Debian"
        )
    path = tmp_path / "result.dcm"
    path.write_bytes(content)
    checked = subprocess.run([program, str(path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in (checked.stdout + checked.stderr).splitlines() if "Error" in line]
    assert not errors, "\n".join(errors)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """24 CT slices of 256 x 256 with one 25 mm nodule, file names shuffled against z."""
    volume = phantom_volume(
        np.random.default_rng(5), slices=24, size=256, lesions=[25.0], slice_thickness_mm=2.5
    )
    return make_ct_series(tmp_path_factory.mktemp("series"), volume.hu, shuffle=4)


@pytest.fixture(scope="module")
def ct_slice(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One 512 x 512 CT slice with one 20 mm nodule."""
    chest = phantom_slice(np.random.default_rng(7), 512, lesions=[20.0])
    return make_ct_series(
        tmp_path_factory.mktemp("slice"), chest.hu[None], spacing=(1.0, 0.7, 0.7), seed=3
    )


def post(
    http: httpx.Client, model: str, paths: Sequence[Path], output: str | None = None, **kw: Any
) -> httpx.Response:
    images = [{"id": f"image-{k}", "file_name": p.name, "index": k} for k, p in enumerate(paths)]
    return http.post(
        f"/models/{model}/invocations",
        params={"output": output} if output else None,
        files=[("files", (path.name, path.read_bytes())) for path in paths],
        data={"images": json.dumps(images)},
        **kw,
    )


def both(
    http: httpx.Client, model: str, paths: Sequence[Path], output: str, tmp_path: Path
) -> tuple[dict[str, Any], pydicom.Dataset]:
    """The AiCOCO answer and the DICOM one (validated), for the same request."""
    answer = post(http, model, paths)
    assert answer.status_code == 200, answer.text
    result = post(http, model, paths, output)
    assert result.status_code == 200, result.text
    assert result.headers["content-type"] == "application/dicom"
    assert result.headers["content-disposition"] == (f'attachment; filename="{model}-{output}.dcm"')
    validate(result.content, tmp_path)
    document: dict[str, Any] = answer.json()
    return document, pydicom.dcmread(io.BytesIO(result.content))


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def most_specific(document: Mapping[str, Any], object_id: str) -> str:
    categories = {c["id"]: c for c in document["categories"]}
    obj = next(o for o in document["objects"] if o["id"] == object_id)
    own = [categories[i] for i in obj["category_ids"]]
    parents = {c.get("supercategory_id") for c in own}
    return str(next(c for c in own if c["id"] not in parents)["name"])


def aicoco_masks(
    document: Mapping[str, Any], shape: tuple[int, int]
) -> dict[tuple[str, str], np.ndarray]:
    """``(file_name, category name) -> mask`` from the AiCOCO polygons."""
    files = {image["id"]: image["file_name"] for image in document["images"]}
    masks: dict[tuple[str, str], np.ndarray] = {}
    for annotation in document["annotations"]:
        key = (files[annotation["image_id"]], most_specific(document, annotation["object_id"]))
        painted = polygons_to_mask(annotation["segmentation"], shape)
        masks[key] = masks.get(key, np.zeros(shape, bool)) | painted
    return masks


def document_categories(http: httpx.Client, model: str) -> list[dict[str, Any]]:
    """The categories a model declares, with their codes, as GET /models/{name} lists them."""
    categories: list[dict[str, Any]] = http.get(f"/models/{model}").json()["categories"]
    return categories


def check_identification(result: pydicom.Dataset, model: str) -> None:
    (equipment,) = (
        item
        for item in result.ContributingEquipmentSequence
        if item.Manufacturer == "aicoco-gateway"
    )
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeMeaning == "Processing Equipment"
    assert equipment.ManufacturerModelName == model
    assert equipment.SoftwareVersions == gateway.__version__


def check_segmentation(
    http: httpx.Client,
    model: str,
    paths: Sequence[Path],
    shape: tuple[int, int],
    labels: list[str],
    tmp_path: Path,
) -> None:
    document, result = both(http, model, paths, "seg", tmp_path)
    seg = hd.seg.Segmentation.from_dataset(result)
    assert seg.SegmentationType == "BINARY"
    assert str(seg.StudyInstanceUID) == str(pydicom.dcmread(paths[0]).StudyInstanceUID)
    names = {n: seg.get_segment_description(n).segment_label for n in seg.segment_numbers}
    assert sorted(names.values()) == sorted(labels)
    declared = {c["name"]: c for c in document_categories(http, model)}
    for number, label in names.items():
        description = seg.get_segment_description(number)
        for key, code in (
            ("segmented_property_category", description.segmented_property_category),
            ("segmented_property_type", description.segmented_property_type),
        ):
            wanted = declared[label].get(key) or {"value": "85756007", "scheme": "SCT"}
            assert (code.value, code.scheme_designator) == (wanted["value"], wanted["scheme"])
    for number in seg.segment_numbers:
        description = seg.get_segment_description(number)
        algorithm = description.algorithm_identification
        assert algorithm is not None and algorithm[0].AlgorithmName == model
        assert algorithm[0].AlgorithmVersion == "1"
    check_identification(result, model)
    expected = aicoco_masks(document, shape)
    assert expected, f"{model} found nothing: the test compares nothing"
    for path in paths:
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[uid_of(path)],
            segment_numbers=list(seg.segment_numbers),
            assert_missing_frames_are_empty=True,
        )[0]
        for k, number in enumerate(seg.segment_numbers):
            truth = expected.get((path.name, names[number]), np.zeros(shape, bool))
            np.testing.assert_array_equal(pixels[..., k] > 0, truth, f"{path.name} {names[number]}")


def test_3d_segmentation_as_seg_equals_the_aicoco_masks_on_every_slice(
    http: httpx.Client, series: list[Path], tmp_path: Path
) -> None:
    check_segmentation(
        http, "lesion_segmenter_3d", series, (256, 256), ["lung", "nodule"], tmp_path
    )


def test_volumetric_segmentation_as_seg_equals_the_aicoco_masks_on_every_slice(
    http: httpx.Client, series: list[Path], tmp_path: Path
) -> None:
    """The patch-based 3D model's labels come back on the series' own slices."""
    check_segmentation(http, "chest_segmenter_3d", series, (256, 256), ["lung", "nodule"], tmp_path)


def test_2d_segmentation_as_seg_equals_the_aicoco_masks(
    http: httpx.Client, ct_slice: list[Path], tmp_path: Path
) -> None:
    check_segmentation(
        http, "lung_segmenter", ct_slice, (512, 512), ["left_lung", "right_lung"], tmp_path
    )


def report_of(result: pydicom.Dataset) -> hd.sr.MeasurementReport:
    sr = hd.sr.Comprehensive3DSR.from_dataset(result)
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    content = sr.content
    assert isinstance(content, hd.sr.MeasurementReport)
    return content


def test_detection_as_sr_holds_each_box_on_its_source_image(
    http: httpx.Client, ct_slice: list[Path], tmp_path: Path
) -> None:
    document, result = both(http, "lesion_detector", ct_slice, "sr", tmp_path)
    check_identification(result, "lesion_detector")
    groups = report_of(result).get_planar_roi_measurement_groups()
    assert len(groups) == len(document["annotations"]) >= 1
    confidences = {o["id"]: o["confidence"] for o in document["objects"]}
    for group, annotation in zip(groups, document["annotations"], strict=True):
        x1, y1, x2, y2 = annotation["bbox"][0]
        assert group.roi is not None
        np.testing.assert_allclose(
            group.roi.value, [[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], rtol=1e-6
        )
        source = group.roi.ContentSequence[0].ReferencedSOPSequence[0]
        assert source.ReferencedSOPInstanceUID == uid_of(ct_slice[0])
        assert group.finding_type is not None
        assert (group.finding_type.scheme_designator, group.finding_type.value) == (
            "SCT",
            "27925004",
        ), "the detector's card declares SNOMED CT Nodule"
        (confidence,) = group.get_measurements()
        assert confidence.value == pytest.approx(confidences[annotation["object_id"]], rel=1e-6)


def finding_names(document: Mapping[str, Any]) -> dict[str, str]:
    """Each category's finding in an SR: its declared code's meaning, or its name."""
    return {
        c["id"]: (c.get("finding_type") or {}).get("meaning") or c["name"].replace("_", " ")
        for c in document["categories"]
    }


def findings(groups: Sequence[Any]) -> list[str]:
    return [str(g.finding_type.meaning) for g in groups if g.finding_type is not None]


def test_classification_as_sr_per_image_and_per_series(
    http: httpx.Client, ct_slice: list[Path], series: list[Path], tmp_path: Path
) -> None:
    document, result = both(http, "lesion_classifier", ct_slice, "sr", tmp_path)
    names = finding_names(document)
    groups = report_of(result).get_image_measurement_groups()
    assert findings(groups) == [names[i] for i in document["images"][0]["category_ids"]]
    assert findings(groups), "the classifier found nothing: the test compares nothing"
    for group in groups:
        (source,) = group.source_images
        assert source.referenced_sop_instance_uid == uid_of(ct_slice[0])
    document, result = both(http, "lesion_classifier", series, "sr", tmp_path)
    names = finding_names(document)
    groups = report_of(result).get_image_measurement_groups()
    assert all(not g.source_images for g in groups), "a series result names no image"
    assert findings(groups) == [names[i] for i in document["meta"]["category_ids"]]
    assert findings(groups)


def test_regression_as_sr_keeps_values_and_units(
    http: httpx.Client, ct_slice: list[Path], tmp_path: Path
) -> None:
    document, result = both(http, "lesion_size_regressor", ct_slice, "sr", tmp_path)
    regressions = {r["id"]: r for r in document["regressions"]}
    (group,) = report_of(result).get_image_measurement_groups()
    assert group.finding_type is None
    measured = {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()}
    items = document["images"][0]["regressions"]
    assert len(measured) == len(items) == 2
    for item in items:
        regression = regressions[item["regression_id"]]
        value, unit = measured[regression["name"].replace("_", " ")]
        assert value == pytest.approx(item["value"], rel=1e-6)
        assert unit == regression["unit"].replace("^", "")
    assert {unit for _, unit in measured.values()} == {"mm", "mm2"}


def test_accept_dicom_picks_seg_or_sr_by_task(
    http: httpx.Client, ct_slice: list[Path], tmp_path: Path
) -> None:
    accept = {"Accept": "application/dicom"}
    seg = post(http, "lung_segmenter", ct_slice, headers=accept)
    assert seg.status_code == 200, seg.text
    assert pydicom.dcmread(io.BytesIO(seg.content)).Modality == "SEG"
    sr = post(http, "lesion_detector", ct_slice, headers=accept)
    assert pydicom.dcmread(io.BytesIO(sr.content)).Modality == "SR"


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    return str(error["message"])


def test_dicom_outputs_need_dicom_inputs_and_a_fitting_model(
    http: httpx.Client, ct_slice: list[Path], tmp_path: Path
) -> None:
    png = tmp_path / "chest.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(png)
    message = error_of(post(http, "lung_segmenter", [png], "seg"), 422, "dicom_input_required")
    assert "'chest.png' is not DICOM" in message
    message = error_of(post(http, "lesion_detector", ct_slice, "seg"), 400, "invalid_parameter")
    assert "output=sr" in message
    error_of(post(http, "lesion_detector", ct_slice, "nifti"), 400, "invalid_parameter")


def test_the_send_command_saves_a_dicom_answer(
    http: httpx.Client, ct_slice: list[Path], tmp_path: Path
) -> None:
    target = tmp_path / "lungs.dcm"
    command = [sys.executable, "-m", "gateway", "send", "--url", str(http.base_url)]
    command += ["--model", "lung_segmenter", "--output", "seg", "--save", str(target)]
    done = subprocess.run(
        [*command, *map(str, ct_slice)], capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(target)
    assert pydicom.dcmread(target).Modality == "SEG"
    validate(target.read_bytes(), tmp_path)


def test_nothing_found_is_a_valid_sr(http: httpx.Client, tmp_path: Path) -> None:
    """A clear chest: no category, no box; the SR still says which image was looked at."""
    clear = phantom_slice(np.random.default_rng(8), 512, lesions=0)
    paths = make_ct_series(tmp_path / "clear", clear.hu[None], spacing=(1.0, 0.7, 0.7), seed=5)
    document, result = both(http, "lesion_classifier", paths, "sr", tmp_path)
    assert document["images"][0]["category_ids"] == []
    (group,) = report_of(result).get_image_measurement_groups()
    assert group.finding_type is None
    assert str(group.tracking_identifier).endswith("no finding")


def test_nothing_found_is_a_valid_seg(http: httpx.Client, tmp_path: Path) -> None:
    """Air only: no mask; the SEG still has its segments, with empty frames."""
    air = np.full((1, 128, 128), -1000, np.int16)
    paths = make_ct_series(tmp_path / "air", air, seed=6)
    document, result = both(http, "lesion_segmenter_3d", paths, "seg", tmp_path)
    assert document["annotations"] == []
    seg = hd.seg.Segmentation.from_dataset(result)
    assert [seg.get_segment_description(n).segment_label for n in seg.segment_numbers] == [
        "lung",
        "nodule",
    ]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[uid_of(paths[0])], segment_numbers=list(seg.segment_numbers)
    )
    assert not pixels.any()


def test_a_study_uploaded_whole_gets_the_seg_of_the_chosen_series(
    http: httpx.Client, series: list[Path], tmp_path: Path
) -> None:
    """The series rules pick the volume over a scout for the SEG too, as for the AiCOCO answer
    (this was a 422 inconsistent_series)."""
    scouts = make_ct_series(tmp_path / "scout", np.full((2, 64, 64), -1000, np.int16), seed=30)
    renamed = []
    for k, scout in enumerate(scouts):
        ds = pydicom.dcmread(scout)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        renamed.append(scout.with_name(f"scout_{k}.dcm"))
        ds.save_as(renamed[-1])
    scouts = renamed
    document, result = both(http, "lesion_segmenter_3d", [*series, *scouts], "seg", tmp_path)
    assert {image["file_name"] for image in document["images"]} == {p.name for p in series}
    seg = hd.seg.Segmentation.from_dataset(result)
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    assert referenced == {uid_of(path) for path in series}
