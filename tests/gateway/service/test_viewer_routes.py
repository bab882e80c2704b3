"""The viewer's routes: the page and its files, the render route's contract and its limits.

The render route must show the stack the pipelines get, so most checks compare its PNGs with
:func:`read_images` windowed by hand; the readers' own tests cover what that stack holds.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import io
import json
import tomllib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
from PIL import Image
from starlette.applications import Starlette

from aicoco import AiImage
from gateway.app import create_app
from gateway.readers import ReadLimits, read_images
from gateway.schemas import WindowLevel
from gateway.settings import Settings
from gateway.viewer import ASSETS
from gateway.viewer.render import PRESETS, apply_window, auto_window
from tests.factories import RequestFiles, dicom_dataset, make_ct_series, nibabel_file, phantom_hu
from tests.gateway.service.test_app import (
    Catalog,
    EchoPipeline,
    TritonHealth,
    assert_error,
    leftovers,
    serving,
)

pytestmark = pytest.mark.anyio

REPOSITORY_ROOT = Path(__file__).resolve().parents[3]
LIMITS = ReadLimits(max_pixels_per_image=10**7, max_total_voxels=10**8)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    folder = tmp_path / "uploads"
    folder.mkdir()
    return Settings(
        upload_dir=folder,
        max_files=8,
        max_pixels_per_image=100 * 100,
        max_in_flight=1,
        max_queue=1,
        cpu_workers=1,
    )


def viewer_app(settings: Settings, pipeline: EchoPipeline | None = None) -> Starlette:
    catalog = Catalog({"lesion_classifier": pipeline or EchoPipeline()})
    return create_app(settings, triton=TritonHealth(), catalog=catalog)


@pytest.fixture
def pipeline() -> EchoPipeline:
    return EchoPipeline()


@pytest.fixture
async def client(settings: Settings, pipeline: EchoPipeline) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(viewer_app(settings, pipeline)) as client:
        yield client


def form(files: list[tuple[str, bytes]], entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "files": [("files", (name, content)) for name, content in files],
        "data": {"images": json.dumps(entries)},
    }


def entries_for(names: list[str]) -> list[dict[str, Any]]:
    return [{"id": f"e{i}", "file_name": name, "index": i} for i, name in enumerate(names)]


def decoded(png: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png))))


def expected_stack(
    tmp_path: Path, files: list[tuple[str, bytes]], entries: list[dict[str, Any]]
) -> np.ndarray:
    request = RequestFiles(tmp_path / "expected")
    for name, content in files:
        request.add(name, content)
    images = [AiImage.model_validate(entry) for entry in entries]
    pixels: np.ndarray = read_images(images, request.uploads, LIMITS).pixels
    return pixels


async def test_a_shuffled_ct_series_comes_back_in_geometric_order_with_its_entries(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    hu = phantom_hu((6, 40, 48))
    paths = make_ct_series(tmp_path / "series", hu, shuffle=3)
    files = [(path.name, path.read_bytes()) for path in sorted(paths)]
    entries = entries_for([name for name, _ in files])
    response = await client.post("/viewer/render?window=lung", **form(files, entries))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["depth"], body["height"], body["width"]) == (6, 40, 48)
    assert body["hounsfield"] is True and body["modality"] == "CT" and body["rgb"] is False
    assert body["window"] == {"center": -600.0, "width": 1500.0}
    by_name = {entry["file_name"]: entry["id"] for entry in entries}
    for z, rendered in enumerate(body["slices"]):
        # make_ct_series returns the paths in slice order: the z-th path is the z-th slice.
        assert rendered["file_name"] == paths[z].name
        assert rendered["image_id"] == by_name[paths[z].name]
        np.testing.assert_array_equal(
            decoded(rendered["png"]), apply_window(hu[z].astype(np.float32), PRESETS["lung"])
        )
    assert body["value_range"] == [float(hu.min()), float(hu.max())]


async def test_monochrome1_nifti_and_rgb_render_as_the_readers_read_them(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    stored = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096
    mono1 = dicom_dataset(stored, modality="CR", photometric="MONOCHROME1", bits_stored=12)
    buffer = io.BytesIO()
    mono1.save_as(buffer, enforce_file_format=True)
    rgb = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG")
    cases = [
        [("cr.dcm", buffer.getvalue())],
        [("anatomical.nii", nibabel_file("anatomical.nii").read_bytes())],
        [("photo.png", png.getvalue())],
    ]
    for files in cases:
        entries = entries_for([name for name, _ in files])
        response = await client.post("/viewer/render", **form(files, entries))
        assert response.status_code == 200, response.text
        body = response.json()
        stack = expected_stack(tmp_path / files[0][0], files, entries)
        assert body["depth"] == stack.shape[0]
        for z, rendered in enumerate(body["slices"]):
            picture = decoded(rendered["png"])
            if body["rgb"]:
                assert body["window"] is None
                np.testing.assert_array_equal(picture, stack[z])
            else:
                window = WindowLevel.model_validate(body["window"])
                assert window == auto_window(stack)
                np.testing.assert_array_equal(picture, apply_window(stack[z], window))
            # One entry for a whole volume: every slice names it, indexed by z.
            assert rendered["image_id"] == "e0"
            assert rendered["index"] == z


def test_windows() -> None:
    # Lung: -1350 is black, 150 white; beyond clip; NaN is black.
    ramp = np.array([[-1350.0, -1500.0, 150.0, 900.0, -1050.0, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(apply_window(ramp, PRESETS["lung"]), [[0, 0, 255, 255, 51, 0]])
    assert auto_window(np.zeros((1, 2, 2), np.uint8)) == WindowLevel(center=127.5, width=256)
    values = np.arange(100_000, dtype=np.int16).reshape(1, 100, 1000) % 1000
    window = auto_window(values)
    assert window.center == pytest.approx(499.5, abs=1)
    assert window.width == pytest.approx(990, abs=2)
    assert auto_window(np.full((1, 2, 2), np.nan, np.float32)).width == 1


async def test_a_bad_window_is_refused_before_the_body_is_read(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    files = [("a.png", b"not read")]
    for window in ["wide", "10", "10,0", "10,-5", "nan,400", "1,inf"]:
        response = await client.post(f"/viewer/render?window={window}", **form(files, []))
        error = assert_error(response, 400, "invalid_parameter")
        assert "lung" in error["message"] and "center,width" in error["message"]
    assert leftovers(settings.upload_dir) == []


async def test_render_applies_the_upload_and_reading_limits(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    names = [f"{i}.png" for i in range(settings.max_files + 1)]
    many = [(name, b"x") for name in names]
    assert_error(
        await client.post("/viewer/render", **form(many, entries_for(names))), 413, "too_many_files"
    )
    assert_error(await client.post("/viewer/render", content=b"x"), 415, "unsupported_media_type")
    unknown = await client.post("/viewer/render", **form([("a.png", b"x")], entries_for(["a.png"])))
    assert_error(unknown, 415, "unsupported_file_type")
    big = io.BytesIO()
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(big, format="PNG")
    large = [("big.png", big.getvalue())]
    assert_error(
        await client.post("/viewer/render", **form(large, entries_for(["big.png"]))),
        413,
        "image_too_large",
    )
    missing = await client.post("/viewer/render", **form([("a.png", b"x")], entries_for(["b.png"])))
    assert_error(missing, 422, "file_mismatch")
    assert leftovers(settings.upload_dir) == []


async def test_render_waits_for_an_inference_slot_like_an_invocation(
    client: httpx.AsyncClient, pipeline: EchoPipeline, settings: Settings
) -> None:
    """One slot, one queue place: with both taken by invocations, a render is refused too."""
    pipeline.gate = asyncio.Event()
    pipeline.entered = asyncio.Event()
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png, format="PNG")
    request = form([("a.png", png.getvalue())], entries_for(["a.png"]))
    first = asyncio.ensure_future(client.post("/invocations", **request))
    await pipeline.entered.wait()
    second = asyncio.ensure_future(client.post("/invocations", **request))
    for _ in range(200):
        if "gateway_queue_depth 1.0" in (await client.get("/metrics")).text:
            break
        await asyncio.sleep(0.01)
    busy = await client.post("/viewer/render", **request)
    assert_error(busy, 503, "server_busy")
    pipeline.gate.set()
    assert (await first).status_code == (await second).status_code == 200
    assert (await client.post("/viewer/render", **request)).status_code == 200
    assert leftovers(settings.upload_dir) == []


async def test_render_answers_fit_the_published_schema(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    paths = make_ct_series(tmp_path / "series", phantom_hu((3, 16, 16)))
    files = [(path.name, path.read_bytes()) for path in paths]
    response = await client.post(
        "/viewer/render", **form(files, entries_for([n for n, _ in files]))
    )
    document = (await client.get("/openapi.json")).json()
    assert {"/viewer", "/viewer/render"} <= set(document["paths"])
    wrapped = {"$ref": "#/components/schemas/Rendering", "components": document["components"]}
    jsonschema.validate(response.json(), wrapped)


async def test_the_page_and_its_files_are_served_from_the_package(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/viewer")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # Relative URLs only: the page works under a proxy's path prefix and loads nothing remote.
    assert 'src="viewer/viewer.js"' in page.text and 'href="viewer/viewer.css"' in page.text
    assert "http://" not in page.text and "https://" not in page.text
    script = await client.get("/viewer/viewer.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "https://" not in script.text and "http://" not in script.text
    assert (await client.get("/viewer/viewer.css")).status_code == 200
    for name in ["index.html", "nope.js", "..%2Fapp.py"]:
        assert_error(await client.get(f"/viewer/{name}"), 404, "not_found")


async def test_viewer_false_removes_its_routes(settings: Settings) -> None:
    async with serving(viewer_app(replace(settings, viewer=False))) as client:
        assert_error(await client.get("/viewer"), 404, "not_found")
        assert_error(await client.get("/viewer/viewer.js"), 404, "not_found")
        files = [("a.png", b"x")]
        response = await client.post("/viewer/render", **form(files, entries_for(["a.png"])))
        assert response.status_code == 404
        document = (await client.get("/openapi.json")).json()
        assert not any(path.startswith("/viewer") for path in document["paths"])


def test_the_package_data_ships_every_viewer_file() -> None:
    """A wheel (and so the image) holds what pyproject's package-data names: every static file."""
    project = tomllib.loads((REPOSITORY_ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["gateway"]
    static = REPOSITORY_ROOT / "gateway" / "viewer" / "static"
    shipped = sorted(path.name for path in static.iterdir())
    assert shipped == sorted(ASSETS)
    for name in shipped:
        relative = f"viewer/static/{name}"
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
