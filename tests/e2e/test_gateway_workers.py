"""``WORKERS=2``: two gateway processes on one port, metrics summed over both, a worker that
dies replaced, and SIGTERM stopping them all."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from gateway.server import STARTUP_S
from tests.e2e.conftest import GatewayProcess
from tests.factories import chest_png
from triton_local import LocalTriton
from triton_local.process import children_of

pytestmark = pytest.mark.e2e

MODEL = "lesion_classifier"
ANSWERED = re.compile(
    r'^gateway_requests_total\{method="POST",route="/models/\{name\}/invocations",'
    r'status="200"\} ([0-9.e+]+)$',
    re.M,
)


def workers_of(parent: int) -> list[int]:
    """The parent's live worker processes: its children that multiprocessing spawned."""
    found = []
    for pid in children_of(parent):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # exited while we looked
            continue
        if b"spawn_main" in command:
            found.append(pid)
    return sorted(found)


def wait_for(condition: str, check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{condition} within {timeout_s:g} s"
        time.sleep(0.2)


def answered(url: str) -> float:
    found = ANSWERED.search(httpx.get(f"{url}/metrics", timeout=10).text)
    return float(found.group(1)) if found else 0.0


def post(url: str, png: bytes) -> int:
    images = json.dumps([{"id": "image-1", "file_name": "chest.png", "index": 0}])
    response = httpx.post(
        f"{url}/models/{MODEL}/invocations",
        files=[("files", ("chest.png", png, "image/png"))],
        data={"images": images},
        timeout=60,
    )
    return response.status_code


def test_two_workers_share_the_port_and_their_metrics(triton: LocalTriton, tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, triton.grpc_url, {"WORKERS": "2"})
    try:
        gateway.wait_until_ready()
        parent = gateway.process.pid
        wait_for("two workers", lambda: len(workers_of(parent)) == 2)
        running = time.monotonic()  # both workers were started before this
        png = chest_png()
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: post(gateway.url, png), range(24)))
        assert statuses == [200] * 24
        # Whichever worker answers the scrape, it counts the requests of both.
        assert [answered(gateway.url) for _ in range(6)] == [24.0] * 6

        # A worker killed after its start-up is replaced, and the service keeps answering (one
        # that dies within STARTUP_S of starting stops the service instead).
        time.sleep(max(0.0, STARTUP_S + 1 - (time.monotonic() - running)))
        before = workers_of(parent)
        os.kill(before[0], signal.SIGKILL)
        wait_for(
            "a replacement worker",
            lambda: len(workers_of(parent)) == 2 and workers_of(parent) != before,
        )
        wait_for("readiness again", lambda: httpx.get(f"{gateway.url}/health/ready").is_success)
        assert post(gateway.url, png) == 200
        assert "starting another" in gateway.log_tail(200)
        workers = workers_of(parent)
    finally:
        gateway.stop()
    assert gateway.process.returncode == 0, gateway.log_tail()
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "a worker outlived SIGTERM"
    assert not any(gateway.upload_dir.iterdir())
