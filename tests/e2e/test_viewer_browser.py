"""The viewer in a real headless Chromium, against the real gateway and the real local Triton.

Overlays are checked on screenshots, the way a person checks them: the canvas is shot with a
category shown and again with it toggled off, so the pixels that differ are exactly what that
category drew. They must cover the AiCOCO answer's mask (or trace its box), lean towards the
category's colour, and leave the rest of the picture alone. Screenshots are kept under
``test-artifacts/viewer/`` (git-ignored) for a person to look at.

Chromium is Debian's (``make test`` installs the ``chromium`` package when it runs as root on
Debian); Playwright drives that binary, it never downloads a browser. Without Chromium these
tests are skipped, and pytest's summary says why.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from aicoco import AiCOCOOutput
from aicoco.masks import polygons_to_mask
from aicoco.rle import encode
from tests.e2e.conftest import REPOSITORY_ROOT, StartGateway
from tests.factories import make_ct_series
from training.phantoms import LUNG_WINDOW, phantom_slice, phantom_volume, window_to_uint8
from triton_local import LocalTriton

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: `make venv` installs it"
)

ARTIFACTS = REPOSITORY_ROOT / "test-artifacts" / "viewer"
README_SCREENSHOT = REPOSITORY_ROOT / "docs" / "viewer-3d.png"
TIMEOUT_MS = 180_000
"""Bounds a run so a hung gateway fails the test instead of the run; not a measurement."""
CHROMIUM_FLAGS = [
    # As root in a container: no user namespaces for Chromium's sandbox.
    "--no-sandbox",
    "--disable-gpu",
    # No network but localhost here: background fetches would only fail, and slowly.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHANGED = 8
"""A channel difference above this is an overlay pixel (PNG and scaling noise stay below)."""


def chromium_binary() -> str:
    """``CHROMIUM`` or the system's ``chromium``, or a skip that says how to get one."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.skip(
            "Chromium is not installed: `make test` installs Debian's chromium package when it "
            "runs as root on Debian; elsewhere install Chromium or set CHROMIUM to its binary"
        )
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    binary = chromium_binary()
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=binary, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def viewer_url(triton: LocalTriton, start_gateway: StartGateway) -> str:
    url, _ = start_gateway(triton.grpc_url, {})
    return f"{url}/viewer"


@pytest.fixture
def page(browser: Any, viewer_url: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    opened.set_default_timeout(TIMEOUT_MS)
    opened.goto(viewer_url)
    opened.wait_for_selector("body[data-state=idle]")
    try:
        yield opened
    finally:
        context.close()
    assert not problems, problems


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """A 512 x 512 chest PNG with one 20 mm nodule, and a 32-slice CT series with one nodule."""
    folder = tmp_path_factory.mktemp("viewer-inputs")
    chest = phantom_slice(np.random.default_rng(7), 512, lesions=[20.0])
    png = folder / "chest.png"
    Image.fromarray(window_to_uint8(chest.hu, *LUNG_WINDOW)).save(png)
    volume = phantom_volume(
        np.random.default_rng(5), slices=32, size=256, lesions=[25.0], slice_thickness_mm=2.5
    )
    series = make_ct_series(folder / "series", volume.hu, shuffle=11)
    nifti = folder / "volume.nii.gz"
    # (Z, H, W) rows and columns as a NIfTI stores them: x (columns) first, slices last.
    nib.save(nib.Nifti1Image(np.transpose(volume.hu, (2, 1, 0)), np.eye(4)), nifti)
    # In slice order; the names are shuffled, so the viewer must order them by geometry.
    return {"png": [png], "series": series, "nifti": [nifti]}


# Driving the page.


def run_model(page: Any, model: str, files: Sequence[Path] | Path) -> dict[str, Any]:
    """Pick the model and the files (or a folder, through the folder picker), run it, and
    return the AiCOCO document the page downloads."""
    page.select_option("#model", model)
    if isinstance(files, Path):
        page.set_input_files("#folder", str(files))
    else:
        page.set_input_files("#files", [str(path) for path in files])
    wait_for(page, "images")
    page.click("#run")
    wait_for(page, "ready")
    return downloaded(page)


def wait_for(page: Any, state: str) -> None:
    page.wait_for_selector(f"body[data-state={state}], body[data-state=error]")
    if page.get_attribute("body", "data-state") == "error":
        pytest.fail(f"the viewer shows an error: {page.text_content('#error')}")


def downloaded(page: Any) -> dict[str, Any]:
    with page.expect_download() as event:
        page.click("#download")
    document: dict[str, Any] = json.loads(Path(event.value.path()).read_text())
    AiCOCOOutput.model_validate(document)
    return document


def shot(page: Any, name: str | None = None) -> np.ndarray:
    """The canvas as RGB pixels; saved under test-artifacts when named."""
    png = page.locator("#view").screenshot()
    if name is not None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"{name}.png").write_bytes(png)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def toggle(page: Any, category_id: str) -> None:
    page.click(f"#categories input[data-category-id='{category_id}']")


