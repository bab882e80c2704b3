"""The service against a real local Triton, over real HTTP: the wire formats, health, metrics,
request ids, concurrency (``/ping`` during a long 3D request).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import nibabel as nib
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from tests.factories import chest_hu_plane, chest_png
from triton_local import LocalTriton, free_port

pytestmark = pytest.mark.e2e

MODELS = {
    "lesion_classifier": "classification",
    "lesion_size_regressor": "regression",
    "lesion_detector": "detection",
    "lung_segmenter": "segmentation",
    "lesion_segmenter_3d": "segmentation",
}
STAGES = ("parse", "read", "preprocess", "triton", "postprocess", "format")
StartGateway = Callable[[str, Mapping[str, str]], tuple[str, Path]]
"""The ``start_gateway`` fixture of tests/e2e/conftest.py."""
WAIT_S = 300.0
"""Upper bound for conditions polled below; reaching it is a failure, not a measurement."""


@pytest.fixture(scope="module")
def gateway(triton: LocalTriton, start_gateway: StartGateway) -> tuple[str, Path]:
    url, upload_dir = start_gateway(triton.grpc_url, {"MAX_IN_FLIGHT": "4"})
    return url, upload_dir


@pytest.fixture(scope="module")
def url(gateway: tuple[str, Path]) -> str:
    return gateway[0]


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=WAIT_S) as client:
        yield client


def ct_dicom() -> bytes:
    return Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()


def entry(file_name: str, index: int = 0, image_id: str = "") -> dict[str, Any]:
    return {
        "id": image_id or f"image-{index}",
        "file_name": file_name,
        "index": index,
        "category_ids": None,
        "regressions": None,
    }


def metric(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}(?:\{{{re.escape(wanted)}\}})? (\S+)$" if labels else None
    for line in text.splitlines():
        if pattern is None:
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        elif match := re.match(pattern, line):
            return float(match.group(1))
    return None


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition; the bound only keeps a broken gateway from hanging the run."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def leftovers(upload_dir: Path) -> list[str]:
    return sorted(path.name for path in upload_dir.iterdir())


def test_a_flavor_client_request(http: httpx.Client, gateway: tuple[str, Path]) -> None:
    """Exactly what FLaVor's clients send: repeated ``files``, ``images`` and ``meta`` as JSON."""
    images = [entry("ct.dcm", 0, "AAAAAAAAAAAAAAAAAAAA1")]
    response = http.post(
        "/invocations",
        files=[("files", ("ct.dcm", ct_dicom(), "application/dicom"))],
        data={"images": json.dumps(images), "meta": json.dumps({"study": "x"})},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) >= {"images", "annotations", "categories", "regressions", "objects", "meta"}
    assert [image["id"] for image in body["images"]] == ["AAAAAAAAAAAAAAAAAAAA1"]
    assert [category["name"] for category in body["categories"]][:2] == ["nodule", "large_nodule"]
    assert leftovers(gateway[1]) == []
    document = http.get("/openapi.json").json()
    answer_schema = {
        "$ref": "#/components/schemas/AiCOCOOutput",
        "components": document["components"],
    }
    jsonschema.Draft202012Validator(answer_schema).validate(body)


def test_several_files_in_one_flavor_request(http: httpx.Client) -> None:
    png = chest_png()
    names = ["slice-1.png", "slice-2.png"]
    response = http.post(
        "/models/lung_segmenter/invocations",
        files=[("files", (name, png, "image/png")) for name in names],
        data={"images": json.dumps([entry(name, i) for i, name in enumerate(names)])},
    )
    assert response.status_code == 200, response.text
    assert [image["file_name"] for image in response.json()["images"]] == names


