"""Two real Tritons behind one gateway: 127.0.0.1 and 127.0.0.2, the same port, the same models.

Under load both serve (each Triton's own metrics count its inferences); ``kill -9`` of one costs
at most the requests it held while the rest succeed; restarted, it takes traffic again; a model
loaded on only one of them (another repository) goes only there. The gateway is never restarted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODEL_REPOSITORY, StartTriton
from tests.e2e.conftest import StartGateway
from tests.factories import chest_png
from triton_local import LocalTriton, free_port

pytestmark = pytest.mark.e2e

TIMEOUT_S = 120.0
"""Bounds a request so a hung gateway fails the test instead of the run; not a measurement."""
CLIENTS = 4
BURST = 24


def repository(tmp_path: Path, name: str, models: list[str]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for model in models:
        shutil.copytree(MODEL_REPOSITORY / model, folder / model)
    return folder


def inferences(server: LocalTriton, model: str) -> int:
    """Successful inferences of ``model``, from the Triton's own metrics."""
    text = httpx.get(server.metrics_url, timeout=10).text
    pattern = rf'^nv_inference_request_success\{{[^}}]*model="{model}"[^}}]*\}} (\d+)'
    return sum(int(float(m)) for m in re.findall(pattern, text, flags=re.MULTILINE))


def post(client: httpx.Client, model: str) -> int:
    images = json.dumps([{"id": "a", "file_name": "chest.png", "index": 0}])
    try:
        response = client.post(
            f"/models/{model}/invocations",
            files=[("files", ("chest.png", chest_png()))],
            data={"images": images},
        )
    except httpx.TransportError:
        return 0
    return response.status_code


def burst(client: httpx.Client, model: str, count: int = BURST) -> list[int]:
    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(lambda _: post(client, model), range(count)))


def pair(start_triton: StartTriton, first: Path, second: Path) -> tuple[LocalTriton, LocalTriton]:
    """Tritons on 127.0.0.1 and 127.0.0.2, on one gRPC port."""
    port = free_port()
    return (
        start_triton(first, host="127.0.0.1", grpc_port=port),
        start_triton(second, host="127.0.0.2", grpc_port=port),
    )


def gateway_over(
    tritons: tuple[LocalTriton, LocalTriton], start_gateway: StartGateway
) -> httpx.Client:
    first, second = tritons
    env = {"TRITON_PROBE_S": "0.5", "MAX_IN_FLIGHT": str(CLIENTS)}
    url, _ = start_gateway(f"{first.grpc_url},{second.grpc_url}", env)
    return httpx.Client(base_url=url, timeout=TIMEOUT_S)


@pytest.fixture
def tritons(start_triton: StartTriton, tmp_path: Path) -> tuple[LocalTriton, LocalTriton]:
    """Two Tritons on the same repository."""
    shared = repository(tmp_path, "shared", ["lesion_classifier"])
    return pair(start_triton, shared, shared)


@pytest.fixture
def http(
    tritons: tuple[LocalTriton, LocalTriton], start_gateway: StartGateway
) -> Iterator[httpx.Client]:
    with gateway_over(tritons, start_gateway) as client:
        yield client


def test_both_serve_under_load(
    http: httpx.Client, tritons: tuple[LocalTriton, LocalTriton]
) -> None:
    first, second = tritons
    assert burst(http, "lesion_classifier") == [200] * BURST
    served = (inferences(first, "lesion_classifier"), inferences(second, "lesion_classifier"))
    assert sum(served) == BURST
    assert min(served) >= BURST // 4, f"one Triton took almost everything: {served}"
    listed = {m["name"]: m for m in http.get("/models").json()["models"]}
    assert listed["lesion_classifier"]["ready"]
    assert http.get("/health/ready").status_code == 200


def test_a_model_on_one_triton_goes_only_there(
    start_triton: StartTriton, start_gateway: StartGateway, tmp_path: Path
) -> None:
    first, second = pair(
        start_triton,
        repository(tmp_path, "a", ["lesion_classifier"]),
        repository(tmp_path, "b", ["lesion_classifier", "lung_segmenter"]),
    )
    with gateway_over((first, second), start_gateway) as client:
        assert burst(client, "lung_segmenter", 8) == [200] * 8
        assert inferences(second, "lung_segmenter") == 8
        assert burst(client, "lesion_classifier", 8) == [200] * 8
        assert min(inferences(t, "lesion_classifier") for t in (first, second)) >= 2
        listed = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert listed["lung_segmenter"]["ready"]


def test_a_killed_triton_costs_only_its_requests_and_rejoins(
    http: httpx.Client, tritons: tuple[LocalTriton, LocalTriton]
) -> None:
    first, second = tritons
    assert burst(http, "lesion_classifier", 8) == [200] * 8
    with ThreadPoolExecutor(CLIENTS + 1) as pool:
        running = pool.submit(burst, http, "lesion_classifier", 3 * BURST)
        time.sleep(1.0)
        assert first.pid is not None
        os.killpg(first.pid, signal.SIGKILL)
        statuses = running.result()
    failed = [status for status in statuses if status != 200]
    assert len(failed) <= CLIENTS, f"more failures than requests in flight: {failed}"
    # With the first one dead, every request succeeds on the second.
    before = inferences(second, "lesion_classifier")
    assert burst(http, "lesion_classifier") == [200] * BURST
    assert inferences(second, "lesion_classifier") - before == BURST
    assert http.get("/health/ready").status_code == 200
    # Restarted on the same address and port, it takes traffic again, the gateway untouched.
    first.reap()
    first.restart()
    deadline = time.monotonic() + 30
    while inferences(first, "lesion_classifier") == 0:
        assert time.monotonic() < deadline, "the restarted Triton never got a request"
        assert post(http, "lesion_classifier") == 200
    assert burst(http, "lesion_classifier") == [200] * BURST
