"""FLaVor service scripts, changed only in their imports and ``define_inference_network``, run
through ``InferAPP`` against the real Triton and answer as the built-in pipelines do.

Each script in ``examples/flavor/`` is its ``original/`` FLaVor version with those lines
changed (checked here line by line); it is started as a user starts it (``python script.py``,
``PORT`` and ``TRITON_URL`` from the environment) and gets the same request as the gateway's
built-in pipeline for the same model. Two call a torch module in their originals (a classifier
on a tensor; a 3D segmenter through MONAI's sliding window), and call the Triton model the same
way once ported.
"""

from __future__ import annotations

import ast
import difflib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from aicoco.masks import polygons_to_mask
from tests.e2e.conftest import TIMEOUT_S, GatewayProcess, dicom_form
from tests.e2e.test_flavor_requests import flavor_request
from tests.factories import make_ct_series
from training.phantoms import LUNG_WINDOW, phantom_slice, phantom_volume, window_to_uint8
from triton_local import LocalTriton

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "flavor"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))


def network_lines(source: str) -> set[int]:
    """0-based numbers of the lines a port may change: the module docstring, the imports and
    ``define_inference_network``."""
    tree = ast.parse(source)
    spans = [tree.body[0]]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) or (
            isinstance(node, ast.FunctionDef) and node.name == "define_inference_network"
        ):
            spans.append(node)
    return {n for node in spans for n in range(node.lineno - 1, node.end_lineno or node.lineno)}


@pytest.mark.parametrize("name", SCRIPTS)
def test_only_imports_and_the_network_changed(name: str) -> None:
    assert len(SCRIPTS) == 5
    original = (EXAMPLES / "original" / name).read_text()
    ported = (EXAMPLES / name).read_text()
    allowed_before, allowed_after = network_lines(original), network_lines(ported)
    before, after = original.splitlines(), ported.splitlines()
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for n in range(a0, a1):
            assert n in allowed_before, f"original/{name}:{n + 1} changed: {before[n]!r}"
        for n in range(b0, b1):
            assert n in allowed_after, f"{name}:{n + 1} changed: {after[n]!r}"
    network = "torch.load(" if "_torch_" in name or "_3d_" in name else "ort.InferenceSession("
    assert network in original and "TritonSession(" in ported
    assert "flavor.serve" in original and "flavor.serve" not in ported


@pytest.fixture(scope="module")
def scripts(
    triton: LocalTriton, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, httpx.Client]]:
    """Every ported script, serving against the session's Triton."""
    started: list[GatewayProcess] = []
    clients: dict[str, httpx.Client] = {}
    try:
        for name in SCRIPTS:
            folder = tmp_path_factory.mktemp(name.removesuffix(".py"))
            (folder / "records").mkdir()
            process = GatewayProcess(
                folder,
                triton.grpc_url,
                {"RECORDS_DIR": str(folder / "records"), "LOG_LEVEL": "INFO"},
                command=[str(EXAMPLES / name)],
            )
            started.append(process)
            process.wait_until_ready()
            clients[name] = httpx.Client(base_url=process.url, timeout=TIMEOUT_S)
        yield clients
    finally:
        for client in clients.values():
            client.close()
        for process in reversed(started):
            process.stop()
        for process in started:
            assert process.process.returncode == 0, process.log_tail()


def chest_png(lesions: list[float], seed: int) -> bytes:
    hu = phantom_slice(np.random.default_rng(seed), size=512, lesions=lesions).hu
    buffer = io.BytesIO()
    Image.fromarray(window_to_uint8(hu, *LUNG_WINDOW)).save(buffer, format="PNG")
    return buffer.getvalue()


def names_of(answer: dict[str, Any], ids: list[str] | None) -> list[str]:
    by_id = {c["id"]: c["name"] for c in answer["categories"]}
    return sorted(by_id[i] for i in ids or [])


@pytest.mark.parametrize("script", ["lesion_classifier_app.py", "lesion_classifier_torch_app.py"])
@pytest.mark.parametrize(("lesions", "seed"), [([], 1), ([6.0], 2), ([14.0, 5.0], 3)])
def test_image_script_answers_like_the_builtin(
    scripts: dict[str, httpx.Client],
    http: httpx.Client,
    lesions: list[float],
    seed: int,
    script: str,
) -> None:
    """The ONNX Runtime script and the torch one (``self.network(tensor)``) alike."""
    png = chest_png(lesions, seed)
    images = [{"id": "slice", "file_name": "chest.png", "index": 0}]
    data = {"images": json.dumps(images)}
    files = [("files", ("chest.png", png))]
    ported = scripts[script].post("/invocations", data=data, files=files)
    builtin = http.post("/models/lesion_classifier/invocations", data=data, files=files)
    assert ported.status_code == builtin.status_code == 200, ported.text
    mine, theirs = ported.json(), builtin.json()
    assert names_of(mine, mine["images"][0]["category_ids"]) == names_of(
        theirs, theirs["images"][0]["category_ids"]
    )
    assert [c["name"] for c in mine["categories"]] == [c["name"] for c in theirs["categories"]]