def drawn_shapes(page: Any) -> int:
    return int(page.get_attribute("#view", "data-shapes"))


def current_image_id(page: Any) -> str:
    return str(page.get_attribute("#view", "data-image-id"))


def go_to_slice(page: Any, z: int) -> None:
    page.eval_on_selector(
        "#slice", "(e, z) => { e.value = z; e.dispatchEvent(new Event('input')); }", z
    )
    assert int(page.get_attribute("#view", "data-z")) == z


# What the document says should be drawn.


def categories_of(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {category["id"]: category for category in document["categories"]}


def display_category(document: Mapping[str, Any], object_id: str) -> str:
    """The object's most specific category, as the viewer colours it."""
    obj = next(o for o in document["objects"] if o["id"] == object_id)
    own = [categories_of(document)[i] for i in obj["category_ids"]]
    parents = {c.get("supercategory_id") for c in own}
    return str(next(c for c in own if c["id"] not in parents)["id"])


def annotations_on(document: Mapping[str, Any], image_id: str) -> list[dict[str, Any]]:
    return [a for a in document["annotations"] if a["image_id"] == image_id]


def shapes_of(annotations: Sequence[Mapping[str, Any]]) -> int:
    count = 0
    for annotation in annotations:
        count += len(annotation["bbox"] or [])
        segmentation = annotation["segmentation"]
        count += len(segmentation) if isinstance(segmentation, list) else int(bool(segmentation))
    return count


def mask_of(
    document: Mapping[str, Any], image_id: str, category_id: str, size: tuple[int, int]
) -> np.ndarray:
    mask = np.zeros(size, bool)
    for annotation in annotations_on(document, image_id):
        if display_category(document, annotation["object_id"]) == category_id:
            mask |= polygons_to_mask(annotation["segmentation"], size)
    return mask


def on_screen(mask: np.ndarray, screen: tuple[int, int]) -> np.ndarray:
    """An image-sized mask at the canvas's size (nearest neighbour)."""
    rows = (np.arange(screen[0]) * mask.shape[0] / screen[0]).astype(int)
    cols = (np.arange(screen[1]) * mask.shape[1] / screen[1]).astype(int)
    return mask[np.ix_(rows, cols)]


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.abs(before - after).max(axis=-1) > CHANGED
    return result


def rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], np.int16)


def check_mask_overlay(
    shown: np.ndarray, hidden: np.ndarray, expected: np.ndarray, colour: str
) -> None:
    """The toggled pixels fill ``expected`` (on screen) in ``colour`` and nothing far from it."""
    assert expected.any(), "nothing expected on this slice: the test chose a wrong slice"
    margin = 3
    inside = ndimage.binary_erosion(expected, iterations=margin)
    outside = ~ndimage.binary_dilation(expected, iterations=margin)
    diff = changed(shown, hidden)
    assert diff[inside].mean() >= 0.97, f"only {diff[inside].mean():.1%} of the mask is drawn"
    assert diff[outside].mean() <= 0.002, f"{diff[outside].mean():.2%} drawn outside the mask"
    target = rgb(colour)
    closer = np.abs(shown - target).sum(-1) < np.abs(hidden - target).sum(-1)
    assert closer[inside].mean() >= 0.97, "the overlay is not in the category's colour"


# The five example models.


