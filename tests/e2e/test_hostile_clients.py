"""Clinical sizes and hostile clients, over real TCP with real clients (requests, httpx, raw
sockets) against the real server and a real Triton.

Each test is the regression test of one finding: a long series with findings far apart, early
refusals that wedged keep-alive connections, unparsable headers answered with an empty body,
bursts refused instead of served, slow uploads starving everyone, a killed Triton that nothing
restarted.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest
import requests

from tests.factories import chest_hu_plane, chest_png, make_ct_series, phantom_hu
from triton_local import LocalTriton, free_port
from triton_local.process import group_members

pytestmark = pytest.mark.e2e

StartGateway = Callable[[str, Mapping[str, str]], tuple[str, Path]]
"""The ``start_gateway`` fixture of tests/e2e/conftest.py."""
WAIT_S = 300.0
"""Bounds a request so a hung gateway fails the test instead of the run; not a measurement."""
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def entry(file_name: str, index: int = 0) -> dict[str, Any]:
    return {"id": f"image-{index}", "file_name": file_name, "index": index}


def chest_request() -> dict[str, Any]:
    return {
        "files": [("files", ("chest.png", chest_png(), "image/png"))],
        "data": {"images": json.dumps([entry("chest.png")])},
    }


@pytest.fixture(scope="module")
def gateway(triton: LocalTriton, start_gateway: StartGateway) -> tuple[str, Path]:
    """Default admission settings, a short upload window so that slow clients end quickly."""
    return start_gateway(triton.grpc_url, {"UPLOAD_IDLE_TIMEOUT_S": "2"})


def access_lines(upload_dir: Path, route: str) -> list[dict[str, Any]]:
    log = upload_dir.parent / "gateway.log"
    lines = []
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("logger") == "gateway.access" and record.get("route") == route:
            lines.append(record)
    return lines


def long_series_with_far_findings() -> tuple[bytes, list[int]]:
    """300 slices of 512 x 512 (a NIfTI in HU): lungs through every slice, one nodule near
    slice 50 in the right lung and one near slice 250 in the left, 200 slices apart."""
    slices = 300
    y, x = np.ogrid[0:512, 0:512]
    volume = np.repeat(chest_hu_plane()[np.newaxis], slices, axis=0)
    # Far apart in plane too (one in each lung): the nodule channel's bounding box is then wide
    # enough that it is cut into blocks of a few dozen slices, most of them empty.
    centres = {50: (180, 146), 250: (320, 366)}
    for z, (row, col) in centres.items():
        for dz in range(-4, 5):
            radius = np.sqrt(max(14.0**2 - (dz * 2.5) ** 2, 0.0))
            disc = (y - row) ** 2 + (x - col) ** 2 <= radius**2
            volume[z + dz][disc] = 30
    # NIfTI's first axes are x, y: (Z, H, W) -> (W, H, Z).
    image = nib.Nifti1Image(
        np.ascontiguousarray(volume.transpose(2, 1, 0)), np.diag([0.7, 0.7, 2.5, 1.0])
    )
    data: bytes = image.to_bytes()
    return gzip.compress(data, compresslevel=1), sorted(centres)


def test_a_long_series_with_findings_far_apart(gateway: tuple[str, Path]) -> None:
    """Before: 500 internal_error from the formatter (empty blocks of slices inside the nodule
    channel's bounding box)."""
    url, upload_dir = gateway
    content, centres = long_series_with_far_findings()
    images = [entry("ct.nii.gz", z) for z in range(300)]
    for index, image in enumerate(images):
        image["id"] = f"slice-{index}"
    response = httpx.post(
        f"{url}/models/lesion_segmenter_3d/invocations",
        files=[("files", ("ct.nii.gz", content, "application/gzip"))],
        data={"images": json.dumps(images)},
        timeout=WAIT_S,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    nodule = next(c["id"] for c in body["categories"] if c["name"] == "nodule")
    nodules = {o["id"] for o in body["objects"] if nodule in o["category_ids"]}
    slice_of = {image["id"]: int(image["id"].split("-")[1]) for image in body["images"]}
    found = sorted(
        slice_of[a["image_id"]] for a in body["annotations"] if a["object_id"] in nodules
    )
    assert found, "no nodule found"
    for centre in centres:
        assert any(abs(z - centre) <= 6 for z in found), (centre, found)
    assert list(upload_dir.iterdir()) == []


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_an_early_refusal_leaves_the_connection_usable(
    gateway: tuple[str, Path], client: str
) -> None:
    """5 MiB to an unknown model: 404 at once, and the next request on the same keep-alive
    connection answers (before: it timed out, the handler lived on for minutes)."""
    url, _ = gateway
    files = [("files", ("big.png", b"\0" * (5 * 1024 * 1024), "image/png"))]
    data = {"images": json.dumps([entry("big.png")])}
    if client == "requests":
        with requests.Session() as session:
            refused = session.post(
                f"{url}/models/nope/invocations", files=files, data=data, timeout=30
            )
            assert refused.status_code == 404
            assert refused.json()["error"]["code"] == "model_not_found"
            assert session.post(f"{url}/invocations", timeout=30, **chest_request()).ok
            manager = session.get_adapter(url).poolmanager  # type: ignore[attr-defined]
            # The pools container refuses plain iteration; keys() is its thread-safe way.
            opened = sum(manager.pools[key].num_connections for key in manager.pools.keys())  # noqa: SIM118
            assert opened == 1, "the refused connection was not reused"
        return
    with httpx.Client(base_url=url, timeout=30) as http:
        refused_x = http.post("/models/nope/invocations", files=files, data=data)
        assert refused_x.status_code == 404
        assert refused_x.json()["error"]["code"] == "model_not_found"
        assert http.post("/invocations", **chest_request()).status_code == 200


def test_a_refused_body_too_large_to_drain_closes_after_the_answer(
    gateway: tuple[str, Path],
) -> None:
    """40 MiB to an unknown model: the 404 arrives with Connection: close, and the client's
    next request works on a new connection."""
    url, _ = gateway
    with requests.Session() as session:
        refused = session.post(
            f"{url}/models/nope/invocations",
            files=[("files", ("big.png", b"\0" * (40 * 1024 * 1024)))],
            data={"images": "[]"},
            timeout=60,
        )
        assert refused.status_code == 404
        assert refused.headers["connection"] == "close"
        assert session.post(f"{url}/invocations", timeout=30, **chest_request()).ok


def test_a_content_length_that_is_not_a_number_is_a_json_400(gateway: tuple[str, Path]) -> None:
    url, _ = gateway
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"application/json" in head
    assert json.loads(body)["error"]["code"] == "malformed_request"


def test_a_burst_of_16_clients_is_served_in_turn(gateway: tuple[str, Path]) -> None:
    """16 concurrent clients, default settings (MAX_IN_FLIGHT 4): every request 200 (before:
    most were 503), with an access-log line each."""
    url, upload_dir = gateway
    before = len(access_lines(upload_dir, "/invocations"))

    def client(_: int) -> list[int]:
        with httpx.Client(base_url=url, timeout=WAIT_S) as http:
            return [http.post("/invocations", **chest_request()).status_code for _ in range(4)]

    with ThreadPoolExecutor(16) as pool:
        statuses = [status for batch in pool.map(client, range(16)) for status in batch]
    assert statuses == [200] * 64
    deadline = time.monotonic() + 10
    while len(access_lines(upload_dir, "/invocations")) - before < 64:
        assert time.monotonic() < deadline, "an access-log line is missing"
        time.sleep(0.1)
    assert list(upload_dir.iterdir()) == []


def test_past_the_queue_bound_the_answer_is_503_with_retry_after(
    triton: LocalTriton, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """One slot and one place in the queue, six concurrent 3D requests: those that find both
    taken get 503 server_busy with Retry-After at once; the others are served."""
    url, upload_dir = start_gateway(triton.grpc_url, {"MAX_IN_FLIGHT": "1", "MAX_QUEUE": "1"})
    paths = make_ct_series(tmp_path / "series", phantom_hu((32, 256, 256)))
    request: dict[str, Any] = {
        "files": [("files", (p.name, p.read_bytes(), "application/dicom")) for p in paths],
        "data": {"images": json.dumps([entry(p.name, z) for z, p in enumerate(paths)])},
    }

    def post(_: int) -> httpx.Response:
        return httpx.post(
            f"{url}/models/lesion_segmenter_3d/invocations", timeout=WAIT_S, **request
        )

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(post, range(6)))
    statuses = sorted(response.status_code for response in responses)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 2, statuses
    busy = [response for response in responses if response.status_code == 503]
    assert busy, statuses
    for response in busy:
        assert response.json()["error"]["code"] == "server_busy"
        assert int(response.headers["retry-after"]) >= 1
    assert list(upload_dir.iterdir()) == []


def _slow_upload(url: str, seconds: float) -> bytes:
    """A request whose body trickles in at about 1 KB/s; returns what the server answered."""
    host, port = url.removeprefix("http://").split(":")
    request = httpx.Request("POST", f"{url}/invocations", **chest_request())
    body = request.read()
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: {request.headers['content-type']}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    answer = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        deadline = time.monotonic() + seconds
        sent = 0
        try:
            while time.monotonic() < deadline and sent < len(body):
                sock.sendall(body[sent : sent + 100])
                sent += 100
                time.sleep(0.1)
            sock.settimeout(10)
            while chunk := sock.recv(65536):
                answer += chunk
        except (BrokenPipeError, ConnectionResetError):
            # The server answered and closed while the body was still coming: read the answer.
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except OSError:
                pass
    return answer


def test_slow_uploaders_hold_no_slot_and_get_408(gateway: tuple[str, Path]) -> None:
    """Eight clients trickling their bodies at 1 KB/s: everyone else is still served (before:
    six were enough to take every slot), each slow client gets 408 once its window ends, and
    nothing of theirs is left in UPLOAD_DIR."""
    url, upload_dir = gateway
    with ThreadPoolExecutor(8) as pool, httpx.Client(base_url=url, timeout=WAIT_S) as http:
        slow = [pool.submit(_slow_upload, url, 30.0) for _ in range(8)]
        time.sleep(0.5)
        statuses = [http.post("/invocations", **chest_request()).status_code for _ in range(10)]
        answers = [future.result() for future in slow]
    assert statuses == [200] * 10
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"upload_timeout"' in answer
        assert b"connection: close" in answer.lower()
    assert list(upload_dir.iterdir()) == []


def test_an_upload_that_stalls_holds_no_inference_slot(
    triton: LocalTriton, start_gateway: StartGateway
) -> None:
    """One inference slot, and a client that stops halfway through its body: the next request
    is served at once (before: it got 503, the stalled upload held the slot)."""
    url, upload_dir = start_gateway(
        triton.grpc_url, {"MAX_IN_FLIGHT": "1", "UPLOAD_IDLE_TIMEOUT_S": "2"}
    )
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=url, timeout=WAIT_S) as http:
        stalled = pool.submit(_slow_upload, url, 1.0)
        time.sleep(0.3)
        assert http.post("/invocations", **chest_request()).status_code == 200
        assert stalled.result().startswith(b"HTTP/1.1 408")
    assert list(upload_dir.iterdir()) == []


class _Run:
    """``python -m gateway run`` (what ``make run`` runs) in a subprocess."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "run.log"
        env = {**os.environ, "PORT": str(self.port), "LOG_FORMAT": "json"}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--log-dir", str(folder)],
                cwd=REPOSITORY_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health/ready", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def tritonserver(self) -> int | None:
        """The pid of the live ``tritonserver`` child, if there is one now."""
        # Children are listed per thread: a restarted server is the supervisor thread's.
        tasks = Path(f"/proc/{self.process.pid}/task")
        children = [pid for task in tasks.iterdir() for pid in _read(task / "children").split()]
        for pid in children:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_text()
            except OSError:  # exited meanwhile
                continue
            if "tritonserver" in command and group_members(int(pid)):
                return int(pid)
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # the thread ended meanwhile
        return ""


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[_Run]:
    run = _Run(tmp_path)
    try:
        yield run
    finally:
        run.stop()


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            pytest.fail(f"not {what} within {seconds:g} s")
        time.sleep(0.2)
    return time.monotonic() - started


def test_a_killed_triton_is_restarted_under_make_run(make_run: _Run) -> None:
    """``kill -9`` of tritonserver: its stubs are gone within 10 s, Triton is back within 30 s
    and the same gateway process answers 200 (before: a zombie, five live stubs, and 503 until
    a person restarted everything)."""
    run = make_run
    wait_until(run.ready, 180, "ready")
    server = run.tritonserver()
    assert server is not None, run.log.read_text()[-3000:]
    assert len(group_members(server)) > 1, "the stubs of the models are in the server's group"
    os.kill(server, signal.SIGKILL)
    wait_until(lambda: not group_members(server), 10, "rid of the stubs")
    wait_until(lambda: run.tritonserver() not in (None, server) and run.ready(), 30, "back")
    response = httpx.post(f"{run.url}/invocations", timeout=WAIT_S, **chest_request())
    assert response.status_code == 200, response.text
    assert run.process.poll() is None
    restarted = run.tritonserver()
    assert restarted is not None
    run.stop()
    assert run.process.returncode == 0, run.log.read_text()[-3000:]
    assert not group_members(restarted), "stopping left a process of the restarted Triton"