@pytest.mark.parametrize("as_file", [False, True], ids=["text", "json-file"])
def test_the_data_variant(http: httpx.Client, as_file: bool) -> None:
    data = json.dumps({"images": [entry("chest.png")], "meta": {"source": "seed README"}})
    parts: list[tuple[str, Any]] = [("files", ("chest.png", chest_png(), "image/png"))]
    if as_file:
        parts.append(("data", ("data.json", data.encode(), "application/json")))
        response = http.post(
            "/invocations", files=parts, data={"metadata": json.dumps({"site": "A"})}
        )
    else:
        response = http.post(
            "/invocations", files=parts, data={"data": data, "metadata": json.dumps({"site": "A"})}
        )
    assert response.status_code == 200, response.text
    assert [image["file_name"] for image in response.json()["images"]] == ["chest.png"]


def test_health(http: httpx.Client) -> None:
    ping = http.get("/ping")
    assert ping.status_code == 204
    assert ping.content == b""
    assert http.get("/health/live").status_code == 200
    ready = http.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_models_lists_the_five_examples(http: httpx.Client) -> None:
    listed = http.get("/models").json()
    assert listed["default_model"] == "lesion_classifier"
    models = {model["name"]: model for model in listed["models"]}
    assert {name: models[name]["task"] for name in MODELS} == MODELS
    for name in MODELS:
        assert models[name]["ready"] is True
        assert models[name]["categories"] or models[name]["regressions"]
    one = http.get("/models/lesion_detector").json()
    assert one["task"] == "detection"
    assert http.get("/models/no_such_model").json()["error"]["code"] == "model_not_found"


def test_request_ids(http: httpx.Client) -> None:
    assert http.get("/ping", headers={"X-Request-ID": "trace-123"}).headers["x-request-id"] == (
        "trace-123"
    )
    response = http.post("/invocations", headers={"X-Request-ID": "trace-456"}, content=b"{}")
    assert response.headers["x-request-id"] == "trace-456"
    assert response.json()["error"]["request_id"] == "trace-456"
    generated = http.get("/ping").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)


def test_metrics_have_the_stage_histograms(http: httpx.Client) -> None:
    response = http.post(
        "/invocations",
        files=[("files", ("chest.png", chest_png(), "image/png"))],
        data={"images": json.dumps([entry("chest.png")])},
    )
    assert response.status_code == 200, response.text
    text = http.get("/metrics").text
    for stage in STAGES:
        count = metric(
            text, "gateway_stage_duration_seconds_count", model="lesion_classifier", stage=stage
        )
        assert count is not None and count >= 1, stage
    assert metric(text, "gateway_requests_total", method="POST", route="/invocations", status="200")
    assert metric(text, "gateway_in_flight_requests") == 0


def ct_volume(slices: int) -> bytes:
    """A CT-like NIfTI volume in Hounsfield units: air around a body with two dark lungs."""
    volume = np.repeat(chest_hu_plane().T[:, :, np.newaxis], slices, axis=2)
    image = nib.Nifti1Image(volume, np.diag([0.7, 0.7, 2.5, 1.0]))
    data: bytes = image.to_bytes()
    return data


def test_ping_answers_during_a_long_3d_request(
    http: httpx.Client, url: str, gateway: tuple[str, Path]
) -> None:
    slices = 48
    volume = ct_volume(slices)
    images = [entry("volume.nii", z, f"slice-{z}") for z in range(slices)]

    def long_request() -> httpx.Response:
        with httpx.Client(base_url=url, timeout=WAIT_S) as client:
            return client.post(
                "/models/lesion_segmenter_3d/invocations",
                files=[("files", ("volume.nii", volume, "application/octet-stream"))],
                data={"images": json.dumps(images)},
            )

    def parsed() -> float:
        text = http.get("/metrics").text
        count = metric(
            text, "gateway_stage_duration_seconds_count", model="lesion_segmenter_3d", stage="parse"
        )
        return count or 0.0

    before = parsed()
    with ThreadPoolExecutor(max_workers=1) as pool:
        long: Future[httpx.Response] = pool.submit(long_request)
        wait_for(lambda: parsed() > before or long.done(), "the long request to be parsed")
        ping = http.get("/ping")
        answered_first = not long.done()
        response = long.result()
    assert ping.status_code == 204
    assert answered_first, "/ping answered only after the long request finished"
    assert response.status_code == 200, response.text
    assert len(response.json()["images"]) == slices
    assert leftovers(gateway[1]) == []