def test_2d_segmentation_draws_each_lung_in_its_colour(
    page: Any, inputs: dict[str, list[Path]]
) -> None:
    document = run_model(page, "lung_segmenter", inputs["png"])
    image_id = document["images"][0]["id"]
    assert current_image_id(page) == image_id
    assert drawn_shapes(page) == shapes_of(annotations_on(document, image_id)) >= 2
    shown = shot(page, "lung_segmenter")
    screen = shown.shape[:2]
    categories = categories_of(document)
    drawn = {display_category(document, a["object_id"]) for a in document["annotations"]}
    assert {categories[c]["name"] for c in drawn} == {"left_lung", "right_lung"}
    for category_id in sorted(drawn):
        toggle(page, category_id)
        hidden = shot(page)
        toggle(page, category_id)
        expected = on_screen(mask_of(document, image_id, category_id, (512, 512)), screen)
        check_mask_overlay(shown, hidden, expected, categories[category_id]["color"])
    # Both off: nothing drawn, the picture as rendered.
    for category_id in drawn:
        toggle(page, category_id)
    assert drawn_shapes(page) == 0


def test_detection_traces_the_box_and_the_threshold_hides_it(
    page: Any, inputs: dict[str, list[Path]]
) -> None:
    document = run_model(page, "lesion_detector", inputs["png"])
    assert document["annotations"], "the detector found nothing in the phantom"
    assert drawn_shapes(page) == len(document["annotations"])
    shown = shot(page, "lesion_detector")
    scale = shown.shape[1] / 512
    best = max(document["objects"], key=lambda o: o["confidence"])
    box = next(a["bbox"][0] for a in document["annotations"] if a["object_id"] == best["id"])
    page.eval_on_selector(
        "#threshold",
        "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }",
        min(1.0, math.floor(best["confidence"] * 100) / 100 + 0.01),
    )
    assert drawn_shapes(page) == 0
    hidden = shot(page)
    diff = changed(shown, hidden)
    x1, y1, x2, y2 = (round(v * scale) for v in box)
    edges = np.concatenate(
        [
            diff[y1 - 1 : y1 + 2, x1 + 3 : x2 - 3].max(0),
            diff[y2 - 2 : y2 + 1, x1 + 3 : x2 - 3].max(0),
            diff[y1 + 3 : y2 - 3, x1 - 1 : x1 + 2].max(1),
            diff[y1 + 3 : y2 - 3, x2 - 2 : x2 + 1].max(1),
        ]
    )
    assert edges.mean() >= 0.97, f"only {edges.mean():.1%} of the box outline is drawn"
    assert not diff[y1 + 4 : y2 - 4, x1 + 4 : x2 - 4].any(), "the box is drawn filled"
    outside = np.ones_like(diff)
    outside[y1 - 4 : y2 + 4, x1 - 4 : x2 + 4] = False
    assert not diff[outside].any(), "something is drawn outside the box"
    target = rgb(categories_of(document)[best["category_ids"][0]]["color"])
    ys, xs = np.nonzero(diff)
    assert (np.abs(shown[ys, xs] - target).sum(-1) <= 6).mean() >= 0.97, "not the box's colour"


@pytest.mark.parametrize(
    ("model", "kind"), [("lesion_classifier", "categories"), ("lesion_size_regressor", "values")]
)
def test_image_level_results_are_listed_beside_the_image(
    page: Any, inputs: dict[str, list[Path]], model: str, kind: str
) -> None:
    document = run_model(page, model, inputs["png"])
    assert drawn_shapes(page) == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{model}.png"))
    lines = [line.strip() for line in page.locator("#image-results li").all_text_contents()]
    image = document["images"][0]
    if kind == "categories":
        names = {c["id"]: c["name"] for c in document["categories"]}
        assert [names[i] for i in image["category_ids"]] == ["nodule", "large_nodule"]
        assert lines == ["nodule", "large_nodule"]
        return
    regressions = {r["id"]: r for r in document["regressions"]}
    assert len(lines) == len(image["regressions"]) == 2
    for line, item in zip(lines, image["regressions"], strict=True):
        regression = regressions[item["regression_id"]]
        name, _, rest = line.partition(": ")
        value, _, unit = rest.partition(" ")
        assert (name, unit) == (regression["name"], regression["unit"])
        assert float(value) == pytest.approx(item["value"], rel=1e-3)