def test_tabular_script_answers_like_the_builtin(
    scripts: dict[str, httpx.Client], http: httpx.Client
) -> None:
    fields, files = flavor_request("tabular_cls")
    ported = scripts["wine_quality_app.py"].post("/invocations", data=fields, files=files)
    builtin = http.post("/models/wine_quality_classifier/invocations", data=fields, files=files)
    assert ported.status_code == builtin.status_code == 200, ported.text
    mine, theirs = ported.json(), builtin.json()
    assert set(mine) == set(theirs)
    assert mine["tables"] == theirs["tables"] and mine["meta"] == theirs["meta"]
    mine_records = records(scripts["wine_quality_app.py"], mine)
    their_records = records(http, theirs)
    assert [names_of(mine, r["category_ids"]) for r in mine_records] == [
        names_of(theirs, r["category_ids"]) for r in their_records
    ]
    assert [r["row_indexes"] for r in mine_records] == [[0], [1], [2]]


def records(client: httpx.Client, answer: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.get(answer["records"]["href"])
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def test_hybrid_script_answers_like_the_builtin(
    scripts: dict[str, httpx.Client], http: httpx.Client
) -> None:
    fields, files = flavor_request("hybrid")
    ported = scripts["lesion_risk_app.py"].post("/invocations", data=fields, files=files)
    builtin = http.post("/models/lesion_risk_hybrid/invocations", data=fields, files=files)
    assert ported.status_code == builtin.status_code == 200, ported.text
    mine, theirs = ported.json(), builtin.json()
    assert set(mine) == set(theirs)
    assert names_of(mine, mine["images"][0]["category_ids"]) == names_of(
        theirs, theirs["images"][0]["category_ids"]
    )
    assert mine["images"][0]["table_ids"] == ["table_001"]


def test_the_3d_torch_script_labels_as_the_zero_code_pipeline(
    scripts: dict[str, httpx.Client], http: httpx.Client, tmp_path: Path
) -> None:
    """MONAI's transforms and sliding_window_inference over the Triton model, in the script,
    against the gateway's own volumetric pipeline of the same model: the same labels on at
    least 99.9 % of the voxels."""
    volume = phantom_volume(
        np.random.default_rng(9), 48, 256, lesions=[20.0], slice_thickness_mm=2.5
    )
    paths = make_ct_series(tmp_path, volume.hu, volume.spacing_mm, shuffle=6)
    ported = scripts["chest_segmenter_3d_app.py"].post("/invocations", **dicom_form(paths))  # type: ignore[arg-type]
    builtin = http.post("/models/chest_segmenter_3d/invocations", **dicom_form(paths))  # type: ignore[arg-type]
    assert ported.status_code == builtin.status_code == 200, ported.text
    shape = (volume.hu.shape[0], volume.hu.shape[1], volume.hu.shape[2])
    mine, theirs = labels_of(ported.json(), shape), labels_of(builtin.json(), shape)
    assert theirs["lung"].any() and theirs["nodule"].any()
    for name in ("lung", "nodule"):
        agreement = float(np.mean(mine[name] == theirs[name]))
        assert agreement >= 0.999, f"{name}: the labels agree on {agreement:.5%} of voxels"


def labels_of(answer: dict[str, Any], shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Masks by category name, z from each image's index."""
    names = {c["id"]: c["name"] for c in answer["categories"]}
    objects = {o["id"]: [names[i] for i in o["category_ids"]] for o in answer["objects"]}
    slice_of = {image["id"]: image["index"] for image in answer["images"]}
    found = {name: np.zeros(shape, bool) for name in ("lung", "nodule")}
    for annotation in answer["annotations"]:
        for name in objects[annotation["object_id"]]:
            if name in found:
                z = slice_of[annotation["image_id"]]
                found[name][z] |= polygons_to_mask(annotation["segmentation"], (shape[1], shape[2]))
    return found


def test_a_script_refuses_the_wrong_kind_of_request(scripts: dict[str, httpx.Client]) -> None:
    data = {"images": json.dumps([{"id": "a", "file_name": "a.png", "index": 0}])}
    files = [("files", ("a.png", chest_png([], 1)))]
    response = scripts["wine_quality_app.py"].post("/invocations", data=data, files=files)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "wrong_input_kind"


def test_without_triton_url_a_script_starts_its_own_triton(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``python script.py`` alone, as on a laptop: InferAPP starts a local Triton on
    model_repository/ (as ``make run``), serves, and stops both on SIGTERM."""
    folder = tmp_path_factory.mktemp("alone")
    (folder / "records").mkdir()
    process = GatewayProcess(
        folder,
        "",
        {"TRITON_URL": "", "RECORDS_DIR": str(folder / "records")},
        command=[str(EXAMPLES / "wine_quality_app.py")],
    )
    try:
        process.wait_until_ready()
        fields, files = flavor_request("tabular_cls")
        response = httpx.post(f"{process.url}/invocations", data=fields, files=files, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["records"]["rows"] == 3
    finally:
        process.stop()
    assert process.process.returncode == 0, process.log_tail()
    assert "Triton is up" in process.log_path.read_text()
