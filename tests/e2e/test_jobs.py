"""Jobs over HTTP against real gateways, a real local Triton and, for several gateways, a real
PostgreSQL: the volumetric example model on a 300-slice series as a job (progress, result,
cancellation, callbacks), key isolation, ``kill -9`` mid-job, two gateways on the shared store,
and 200 jobs across them.

Each job's "ran once" is counted twice over: by the gateways (``gateway_job_runs_total``, summed
over them) and by Triton itself (its inference statistics for the model).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from gateway.keys import new_key
from tests.e2e.conftest import GatewayProcess, StartGateway, dicom_form
from tests.factories import make_ct_series
from tests.postgres import fresh_database
from triton_local import LocalTriton

pytestmark = pytest.mark.e2e

TIMEOUT_S = 300.0
"""Bounds a request so a hung gateway fails the test instead of the run; not a measurement."""
VOLUME_MODEL = "chest_segmenter_3d"
FAST_MODEL = "lesion_classifier"
SECRET = "callback-secret"
ENDED = ("succeeded", "failed", "cancelled")


# ---- what the tests share ----


@dataclass
class Receiver:
    """A callback receiver on 127.0.0.1: every POST it got, headers and raw body."""

    server: ThreadingHTTPServer
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextlib.contextmanager
def receiving() -> Iterator[Receiver]:
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            received.append((headers, body))
            # /flaky answers 503 to a job's first attempt: the gateway must try again.
            job = headers.get("x-gateway-job")
            tries = sum(h.get("x-gateway-job") == job for h, _ in received)
            self.send_response(503 if self.path.startswith("/flaky") and tries == 1 else 204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(server, received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def allowed() -> Iterator[Receiver]:
    with receiving() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def forbidden() -> Iterator[Receiver]:
    with receiving() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A 300-slice CT phantom, one DICOM file per slice, 1 mm apart."""
    from training.phantoms import phantom_volume

    volume = phantom_volume(
        np.random.default_rng(7), 300, 256, lesions=[18.0], slice_thickness_mm=1.0
    )
    return make_ct_series(
        tmp_path_factory.mktemp("series"), volume.hu, volume.spacing_mm, shuffle=2
    )


@pytest.fixture(scope="module")
def jobs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jobs")


@pytest.fixture(scope="module")
def client(
    triton: LocalTriton, start_gateway: StartGateway, allowed: Receiver, jobs_dir: Path
) -> Iterator[httpx.Client]:
    """One gateway, callbacks allowed to the ``allowed`` receiver's port only."""
    url, _ = start_gateway(
        triton.grpc_url,
        {
            "JOBS_DIR": str(jobs_dir),
            "JOB_CALLBACK_HOSTS": f"127.0.0.1:{allowed.port}",
            "JOB_CALLBACK_SECRET": SECRET,
        },
    )
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as http:
        yield http


def png_form(name: str, seed: int) -> dict[str, Any]:
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64), dtype=np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format="PNG")
    entry = {
        "id": name,
        "file_name": f"{name}.png",
        "index": 0,
        "category_ids": None,
        "regressions": None,
    }
    return {
        "files": [("files", (f"{name}.png", encoded.getvalue(), "image/png"))],
        "data": {"images": json.dumps([entry])},
    }


def until_ended(
    http: httpx.Client, location: str, timeout_s: float = TIMEOUT_S
) -> list[dict[str, Any]]:
    """Every status seen while polling, the last one ended."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = http.get(location)
        assert status.status_code == 200, status.text
        seen.append(status.json())
        if seen[-1]["state"] in ENDED:
            return seen
        time.sleep(0.1)
    pytest.fail(f"{location} did not end in {timeout_s:g} s: {seen[-1]}")


def metric(http: httpx.Client, name: str, labels: str = "") -> float:
    """The sum of one metric's samples whose labels contain ``labels``."""
    total = 0.0
    for line in http.get("/metrics").text.splitlines():
        if line.startswith((name + "{", name + " ")) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def triton_inferences(triton: LocalTriton, model: str) -> int:
    stats = httpx.get(f"{triton.http_url}/v2/models/{model}/stats", timeout=30).json()
    return int(sum(s["inference_stats"]["success"]["count"] for s in stats["model_stats"]))