def test_3d_segmentation_scrolls_through_the_series_with_its_overlays(
    page: Any, inputs: dict[str, list[Path]]
) -> None:
    series = inputs["series"]
    document = run_model(page, "lesion_segmenter_3d", series[0].parent)
    depth = len(series)
    assert page.get_attribute("#slice", "max") == str(depth - 1)
    # The slices come in geometric order: slice z is the z-th file of the series.
    image_ids = {image["file_name"]: image["id"] for image in document["images"]}
    go_to_slice(page, 0)
    page.keyboard.press("End")
    assert page.get_attribute("#view", "data-z") == str(depth - 1)
    page.keyboard.press("Home")
    assert page.get_attribute("#view", "data-z") == "0"
    page.locator("#view").hover()
    page.mouse.wheel(0, 120)
    page.wait_for_selector("#view[data-z='1']")
    page.keyboard.press("ArrowDown")
    assert page.get_attribute("#view", "data-z") == "2"
    categories = categories_of(document)
    nodule = next(c["id"] for c in document["categories"] if c["name"] == "nodule")
    with_nodule = sorted(
        z
        for z, path in enumerate(series)
        if any(
            display_category(document, a["object_id"]) == nodule
            for a in annotations_on(document, image_ids[path.name])
        )
    )
    assert with_nodule, "the 3D model found no nodule in the phantom"
    pictures = {}
    for z in (0, with_nodule[len(with_nodule) // 2]):
        go_to_slice(page, z)
        image_id = image_ids[series[z].name]
        assert current_image_id(page) == image_id
        assert drawn_shapes(page) == shapes_of(annotations_on(document, image_id))
        pictures[z] = shot(page)
    z = with_nodule[len(with_nodule) // 2]
    assert changed(pictures[0], pictures[z]).mean() > 0.01, "scrolling did not change the slice"
    page.select_option("#window", "lung")
    wait_for(page, "ready")
    assert (page.input_value("#center"), page.input_value("#width")) == ("-600", "1500")
    assert page.get_attribute("#view", "data-z") == str(z)
    shown = shot(page, "lesion_segmenter_3d")
    page.screenshot(path=str(ARTIFACTS / "viewer-3d.png"))
    toggle(page, nodule)
    hidden = shot(page)
    toggle(page, nodule)
    expected = mask_of(document, image_ids[series[z].name], nodule, (256, 256))
    check_mask_overlay(
        shown, hidden, on_screen(expected, shown.shape[:2]), categories[nodule]["color"]
    )


def test_the_volumetric_model_draws_its_labels_on_the_original_slices(
    page: Any, inputs: dict[str, list[Path]]
) -> None:
    """The patch-based model works on its own grid; the viewer gets labels on every slice as
    sent, drawn as the document says."""
    series = inputs["series"]
    assert not page.is_visible("#download") and not page.is_visible("#cancel")
    page.evaluate(
        """() => {
          window.statuses = [];
          const status = document.getElementById("status");
          new MutationObserver(() => window.statuses.push(status.textContent)).observe(
            status, {childList: true, characterData: true, subtree: true});
        }"""
    )
    document = run_model(page, "chest_segmenter_3d", series[0].parent)
    shown = page.evaluate("() => window.statuses")
    assert any(text.startswith("Model chest_segmenter_3d: ") for text in shown), (
        f"the job's state is shown while it runs: {shown}"
    )
    assert not page.is_visible("#cancel")
    assert page.get_attribute("#slice", "max") == str(len(series) - 1)
    image_ids = {image["file_name"]: image["id"] for image in document["images"]}
    drawn = [z for z, path in enumerate(series) if annotations_on(document, image_ids[path.name])]
    assert len(drawn) >= len(series) // 2, "the lungs span most slices"
    for z in (drawn[0], drawn[len(drawn) // 2]):
        go_to_slice(page, z)
        image_id = image_ids[series[z].name]
        assert current_image_id(page) == image_id
        assert drawn_shapes(page) == shapes_of(annotations_on(document, image_id))


def test_the_readme_shows_the_viewer_on_the_3d_model() -> None:
    """docs/viewer-3d.png is a copy of the page screenshot the 3D test saves (viewer-3d.png)."""
    picture = Image.open(README_SCREENSHOT)
    assert (picture.format, picture.size) == ("PNG", (1400, 1000))
    assert "](docs/viewer-3d.png)" in (REPOSITORY_ROOT / "README.md").read_text()


# Saved results and errors.


def test_a_saved_result_opens_without_running_a_model(
    page: Any, inputs: dict[str, list[Path]], tmp_path: Path
) -> None:
    document = run_model(page, "lung_segmenter", inputs["png"])
    ran = shot(page)
    image_id = document["images"][0]["id"]
    # The same result written as RLE masks (iscrowd 1), as lossless segmenters answer.
    lossless = json.loads(json.dumps(document))
    for annotation in lossless["annotations"]:
        mask = polygons_to_mask(annotation["segmentation"], (512, 512))
        annotation["segmentation"] = encode(mask).model_dump()
        annotation["iscrowd"] = 1
    for name, saved in (("polygons", document), ("rle", lossless)):
        page.reload()
        page.wait_for_selector("body[data-state=idle]")
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(saved))
        page.set_input_files("#result-file", str(path))
        page.wait_for_selector("body[data-state=waiting-images]")
        assert "chest.png" in page.text_content("#status")
        page.set_input_files("#files", [str(p) for p in inputs["png"]])
        wait_for(page, "ready")
        assert current_image_id(page) == image_id
        assert drawn_shapes(page) == shapes_of(saved["annotations"])
        opened = shot(page, f"saved-{name}")
        if name == "polygons":
            np.testing.assert_array_equal(opened, ran)
        categories = categories_of(saved)
        for category_id in {display_category(saved, a["object_id"]) for a in saved["annotations"]}:
            toggle(page, category_id)
            hidden = shot(page)
            toggle(page, category_id)
            expected = on_screen(
                mask_of(document, image_id, category_id, (512, 512)), opened.shape[:2]
            )
            check_mask_overlay(opened, hidden, expected, categories[category_id]["color"])
        assert downloaded(page) == saved


def test_service_errors_are_shown_as_their_message(page: Any, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.png"
    bogus.write_text("these are notes, not an image")
    page.set_input_files("#files", str(bogus))
    page.wait_for_selector("body[data-state=error]")
    message = page.text_content("#error")
    assert "'notes.png' is not a file type this gateway reads" in message
    assert "unsupported_file_type" in message
    not_json = tmp_path / "result.json"
    not_json.write_text("{ nope")
    page.set_input_files("#result-file", str(not_json))
    page.locator("#error", has_text="result.json is not JSON").wait_for()


def test_a_nifti_volume_gets_one_entry_per_slice(page: Any, inputs: dict[str, list[Path]]) -> None:
    """One file of many slices: the page sends one entry per slice, so results land per slice."""
    document = run_model(page, "lesion_segmenter_3d", inputs["nifti"])
    depth = int(page.get_attribute("#slice", "max")) + 1
    assert depth == 32
    assert sorted((i["file_name"], i["index"]) for i in document["images"]) == [
        ("volume.nii.gz", z) for z in range(depth)
    ]
    by_index = {image["index"]: image["id"] for image in document["images"]}
    annotated = sorted({i for i, id_ in by_index.items() if annotations_on(document, id_)})
    assert annotated, "the 3D model found nothing in the NIfTI volume"
    for z in (annotated[0], annotated[-1]):
        go_to_slice(page, z)
        assert current_image_id(page) == by_index[z]
        assert drawn_shapes(page) == shapes_of(annotations_on(document, by_index[z])) > 0


def test_series_level_results_and_a_dropped_file(page: Any, inputs: dict[str, list[Path]]) -> None:
    document = run_model(page, "lesion_classifier", inputs["series"])
    names = {c["id"]: c["name"] for c in document["categories"]}
    series_lines = page.locator("#series-results li").all_text_contents()
    assert [line.strip() for line in series_lines] == [
        names[i] for i in document["meta"]["category_ids"]
    ]
    assert "nodule" in series_lines
    page.reload()
    page.wait_for_selector("body[data-state=idle]")
    png = inputs["png"][0]
    page.evaluate(
        """([name, bytes]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, { type: "image/png" }));
            document.body.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer }));
        }""",
        [png.name, list(png.read_bytes())],
    )
    wait_for(page, "images")
    assert page.text_content("#chosen") == "Images: chest.png"
