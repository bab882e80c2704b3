"""A patch-based 3D model dropped into a live repository, served with no code and no restart,
over HTTP: its labels against MONAI's pipeline on a series it has never seen, and the refusals
of what it cannot take.

The model and the series are made here (:mod:`tests.volumetric`): a 3D ONNX network with
``max_batch_size`` and the documented ``aicoco.*`` parameters, and a CT written as one DICOM
file per slice at 2.5 x 0.7 x 0.7 mm, resampled by the model to 2.0 x 1.5 x 1.5 mm.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from aicoco.masks import mask_to_polygons, polygons_to_mask
from tests.conftest import running_triton
from tests.e2e.conftest import StartGateway, dicom_form
from tests.factories import make_ct_series
from tests.volumetric import CATEGORIES, VolumeModel, monai_pipeline, phantom_ct
from triton_local import LocalTriton, install_model

pytestmark = pytest.mark.e2e

TIMEOUT_S = 300.0
"""Bounds a request so a hung gateway fails the test instead of the run; not a measurement."""
MODEL = VolumeModel(roi=(8, 32, 32), mirror_axes=(2,))
SPACING = (2.5, 0.7, 0.7)
SHAPE = (24, 128, 128)

StartTriton = Callable[..., LocalTriton]


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, start_gateway: StartGateway
) -> Iterator[tuple[httpx.Client, LocalTriton]]:
    """A gateway on a live Triton whose repository gets the model after it has started (the
    gateway starts once the model is there: its readiness is its default model's)."""
    folder = tmp_path_factory.mktemp("volumetric")
    repository = folder / "repository"
    repository.mkdir()
    with running_triton(repository, folder / "tritonserver.log") as server:
        staged = MODEL.write(folder / "staging", "volume")
        pid = server.pid
        install_model(staged, repository)
        server.wait_for_model("volume")
        assert server.pid == pid, "served without a restart"
        url, _ = start_gateway(server.grpc_url, {"DEFAULT_MODEL": "volume"})
        with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
            yield client, server


def series(folder: Path, hu: np.ndarray) -> list[Path]:
    return make_ct_series(folder, hu, SPACING, shuffle=3)


def masks_of(body: Mapping[str, Any], shape: tuple[int, int, int]) -> np.ndarray:
    """``(categories, Z, Y, X)`` from the answer's polygons, z from each image's index."""
    names = [category["name"] for category in CATEGORIES]
    by_id = {  # the supercategory ("body") is a category of the answer too, and no label
        category["id"]: names.index(category["name"])
        for category in body["categories"]
        if category["name"] in names
    }
    objects = {obj["id"]: obj["category_ids"] for obj in body["objects"]}
    slice_of = {image["id"]: image["index"] for image in body["images"]}
    found = np.zeros((len(names), *shape), bool)
    for annotation in body["annotations"]:
        z = slice_of[annotation["image_id"]]
        painted = polygons_to_mask(annotation["segmentation"], shape[1:])
        for category in objects[annotation["object_id"]]:
            if category in by_id:
                found[by_id[category], z] |= painted
    return found


def as_polygons(masks: np.ndarray) -> np.ndarray:
    """What the answer's polygons can say of ``masks``: each slice's outlines, holes filled."""
    out = np.zeros_like(masks)
    for c, z in np.ndindex(masks.shape[:2]):
        if masks[c, z].any():
            out[c, z] = polygons_to_mask(mask_to_polygons(masks[c, z]), masks.shape[2:])
    return out


def test_a_dropped_in_model_agrees_with_monai_on_an_unseen_series(
    served: tuple[httpx.Client, LocalTriton], tmp_path: Path
) -> None:
    http, _ = served
    hu = phantom_ct(SHAPE, seed=11)
    response = http.post("/models/volume/invocations", **dicom_form(series(tmp_path, hu)))  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    found = masks_of(response.json(), SHAPE)
    expected = as_polygons(monai_pipeline(MODEL, hu, SPACING, MODEL.onnx()).labels)
    assert expected.any(axis=(1, 2, 3)).all(), "every category is in the series"
    agreement = float(np.mean(found == expected))
    assert agreement >= 0.999, f"labels agree on {agreement:.5%} of voxels"


def test_get_models_shows_the_grid_and_the_window(served: tuple[httpx.Client, LocalTriton]) -> None:
    http, _ = served
    info = http.get("/models/volume").json()
    assert info["task"] == "volumetric_segmentation"
    assert info["volume"]["spacing"] == [2.0, 1.5, 1.5]
    assert info["volume"]["sliding_window"]["roi"] == [8, 32, 32]


def refusal(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_a_2d_image_is_a_422_naming_the_volume_it_needs(
    served: tuple[httpx.Client, LocalTriton], tmp_path: Path
) -> None:
    http, _ = served
    (one,) = make_ct_series(tmp_path, phantom_ct((1, 64, 64)), SPACING)
    response = http.post("/invocations", **dicom_form([one]))  # type: ignore[arg-type]
    assert refusal(response) == (422, "volume_required")
    assert "[8, 32, 32]" in response.json()["error"]["message"]


def test_png_slices_are_a_422_for_a_model_with_a_spacing(
    served: tuple[httpx.Client, LocalTriton],
) -> None:
    http, _ = served
    files, images = [], []
    for z, plane in enumerate(phantom_ct((10, 64, 64)).clip(0, 255).astype(np.uint8)):
        buffer = io.BytesIO()
        Image.fromarray(plane).save(buffer, format="PNG")
        files.append(("files", (f"{z}.png", buffer.getvalue(), "image/png")))
        images.append({"id": f"i{z}", "file_name": f"{z}.png", "index": z})
    response = http.post("/invocations", files=files, data={"images": json.dumps(images)})
    assert refusal(response) == (422, "geometry_required")


def test_a_series_with_a_missing_slice_is_refused(
    served: tuple[httpx.Client, LocalTriton], tmp_path: Path
) -> None:
    http, _ = served
    paths = make_ct_series(tmp_path, phantom_ct((12, 64, 64)), SPACING)
    del paths[6]
    response = http.post("/invocations", **dicom_form(paths))  # type: ignore[arg-type]
    assert refusal(response) == (422, "inconsistent_series")


def test_a_volume_over_max_volume_voxels_is_a_413_before_any_patch(
    served: tuple[httpx.Client, LocalTriton], start_gateway: StartGateway, tmp_path: Path
) -> None:
    _, server = served
    url, _ = start_gateway(
        server.grpc_url, {"DEFAULT_MODEL": "volume", "MAX_VOLUME_VOXELS": "5000"}
    )
    paths = make_ct_series(tmp_path, phantom_ct((12, 64, 64)), SPACING)
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as http:
        response = http.post("/models/volume/invocations", **dicom_form(paths))  # type: ignore[arg-type]
        metrics = http.get("/metrics").text
    assert refusal(response) == (413, "volume_too_large")
    assert "MAX_VOLUME_VOXELS (5,000)" in response.json()["error"]["message"]
    assert 'gateway_progress_units_total{model="volume",unit="slices"} 12.0' in metrics
    assert 'gateway_progress_units_total{model="volume",unit="patches"' not in metrics


def test_the_example_model_segments_a_phantom_as_its_card_says(
    http: httpx.Client, tmp_path: Path
) -> None:
    """``chest_segmenter_3d`` from ``model_repository/``, as ``make run`` serves it, on a
    phantom series of 2 mm slices of 1.4 mm pixels (its grid is 2.5 x 2 x 2 mm)."""
    from training.metrics import dice
    from training.phantoms import phantom_volume

    volume = phantom_volume(
        np.random.default_rng(23), 120, 256, lesions=[18.0, 25.0], slice_thickness_mm=2.0
    )
    volume_spacing = volume.spacing_mm
    paths = make_ct_series(tmp_path, volume.hu, volume_spacing, shuffle=5)
    response = http.post("/models/chest_segmenter_3d/invocations", **dicom_form(paths))  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    body = response.json()
    names = {c["id"]: c["name"] for c in body["categories"]}
    slice_of = {image["id"]: image["index"] for image in body["images"]}
    objects = {obj["id"]: {names[i] for i in obj["category_ids"]} for obj in body["objects"]}
    found = {name: np.zeros(volume.hu.shape, bool) for name in ("lung", "nodule")}
    for annotation in body["annotations"]:
        for name in objects[annotation["object_id"]] & set(found):
            z = slice_of[annotation["image_id"]]
            found[name][z] |= polygons_to_mask(annotation["segmentation"], volume.hu.shape[1:])
    nodule = volume.lesion_labels > 0
    assert dice(found["lung"], volume.lung & ~nodule) >= 0.9
    assert dice(found["nodule"], nodule) >= 0.5
    nodules = [obj for obj in objects.values() if obj == {"nodule"}]
    assert len(nodules) >= 2, "instances: each nodule is an object of its own"