def canonical(document: Mapping[str, Any]) -> Any:
    """An AiCOCO answer with its random ids replaced by what they name, in a fixed order."""
    names = {c["id"]: c["name"] for c in document["categories"]}
    objects = {o["id"]: sorted(names[i] for i in o["category_ids"]) for o in document["objects"]}
    annotations = sorted(
        json.dumps([a["image_id"], objects[a["object_id"]], a["bbox"], a["segmentation"]])
        for a in document["annotations"]
    )
    images = sorted(
        json.dumps([i["id"], sorted(names[c] for c in i["category_ids"] or [])])
        for i in document["images"]
    )
    return images, annotations, sorted(json.dumps(o) for o in objects.values())


# ---- the volumetric example model on a 300-slice series ----


def test_a_job_shows_its_progress_advancing_and_answers_as_the_synchronous_call(
    client: httpx.Client, series: list[Path]
) -> None:
    submitted = client.post(f"/models/{VOLUME_MODEL}/jobs", **dicom_form(series))  # type: ignore[arg-type]
    assert submitted.status_code == 202, submitted.text
    location = submitted.headers["location"]
    assert submitted.json()["state"] == "queued" and location == submitted.json()["href"]
    seen = until_ended(client, location)
    assert seen[-1]["state"] == "succeeded", seen[-1]
    patches = [
        s["progress"]["done"] for s in seen if (s["progress"] or {}).get("unit") == "patches"
    ]
    assert len(set(patches)) >= 3, f"progress advancing: {patches}"
    assert patches == sorted(patches) and patches[-1] <= seen[-2]["progress"]["total"]
    stages = [s["stage"] for s in seen if s["state"] == "running"]
    assert "triton" in stages
    result = client.get(location + "/result")
    assert result.status_code == 200 and result.headers["content-type"] == "application/json"
    assert seen[-1]["result"]["bytes"] == len(result.content)
    synchronous = client.post(f"/models/{VOLUME_MODEL}/invocations", **dicom_form(series))  # type: ignore[arg-type]
    assert synchronous.status_code == 200, synchronous.text
    assert canonical(result.json()) == canonical(synchronous.json())


def test_a_seg_asked_of_a_job_is_its_result_as_the_synchronous_call_sends_it(
    client: httpx.Client, series: list[Path]
) -> None:
    import pydicom

    part = series[120:150]
    submitted = client.post(
        f"/models/{VOLUME_MODEL}/jobs",
        params={"output": "seg"},
        **dicom_form(part),  # type: ignore[arg-type]
    )
    assert submitted.status_code == 202, submitted.text
    assert until_ended(client, submitted.headers["location"])[-1]["state"] == "succeeded"
    result = client.get(submitted.headers["location"] + "/result")
    synchronous = client.post(
        f"/models/{VOLUME_MODEL}/invocations",
        params={"output": "seg"},
        **dicom_form(part),  # type: ignore[arg-type]
    )
    for answer in (result, synchronous):
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/dicom"
        assert answer.headers["content-disposition"].endswith(
            'filename="chest_segmenter_3d-seg.dcm"'
        )
    ours, theirs = (pydicom.dcmread(io.BytesIO(a.content)) for a in (result, synchronous))
    assert ours.SOPClassUID == theirs.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert ours.NumberOfFrames == theirs.NumberOfFrames
    assert ours.PixelData == theirs.PixelData, "the same masks, frame for frame"


def test_delete_mid_run_frees_its_slot_and_files_within_a_second(
    client: httpx.Client, series: list[Path], jobs_dir: Path
) -> None:
    submitted = client.post(f"/models/{VOLUME_MODEL}/jobs", **dicom_form(series))  # type: ignore[arg-type]
    location = submitted.headers["location"]
    job_id = submitted.json()["id"]
    deadline = time.monotonic() + TIMEOUT_S
    while (status := client.get(location).json())["state"] != "running" or not (
        status["progress"]
        and status["progress"]["unit"] == "patches"
        and status["progress"]["done"]
    ):
        assert time.monotonic() < deadline and status["state"] not in ENDED, status
        time.sleep(0.05)
    assert (jobs_dir / job_id / "input").is_dir()
    assert metric(client, "gateway_in_flight_requests") == 1
    started = time.monotonic()
    cancelled = client.delete(location)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    while metric(client, "gateway_in_flight_requests") or (jobs_dir / job_id / "input").exists():
        assert time.monotonic() - started < 1.0, "slot and files freed within 1 s"
        time.sleep(0.02)
    patches = metric(
        client, "gateway_progress_units_total", f'model="{VOLUME_MODEL}",unit="patches"'
    )
    time.sleep(1.0)
    after = metric(client, "gateway_progress_units_total", f'model="{VOLUME_MODEL}",unit="patches"')
    assert after == patches, "no patch after the cancellation"
    assert client.get(location).json()["state"] == "cancelled"
    refused = client.get(location + "/result")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "job_result_unavailable"


