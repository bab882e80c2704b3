"""The five tasks end to end: real files through the real gateway to the real local Triton.

Each request goes over HTTP to ``python -m gateway serve`` (hypercorn, the built-in pipelines
configured by the example models' parameters) and back as AiCOCO. Beyond "it answers", the
answers are checked against what the inputs are known to hold: phantoms (training/phantoms.py)
come with their ground truth, so the lesion must be found where it is and the lung polygons must
cover the lungs; a DICOM series posted in shuffled order, or with indices that do not follow its
geometry, must give every file the annotations of its own slice; lossless codecs must give the
same answer as the uncompressed file.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from aicoco import AiCOCOOutput
from aicoco.masks import polygons_to_mask
from tests.e2e.conftest import StartGateway
from tests.factories import make_ct_series, pydicom_file
from training.phantoms import (
    LUNG_WINDOW,
    PhantomSlice,
    PhantomVolume,
    phantom_slice,
    phantom_volume,
    window_to_uint8,
)
from triton_local import LocalTriton

pytestmark = pytest.mark.e2e

TIMEOUT_S = 300.0
"""Bounds a request so a hung gateway fails the test instead of the run; not a measurement."""
FLAVOR_EXAMPLE = "lung_segmenter=gateway.pipelines.examples:LungSegmentationModel"
LOSSLESS_MR = {
    "jpeg2000": "MR_small_jp2klossless.dcm",
    "jpeg_ls": "MR_small_jpeg_ls_lossless.dcm",
    "rle": "MR_small_RLE.dcm",
}
JPEG_BASELINE = "SC_rgb_jpeg_dcmtk.dcm"

File = tuple[str, bytes]


@pytest.fixture(scope="module")
def flavor_http(triton: LocalTriton, start_gateway: StartGateway) -> Iterator[httpx.Client]:
    """A gateway serving ``lung_segmenter`` through the ported FLaVor example instead."""
    url, _ = start_gateway(triton.grpc_url, {"PIPELINES": FLAVOR_EXAMPLE})
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        yield client


@pytest.fixture(scope="module")
def chest() -> PhantomSlice:
    """A 512 x 512 chest slice with one 20 mm nodule."""
    phantom = phantom_slice(np.random.default_rng(7), 512, lesions=[20.0])
    assert len(phantom.lesions) == 1
    return phantom


@pytest.fixture(scope="module")
def clear_chest() -> PhantomSlice:
    return phantom_slice(np.random.default_rng(8), 512, lesions=0)


@pytest.fixture(scope="module")
def volume() -> PhantomVolume:
    """40 slices (three batches of the 3D model's 16) of 320 x 320, one 25 mm nodule."""
    phantom = phantom_volume(
        np.random.default_rng(5), slices=40, size=320, lesions=[25.0], slice_thickness_mm=2.5
    )
    assert len(phantom.lesions) == 1
    return phantom


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def rendering(phantom: PhantomSlice) -> np.ndarray:
    """The slice as a PACS exports it to PNG: lung window, 8 bits."""
    return window_to_uint8(phantom.hu, *LUNG_WINDOW)


def entry(file_name: str, index: int) -> dict[str, Any]:
    return {"id": f"image-{index:04d}", "file_name": file_name, "index": index}


def infer(
    http: httpx.Client,
    model: str,
    files: Sequence[File],
    images: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """POST as FLaVor clients do (repeated ``files``, ``images`` as JSON text); a checked body."""
    if images is None:
        images = [entry(name, i) for i, (name, _) in enumerate(files)]
    response = http.post(
        f"/models/{model}/invocations",
        files=[("files", (name, content, "application/octet-stream")) for name, content in files],
        data={"images": json.dumps(list(images))},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    check_document(body, images)
    return body


def check_document(body: dict[str, Any], images: Sequence[Mapping[str, Any]]) -> None:
    """Valid AiCOCO whose references all resolve, echoing the request's entries."""
    AiCOCOOutput.model_validate(body)
    assert sorted(image["id"] for image in body["images"]) == sorted(i["id"] for i in images)
    for image in body["images"]:
        sent = next(i for i in images if i["id"] == image["id"])
        assert (image["file_name"], image["index"]) == (sent["file_name"], sent["index"])
    image_ids = {image["id"] for image in body["images"]}
    category_ids = {category["id"] for category in body["categories"]}
    regression_ids = {regression["id"] for regression in body["regressions"]}
    object_ids = {obj["id"] for obj in body["objects"]}
    for annotation in body["annotations"]:
        assert annotation["image_id"] in image_ids
        assert annotation["object_id"] in object_ids
    holders = [*body["objects"], *body["images"], body["meta"]]
    for holder in holders:
        assert set(holder.get("category_ids") or ()) <= category_ids
        assert {item["regression_id"] for item in holder.get("regressions") or ()} <= (
            regression_ids
        )


def names(body: Mapping[str, Any], ids: Sequence[str] | None) -> set[str]:
    by_id = {category["id"]: category["name"] for category in body["categories"]}
    return {by_id[i] for i in ids or ()}


def values(body: Mapping[str, Any], items: Sequence[Mapping[str, Any]] | None) -> dict[str, float]:
    by_id = {regression["id"]: regression["name"] for regression in body["regressions"]}
    return {by_id[item["regression_id"]]: item["value"] for item in items or ()}


def masks_by_category(body: Mapping[str, Any], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Rasterised polygons per category name, for a document about one image."""
    objects = {obj["id"]: names(body, obj["category_ids"]) for obj in body["objects"]}
    masks: dict[str, np.ndarray] = {}
    for annotation in body["annotations"]:
        painted = polygons_to_mask(annotation["segmentation"], shape)
        for name in objects[annotation["object_id"]]:
            masks[name] = masks.get(name, np.zeros(shape, bool)) | painted
    return masks


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def canonical(body: Mapping[str, Any]) -> dict[str, Any]:
    """The answer without its generated ids: what each file got, object by object."""
    images = {image["id"]: image["file_name"] for image in body["images"]}
    by_object: dict[str, list[tuple[str, str, str]]] = {}
    for annotation in body["annotations"]:
        by_object.setdefault(annotation["object_id"], []).append(
            (
                images[annotation["image_id"]],
                json.dumps(annotation["bbox"]),
                json.dumps(annotation["segmentation"]),
            )
        )
    objects = sorted(
        (sorted(names(body, obj["category_ids"])), sorted(by_object.get(obj["id"], [])))
        for obj in body["objects"]
    )
    per_image = sorted(
        (
            image["file_name"],
            sorted(names(body, image["category_ids"])),
            values(body, image["regressions"]),
        )
        for image in body["images"]
    )
    meta = (
        sorted(names(body, body["meta"]["category_ids"])),
        values(body, body["meta"]["regressions"]),
    )
    return {"objects": objects, "images": per_image, "meta": meta}


# Classification


def test_classification_of_a_png_finds_the_large_nodule(
    http: httpx.Client, chest: PhantomSlice, clear_chest: PhantomSlice
) -> None:
    body = infer(http, "lesion_classifier", [("chest.png", png_bytes(rendering(chest)))])
    assert [c["name"] for c in body["categories"]] == ["nodule", "large_nodule"]
    assert names(body, body["images"][0]["category_ids"]) == {"nodule", "large_nodule"}
    clear = infer(http, "lesion_classifier", [("clear.png", png_bytes(rendering(clear_chest)))])
    assert names(clear, clear["images"][0]["category_ids"]) == set()


def test_classification_of_a_jpeg_agrees_with_the_png(
    http: httpx.Client, chest: PhantomSlice
) -> None:
    body = infer(http, "lesion_classifier", [("chest.jpg", jpeg_bytes(rendering(chest)))])
    assert names(body, body["images"][0]["category_ids"]) == {"nodule", "large_nodule"}


def test_classification_of_photographs(http: httpx.Client) -> None:
    """Not chest slices, so any answer will do; what matters is that grey and RGB JPEG/PNG run."""
    infer(http, "lesion_classifier", [("camera.jpg", jpeg_bytes(skimage_data.camera()))])
    infer(http, "lesion_classifier", [("astronaut.png", png_bytes(skimage_data.astronaut()))])


def test_classification_of_pydicom_ct_and_mr(http: httpx.Client) -> None:
    for name in ("CT_small.dcm", "MR_small.dcm"):
        body = infer(http, "lesion_classifier", [(name, pydicom_file(name).read_bytes())])
        assert len(body["images"]) == 1


def test_classification_of_a_series_goes_to_meta(
    http: httpx.Client, volume: PhantomVolume, tmp_path: Path
) -> None:
    paths = make_ct_series(tmp_path / "series", volume.hu[::4])
    files = [(path.name, path.read_bytes()) for path in paths]
    body = infer(http, "lesion_classifier", files)
    assert all(image["category_ids"] is None for image in body["images"])
    assert "nodule" in names(body, body["meta"]["category_ids"])


# Regression


def test_regression_measures_the_nodule(
    http: httpx.Client, chest: PhantomSlice, clear_chest: PhantomSlice
) -> None:
    body = infer(http, "lesion_size_regressor", [("chest.png", png_bytes(rendering(chest)))])
    measured = values(body, body["images"][0]["regressions"])
    assert set(measured) == {"largest_nodule_diameter", "total_nodule_area"}
    assert [r.get("unit") for r in body["regressions"]] == ["mm", "mm^2"]
    assert measured["largest_nodule_diameter"] == pytest.approx(20.0, abs=5.0)
    clear = infer(http, "lesion_size_regressor", [("clear.png", png_bytes(rendering(clear_chest)))])
    assert values(clear, clear["images"][0]["regressions"])["largest_nodule_diameter"] < 5.0


def test_regression_of_a_dicom_ct(http: httpx.Client) -> None:
    body = infer(
        http, "lesion_size_regressor", [("ct.dcm", pydicom_file("CT_small.dcm").read_bytes())]
    )
    assert len(values(body, body["images"][0]["regressions"])) == 2


# Detection


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_detection_boxes_the_nodule_in_image_pixels(
    http: httpx.Client, chest: PhantomSlice
) -> None:
    for name, content in (
        ("chest.png", png_bytes(rendering(chest))),
        ("chest.jpg", jpeg_bytes(rendering(chest))),
    ):
        body = infer(http, "lesion_detector", [(name, content)])
        boxes = [annotation["bbox"][0] for annotation in body["annotations"]]
        assert boxes, f"no box in {name}"
        best = max(boxes, key=lambda box: box_iou(box, chest.lesions[0].box))
        assert box_iou(best, chest.lesions[0].box) >= 0.5
        assert all(0.0 <= obj["confidence"] <= 1.0 for obj in body["objects"])
        assert all(annotation["segmentation"] is None for annotation in body["annotations"])


def test_detection_in_a_resized_image_scales_the_box_back(
    http: httpx.Client, chest: PhantomSlice
) -> None:
    """A 384 x 640 rendering: boxes come back in its pixels, not the model's 256 x 256."""
    stretched = np.asarray(
        Image.fromarray(rendering(chest)).resize((640, 384), Image.Resampling.BILINEAR)
    )
    body = infer(http, "lesion_detector", [("wide.png", png_bytes(stretched))])
    x1, y1, x2, y2 = chest.lesions[0].box
    truth = (x1 * 640 / 512, y1 * 384 / 512, x2 * 640 / 512, y2 * 384 / 512)
    boxes = [annotation["bbox"][0] for annotation in body["annotations"]]
    assert max(box_iou(box, truth) for box in boxes) >= 0.5


def test_detection_of_compressed_dicom(http: httpx.Client) -> None:
    for name in (*LOSSLESS_MR.values(), JPEG_BASELINE, "CT_small.dcm"):
        infer(http, "lesion_detector", [(name, pydicom_file(name).read_bytes())])


# Segmentation 2D


def test_lung_segmentation_polygons_cover_the_lungs(
    http: httpx.Client, chest: PhantomSlice
) -> None:
    body = infer(http, "lung_segmenter", [("chest.png", png_bytes(rendering(chest)))])
    assert [c["name"] for c in body["categories"]] == ["left_lung", "right_lung", "lung"]
    masks = masks_by_category(body, (512, 512))
    assert dice(masks["left_lung"], chest.masks["left_lung"]) >= 0.9
    assert dice(masks["right_lung"], chest.masks["right_lung"]) >= 0.9


def test_lossless_codecs_give_the_uncompressed_answer(http: httpx.Client) -> None:
    reference = canonical(
        infer(http, "lung_segmenter", [("mr.dcm", pydicom_file("MR_small.dcm").read_bytes())])
    )
    for codec, name in LOSSLESS_MR.items():
        body = infer(http, "lung_segmenter", [("mr.dcm", pydicom_file(name).read_bytes())])
        assert canonical(body) == reference, codec


def test_segmentation_of_a_jpeg_baseline_dicom(http: httpx.Client) -> None:
    infer(http, "lung_segmenter", [("rgb.dcm", pydicom_file(JPEG_BASELINE).read_bytes())])


def test_the_ported_flavor_model_agrees_with_the_builtin_pipeline(
    http: httpx.Client, flavor_http: httpx.Client, chest: PhantomSlice
) -> None:
    files = [("chest.png", png_bytes(rendering(chest)))]
    builtin = masks_by_category(infer(http, "lung_segmenter", files), (512, 512))
    ported_body = infer(flavor_http, "lung_segmenter", files)
    ported = masks_by_category(ported_body, (512, 512))
    for lung in ("left_lung", "right_lung"):
        assert dice(ported[lung], builtin[lung]) >= 0.99
    info = flavor_http.get("/models/lung_segmenter").json()
    assert info["pipeline"] == "gateway.pipelines.examples:LungSegmentationModel"
    assert (info["ready"], info["task"]) == (True, "segmentation")


# Segmentation 3D


def series_files(paths: Sequence[Path]) -> list[File]:
    return [(path.name, path.read_bytes()) for path in paths]


def test_a_shuffled_series_gets_the_same_answer(
    http: httpx.Client, volume: PhantomVolume, tmp_path: Path
) -> None:
    paths = make_ct_series(tmp_path / "series", volume.hu, spacing=(2.5, 1.12, 1.12))
    in_order = [entry(path.name, z) for z, path in enumerate(paths)]
    reference = infer(http, "lesion_segmenter_3d", series_files(paths), in_order)

    permutation = np.random.default_rng(3).permutation(len(paths))
    shuffled = [paths[i] for i in permutation]
    body = infer(
        http, "lesion_segmenter_3d", series_files(shuffled), [in_order[i] for i in permutation]
    )
    assert canonical(body) == canonical(reference)

    # Indices that contradict the geometry: every file still gets its own slice's annotations.
    scrambled = [entry(path.name, int(k)) for path, k in zip(paths, permutation, strict=True)]
    body = infer(http, "lesion_segmenter_3d", series_files(shuffled), scrambled)
    assert canonical(body)["objects"] == canonical(reference)["objects"]

    slice_of_file = {path.name: z for z, path in enumerate(paths)}
    check_volume(
        reference,
        {image["id"]: slice_of_file[image["file_name"]] for image in reference["images"]},
        volume,
    )


def nifti_bytes(phantom: PhantomVolume) -> bytes:
    """The volume as NIfTI with an LPS-like affine: voxel axes (col, row, slice) as stored."""
    spacing_z, spacing_row, spacing_col = phantom.spacing_mm
    affine = np.diag([-spacing_col, -spacing_row, spacing_z, 1.0])
    image = nib.Nifti1Image(phantom.hu.transpose(2, 1, 0), affine)
    image.header["descrip"] = b"CT phantom"
    return image.to_bytes()


def test_a_nifti_volume_one_entry_per_slice(http: httpx.Client, volume: PhantomVolume) -> None:
    content = gzip.compress(nifti_bytes(volume))
    images = [entry("volume.nii.gz", z) for z in range(volume.hu.shape[0])]
    body = infer(http, "lesion_segmenter_3d", [("volume.nii.gz", content)], images)
    slice_of = {image["id"]: image["index"] for image in body["images"]}
    check_volume(body, slice_of, volume)


def check_volume(
    body: Mapping[str, Any], slice_of: Mapping[str, int], truth: PhantomVolume
) -> None:
    """The lung and the one nodule, rasterised slice by slice, against the phantom's truth."""
    depth, height, width = truth.hu.shape
    objects = {obj["id"]: names(body, obj["category_ids"]) for obj in body["objects"]}
    found = {name: np.zeros((depth, height, width), bool) for name in ("lung", "nodule")}
    for annotation in body["annotations"]:
        (name,) = objects[annotation["object_id"]]
        z = slice_of[annotation["image_id"]]
        found[name][z] |= polygons_to_mask(annotation["segmentation"], (height, width))
    assert dice(found["lung"], truth.lung) >= 0.95
    assert dice(found["nodule"], truth.lesion_labels > 0) >= 0.8
    assert sum(objects[obj["id"]] == {"nodule"} for obj in body["objects"]) == 1


def test_the_3d_model_on_one_dicom_slice(http: httpx.Client) -> None:
    body = infer(
        http, "lesion_segmenter_3d", [("ct.dcm", pydicom_file("CT_small.dcm").read_bytes())]
    )
    assert len(body["images"]) == 1