def test_a_client_that_hangs_up_abandons_its_request(
    http: httpx.Client, url: str, gateway: tuple[str, Path]
) -> None:
    """The connection closes while the 3D model runs: the gateway stops the pipeline (no
    ``format`` stage), frees the slot and the folder, and counts a 499."""
    slices = 96
    images = [entry("volume.nii", z, f"slice-{z}") for z in range(slices)]
    request = httpx.Request(
        "POST",
        f"{url}/models/lesion_segmenter_3d/invocations",
        files=[("files", ("volume.nii", ct_volume(slices), "application/octet-stream"))],
        data={"images": json.dumps(images)},
    )
    body = request.read()
    head = (
        f"POST {request.url.raw_path.decode()} HTTP/1.1\r\nHost: {request.url.netloc.decode()}\r\n"
        f"Content-Type: {request.headers['content-type']}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    route = "/models/{name}/invocations"

    def count(name: str, **labels: str) -> float:
        return metric(http.get("/metrics").text, name, **labels) or 0.0

    def stage(name: str) -> float:
        return count(
            "gateway_stage_duration_seconds_count", model="lesion_segmenter_3d", stage=name
        )

    parsed, formatted = stage("parse"), stage("format")
    abandoned = count("gateway_requests_total", method="POST", route=route, status="499")
    with socket.create_connection((request.url.host, request.url.port or 80)) as connection:
        connection.sendall(head.encode() + body)
        wait_for(lambda: stage("parse") > parsed, "the request to be parsed")
    wait_for(
        lambda: (
            count("gateway_requests_total", method="POST", route=route, status="499") > abandoned
        ),
        "the gateway to see the client leave",
    )
    assert stage("format") == formatted, "the pipeline ran to the end for nobody"
    assert count("gateway_in_flight_requests") == 0
    assert leftovers(gateway[1]) == []
    assert http.get("/ping").status_code == 204


def test_the_send_command(url: str, tmp_path: Path) -> None:
    files = [tmp_path / "chest-1.png", tmp_path / "chest-2.png"]
    for path in files:
        path.write_bytes(chest_png())
    command = [sys.executable, "-m", "gateway", "send", *map(str, files), "--url", url]
    result = subprocess.run(
        [*command, "--model", "lesion_size_regressor", "--field", 'meta={"site": "A"}'],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert [image["file_name"] for image in answer["images"]] == ["chest-1.png", "chest-2.png"]
    assert answer["regressions"]
    failed = subprocess.run(
        [*command, "--model", "no_such_model"],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert failed.returncode == 1
    assert "model_not_found" in failed.stderr


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc: Linux, like the local Triton itself)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.add(child)
            pending.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_run_serves_the_examples_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """``make run``: local Triton plus the gateway; SIGINT leaves no process behind."""
    port = free_port()
    log = tmp_path / "run.log"
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "UPLOAD_DIR": str(tmp_path)}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--log-dir", str(tmp_path / "run")],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    started: set[int] = set()
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/health/ready", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, "`python -m gateway run` to be ready")
        models = httpx.get(f"{url}/models", timeout=30).json()["models"]
        assert {model["name"] for model in models} >= set(MODELS)
        started = descendants(process.pid)
        assert started, "Triton should run as a child of `gateway run`"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=WAIT_S) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    survivors = [pid for pid in started if alive(pid)]
    assert survivors == [], log.read_text()
    text = log.read_text()
    assert f"http://127.0.0.1:{port}" in text
    assert "tritonserver.log" in text