def test_a_callback_to_an_allowed_receiver_arrives_signed(
    client: httpx.Client, series: list[Path], allowed: Receiver
) -> None:
    submitted = client.post(
        f"/models/{VOLUME_MODEL}/jobs",
        params={"callback": allowed.url("/done?study=1")},
        **dicom_form(series),  # type: ignore[arg-type]
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    until_ended(client, submitted.headers["location"])
    deadline = time.monotonic() + 30
    while not any(h.get("x-gateway-job") == job_id for h, _ in allowed.received):
        assert time.monotonic() < deadline, "the callback arrived"
        time.sleep(0.05)
    ((headers, body),) = [(h, b) for h, b in allowed.received if h.get("x-gateway-job") == job_id]
    expected = hmac.new(
        SECRET.encode(), headers["x-gateway-timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    assert headers["x-gateway-signature"] == "sha256=" + expected
    assert abs(int(headers["x-gateway-timestamp"]) - time.time()) < 120
    final = json.loads(body)
    assert (final["id"], final["state"]) == (job_id, "succeeded")
    shown = client.get(submitted.headers["location"]).json()
    assert shown["callback"] == {
        "url": allowed.url("/done?study=1"),
        "state": "delivered",
        "attempts": 1,
    }


def test_a_refused_callback_is_tried_again(client: httpx.Client, allowed: Receiver) -> None:
    submitted = client.post("/jobs", params={"callback": allowed.url("/flaky")}, **png_form("f", 8))
    assert submitted.status_code == 202, submitted.text
    location, job_id = submitted.headers["location"], submitted.json()["id"]
    deadline = time.monotonic() + 60
    while (status := client.get(location).json())["callback"]["state"] != "delivered":
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["callback"]["attempts"] == 2
    tries = [h for h, _ in allowed.received if h.get("x-gateway-job") == job_id]
    assert len(tries) == 2 and all(h["x-gateway-signature"].startswith("sha256=") for h in tries)


def test_a_callback_to_a_host_not_allowed_is_never_attempted(
    client: httpx.Client, series: list[Path], allowed: Receiver, forbidden: Receiver
) -> None:
    for url in (
        forbidden.url(),  # the same host, a port not listed
        f"http://localhost:{allowed.port}/hook",  # the listed port, another name
        f"http://user@127.0.0.1:{allowed.port}/hook",
    ):
        refused = client.post(
            f"/models/{VOLUME_MODEL}/jobs",
            params={"callback": url},
            **dicom_form(series[:2]),  # type: ignore[arg-type]
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "callback_not_allowed"
    time.sleep(1.5)
    assert forbidden.received == []
    assert not any(
        "localhost" in h.get("host", "") or "user" in h.get("host", "") for h, _ in allowed.received
    )


def test_a_failed_job_holds_the_error_the_synchronous_call_answers(client: httpx.Client) -> None:
    """A PNG is valid input, so the job is accepted; the volumetric model then refuses it."""
    submitted = client.post(f"/models/{VOLUME_MODEL}/jobs", **png_form("flat", 5))
    assert submitted.status_code == 202, submitted.text
    failed = until_ended(client, submitted.headers["location"])[-1]
    synchronous = client.post(f"/models/{VOLUME_MODEL}/invocations", **png_form("flat", 5))
    assert failed["state"] == "failed"
    error = synchronous.json()["error"]
    assert failed["error"]["status"] == synchronous.status_code == 422
    assert (failed["error"]["code"], failed["error"]["message"]) == (
        error["code"],
        error["message"],
    )
    assert failed["error"]["details"] == error.get("details", {})
    assert failed["error"]["request_id"] == failed["id"]


def test_a_bad_submission_is_its_4xx_at_once_and_leaves_nothing(
    client: httpx.Client, jobs_dir: Path
) -> None:
    before = sorted(p.name for p in jobs_dir.iterdir())
    form = png_form("img", 6)
    form["data"] = {"images": json.dumps([{"id": "x", "file_name": "other.png", "index": 0}])}
    mismatched = client.post("/jobs", **form)
    assert (mismatched.status_code, mismatched.json()["error"]["code"]) == (422, "file_mismatch")
    unknown = client.post("/models/no_such_model/jobs", **png_form("img", 6))
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "model_not_found")
    bad_output = client.post("/jobs", params={"output": "seg"}, **png_form("img", 6))
    assert bad_output.status_code == 400, "a classifier has no SEG"
    assert sorted(p.name for p in jobs_dir.iterdir()) == before


def test_the_queue_is_bounded_and_shows_each_jobs_place(
    triton: LocalTriton, start_gateway: StartGateway, series: list[Path], tmp_path: Path
) -> None:
    url, _ = start_gateway(
        triton.grpc_url,
        {
            "JOBS_DIR": str(tmp_path / "jobs"),
            "JOB_WORKERS": "1",
            "JOB_MAX_QUEUED": "2",
        },
    )
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as http:
        running = http.post(f"/models/{VOLUME_MODEL}/jobs", **dicom_form(series))  # type: ignore[arg-type]
        _wait_running(http, running.headers["location"])
        queued = [http.post("/jobs", **png_form(f"q{k}", k)) for k in range(2)]
        assert [q.json()["queue_position"] for q in queued] == [0, 1]
        refused = http.post("/jobs", **png_form("q2", 2))
        assert (refused.status_code, refused.json()["error"]["code"]) == (503, "server_busy")
        assert refused.json()["error"]["details"]["stage"] == "jobs"
        assert "retry-after" in refused.headers
        # A synchronous request is served meanwhile: the job takes one slot of MAX_IN_FLIGHT.
        assert http.post("/invocations", **png_form("sync", 9)).status_code == 200
        assert http.delete(queued[0].headers["location"]).json()["state"] == "cancelled"
        assert http.get(queued[1].headers["location"]).json()["queue_position"] == 0
        http.delete(running.headers["location"])
        assert until_ended(http, queued[1].headers["location"])[-1]["state"] == "succeeded"


def test_an_ended_job_is_kept_for_its_retention_then_a_404(
    triton: LocalTriton, start_gateway: StartGateway, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs"
    url, _ = start_gateway(triton.grpc_url, {"JOBS_DIR": str(jobs), "JOB_RETENTION_S": "2"})
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as http:
        submitted = http.post("/jobs", **png_form("kept", 10))
        location, job_id = submitted.headers["location"], submitted.json()["id"]
        assert until_ended(http, location)[-1]["state"] == "succeeded"
        assert http.get(location + "/result").status_code == 200
        assert (jobs / job_id / "result").is_file()
        deadline = time.monotonic() + 30
        while (gone := http.get(location)).status_code == 200:
            assert time.monotonic() < deadline, "removed after JOB_RETENTION_S"
            time.sleep(0.2)
        assert (gone.status_code, gone.json()["error"]["code"]) == (404, "job_not_found")
        assert not (jobs / job_id).exists()


# ---- who sees a job ----


def test_another_keys_job_is_a_404(
    triton: LocalTriton, start_gateway: StartGateway, tmp_path: Path
) -> None:
    (key_a, entry_a), (key_b, entry_b) = new_key("a"), new_key("b")
    url, _ = start_gateway(
        triton.grpc_url, {"API_KEYS": f"{entry_a},{entry_b}", "JOBS_DIR": str(tmp_path / "jobs")}
    )
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as http:
        mine = {"Authorization": f"Bearer {key_a}"}
        theirs = {"X-API-Key": key_b}
        submitted = http.post("/jobs", headers=mine, **png_form("img", 1))
        assert submitted.status_code == 202, submitted.text
        location = submitted.headers["location"]
        assert http.get(location).status_code == 401
        for method, path in (
            ("GET", location),
            ("GET", location + "/result"),
            ("DELETE", location),
        ):
            answer = http.request(method, path, headers=theirs)
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "job_not_found"
        seen = until_ended(httpx.Client(base_url=url, headers=mine, timeout=TIMEOUT_S), location)
        assert seen[-1]["state"] == "succeeded"
        assert http.get(location + "/result", headers=mine).status_code == 200
        unknown = http.get("/jobs/" + "A" * 22, headers=mine)
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "job_not_found")
    # The send command carries the key it finds in GATEWAY_API_KEY, on every call of a job.
    image = tmp_path / "chest.png"
    image.write_bytes(png_form("chest", 4)["files"][0][1][1])
    command = [sys.executable, "-m", "gateway", "send", "--url", url, "--job", str(image)]
    environment = {k: v for k, v in os.environ.items() if k != "GATEWAY_API_KEY"}
    refused = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)
    assert refused.returncode == 1 and "unauthorized" in refused.stderr
    sent = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**environment, "GATEWAY_API_KEY": key_a},
        timeout=TIMEOUT_S,
    )
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["images"][0]["file_name"] == "chest.png"


# ---- kill -9 ----


Launch = Callable[[Mapping[str, str]], GatewayProcess]


@pytest.fixture
def launch(triton: LocalTriton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launch]:
    """Gateways the test kills or stops itself; any still running when it ends (a failed
    assertion between a start and a kill) is killed, never left behind."""
    started: list[GatewayProcess] = []

    def start(env: Mapping[str, str]) -> GatewayProcess:
        gateway = GatewayProcess(tmp_path_factory.mktemp("gw"), triton.grpc_url, env)
        started.append(gateway)
        gateway.wait_until_ready()
        return gateway

    yield start
    for gateway in started:
        if gateway.process.poll() is None:
            _kill(gateway)


def _wait_inputs_removed(jobs: Path, ids: list[str]) -> None:
    """An ended job's inputs go just after its row says it ended (a status may come between)."""
    deadline = time.monotonic() + 10
    while left := [job_id for job_id in ids if (jobs / job_id / "input").exists()]:
        assert time.monotonic() < deadline, f"ended jobs kept their inputs: {left}"
        time.sleep(0.05)


def _kill(gateway: GatewayProcess) -> None:
    """``kill -9``: the gateway gets no chance to hand anything back."""
    gateway.process.kill()
    gateway.process.wait()


def _wait_running(http: httpx.Client, location: str, attempt: int = 1) -> None:
    """Until the job's ``attempt``-th run reports progress (a row still says "running" for a
    gateway just killed, until its lease runs out)."""
    deadline = time.monotonic() + TIMEOUT_S
    while (
        (status := http.get(location).json())["state"] != "running"
        or not status["progress"]
        or status["attempts"] != attempt
    ):
        assert time.monotonic() < deadline and status["state"] not in ENDED, status
        time.sleep(0.05)


def test_kill_9_mid_job_then_a_restart_requeues_it_and_it_finishes_or_fails_with_its_code(
    launch: Launch, tmp_path_factory: pytest.TempPathFactory, series: list[Path]
) -> None:
    jobs = tmp_path_factory.mktemp("killed-jobs")
    env = {"JOBS_DIR": str(jobs), "JOB_LEASE_S": "2"}
    # Killed once: queued again, and it finishes.
    first = launch(env)
    with httpx.Client(base_url=first.url, timeout=TIMEOUT_S) as http:
        once = http.post(f"/models/{VOLUME_MODEL}/jobs", **dicom_form(series)).headers["location"]  # type: ignore[arg-type]
        _wait_running(http, once)
    _kill(first)
    second = launch(env)
    try:
        with httpx.Client(base_url=second.url, timeout=TIMEOUT_S) as http:
            seen = until_ended(http, once)
            assert seen[-1]["state"] == "succeeded", seen[-1]
            assert seen[-1]["attempts"] == 2, "queued again once"
            assert http.get(once + "/result").status_code == 200
            # Killed twice: failed, with the code that says so.
            submitted = http.post(f"/models/{VOLUME_MODEL}/jobs", **dicom_form(series))  # type: ignore[arg-type]
            twice = submitted.headers["location"]
            _wait_running(http, twice)
    finally:
        _kill(second)
    third = launch(env)
    with httpx.Client(base_url=third.url, timeout=TIMEOUT_S) as http:
        _wait_running(http, twice, attempt=2)
    _kill(third)
    fourth = launch(env)
    try:
        with httpx.Client(base_url=fourth.url, timeout=TIMEOUT_S) as http:
            seen = until_ended(http, twice)
            assert seen[-1]["state"] == "failed"
            assert seen[-1]["error"]["code"] == "job_interrupted"
            assert seen[-1]["error"]["status"] == 500
            _wait_inputs_removed(jobs, [twice.rsplit("/", 1)[1]])
            assert http.get(once).json()["state"] == "succeeded", "kept across restarts"
    finally:
        fourth.stop()
    assert fourth.process.returncode == 0, fourth.log_tail()


def test_a_gateway_stopped_with_sigterm_hands_its_job_back_and_the_run_does_not_count(
    launch: Launch, tmp_path_factory: pytest.TempPathFactory, series: list[Path]
) -> None:
    env = {"JOBS_DIR": str(tmp_path_factory.mktemp("stopped-jobs")), "JOB_LEASE_S": "3"}
    first = launch(env)
    with httpx.Client(base_url=first.url, timeout=TIMEOUT_S) as http:
        location = http.post(f"/models/{VOLUME_MODEL}/jobs", **dicom_form(series)).headers[  # type: ignore[arg-type]
            "location"
        ]
        _wait_running(http, location)
    first.stop()
    assert first.process.returncode == 0, first.log_tail()
    second = launch(env)
    try:
        with httpx.Client(base_url=second.url, timeout=TIMEOUT_S) as http:
            final = until_ended(http, location)[-1]
            assert (final["state"], final["attempts"]) == ("succeeded", 1), final["error"]
    finally:
        second.stop()


def test_nothing_is_lost_when_the_gateway_is_killed_at_any_moment(
    launch: Launch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Jobs submitted back to back while the gateway is killed (``kill -9``) at random moments,
    four times: the kills land between any two steps (receiving, the row, the claim, the run,
    the result, its row). Every job that was answered 202 ends: succeeded, or failed with
    ``job_interrupted``; none is lost, none is left running, no ended job keeps its inputs."""
    jobs = tmp_path_factory.mktemp("killed-jobs")
    env = {"JOBS_DIR": str(jobs), "JOB_LEASE_S": "1"}
    accepted: list[str] = []
    rng = random.Random(5)
    for _ in range(4):
        gateway = launch(env)
        stop = threading.Event()

        def submit(url: str = gateway.url, stop: threading.Event = stop) -> None:
            with httpx.Client(base_url=url, timeout=10) as http:
                while not stop.is_set():
                    try:
                        answer = http.post(
                            "/jobs", **png_form(f"img{len(accepted)}", len(accepted))
                        )
                    except httpx.TransportError:
                        return
                    if answer.status_code == 202:
                        accepted.append(answer.json()["id"])

        submitter = threading.Thread(target=submit)
        submitter.start()
        time.sleep(rng.uniform(0.5, 2.0))
        _kill(gateway)
        stop.set()
        submitter.join()
    assert len(accepted) > 20
    last = launch(env)
    try:
        with httpx.Client(base_url=last.url, timeout=TIMEOUT_S) as http:
            outcomes = {}
            for job_id in accepted:
                final = until_ended(http, f"/jobs/{job_id}")[-1]
                outcomes[job_id] = final["state"], (final["error"] or {}).get("code")
            _wait_inputs_removed(jobs, accepted)
        assert set(outcomes.values()) <= {("succeeded", None), ("failed", "job_interrupted")}
        assert sum(state == "succeeded" for state, _ in outcomes.values()) >= len(accepted) - 4
    finally:
        last.stop()


# ---- several gateways on the shared store ----


@pytest.fixture
def two_gateways(
    launch: Launch, tmp_path_factory: pytest.TempPathFactory, postgres_url: str
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    env = {
        "JOBS_DIR": str(tmp_path_factory.mktemp("shared-jobs")),
        "JOBS_DATABASE_URL": fresh_database(postgres_url),
    }
    gateways = [launch(env) for _ in range(2)]
    try:
        with (
            httpx.Client(base_url=gateways[0].url, timeout=TIMEOUT_S) as a,
            httpx.Client(base_url=gateways[1].url, timeout=TIMEOUT_S) as b,
        ):
            yield a, b
    finally:
        for gateway in gateways:
            gateway.stop()
        for gateway in gateways:
            assert gateway.process.returncode == 0, gateway.log_tail()


def runs(clients: tuple[httpx.Client, ...], model: str) -> float:
    return sum(metric(c, "gateway_job_runs_total", f'model="{model}"') for c in clients)


def test_a_job_submitted_to_one_gateway_is_polled_and_fetched_from_the_other_and_ran_once(
    two_gateways: tuple[httpx.Client, httpx.Client], triton: LocalTriton
) -> None:
    a, b = two_gateways
    inferences = triton_inferences(triton, FAST_MODEL)
    submitted = a.post("/jobs", **png_form("shared", 3))
    assert submitted.status_code == 202, submitted.text
    location = submitted.headers["location"]
    assert until_ended(b, location)[-1]["state"] == "succeeded"
    result = b.get(location + "/result")
    assert result.status_code == 200 and result.json()["images"][0]["id"] == "shared"
    assert runs(two_gateways, FAST_MODEL) == 1
    assert triton_inferences(triton, FAST_MODEL) - inferences == 1
    assert a.delete(location).status_code == 200
    assert b.get(location).status_code == 404


def test_200_jobs_at_once_across_two_gateways_each_run_and_fetched_exactly_once(
    two_gateways: tuple[httpx.Client, httpx.Client], triton: LocalTriton
) -> None:
    clients = two_gateways
    inferences = triton_inferences(triton, FAST_MODEL)
    count = 200

    async def submit_all() -> list[tuple[int, str]]:
        limits = httpx.Limits(max_connections=32)
        async with (
            httpx.AsyncClient(
                base_url=str(clients[0].base_url), limits=limits, timeout=TIMEOUT_S
            ) as a,
            httpx.AsyncClient(
                base_url=str(clients[1].base_url), limits=limits, timeout=TIMEOUT_S
            ) as b,
        ):

            async def one(k: int) -> tuple[int, str]:
                answer = await (a, b)[k % 2].post("/jobs", **png_form(f"job{k}", k))
                assert answer.status_code == 202, answer.text
                return k, answer.headers["location"]

            return await asyncio.gather(*(one(k) for k in range(count)))

    submitted = asyncio.run(submit_all())
    for k, location in submitted:
        other = clients[(k + 1) % 2]
        assert until_ended(other, location)[-1]["state"] == "succeeded"
        result = other.get(location + "/result")
        assert result.status_code == 200
        assert result.json()["images"][0]["id"] == f"job{k}", "each job's own answer"
    assert runs(clients, FAST_MODEL) == count
    assert triton_inferences(triton, FAST_MODEL) - inferences == count


# ---- the send command ----


def test_the_send_command_follows_a_job_and_ctrl_c_cancels_it(
    client: httpx.Client, series: list[Path], tmp_path: Path
) -> None:
    image = tmp_path / "chest.png"
    image.write_bytes(png_form("chest", 4)["files"][0][1][1])
    command = [sys.executable, "-m", "gateway", "send", "--url", str(client.base_url), "--job"]
    followed = subprocess.run(
        [*command, str(image)], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert followed.returncode == 0, followed.stderr
    assert json.loads(followed.stdout)["images"][0]["file_name"] == "chest.png"
    assert followed.stderr.strip().splitlines()[-1].endswith(": succeeded")
    # A long job, interrupted while it runs: the command cancels it.
    running = subprocess.Popen(
        [*command, "--model", VOLUME_MODEL, *map(str, series)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert running.stderr is not None
    lines = []
    for line in running.stderr:
        lines.append(line)
        if "patches" in line and " 0 of" not in line:
            break
    running.send_signal(signal.SIGINT)
    _, rest = running.communicate(timeout=60)
    assert running.returncode == 130, "".join(lines) + rest
    job_id = lines[0].split()[1].rstrip(":")
    assert client.get(f"/jobs/{job_id}").json()["state"] == "cancelled"
    assert f"job {client.base_url}/jobs/{job_id} cancelled" in rest
