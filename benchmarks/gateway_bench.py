"""The gateway next to the in-process baseline, and a CT series through the 3D segmenter.

Two measurements (``python -m benchmarks gateway``):

1. 2D classification of a 512 x 512 PNG with a closed-loop client at concurrency 1, 8 and 32:
   the in-process baseline (:mod:`benchmarks.baseline`: the same model, preprocessing and
   AiCOCO document inside one uvicorn process) and the gateway with a local Triton and default
   settings take turns at each level, so only one is loaded at a time and a change in the
   machine's speed during the run (other tenants) reaches both; the best of two rounds counts.
   Each side's requests/s, p50, p99 and CPU milliseconds per request (the baseline's process;
   the gateway's plus Triton's with its backend stubs), the ratios against the targets, and
   Triton's average dynamic batch at concurrency 8 (inferences / executions, its own counts).
2. A CT-like DICOM series (300 slices of 512 x 512 by default) through the 3D segmenter:
   seconds per stage (from the gateway's own ``/metrics``), time outside Triton against inside,
   and the gateway's peak memory, read from the kernel (``VmHWM`` after resetting it through
   ``/proc/PID/clear_refs``), above its idle resident size, against the raw pixel bytes.

Every server runs as its own process, so its CPU time and memory are its own.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as grpcsync
from PIL import Image

from tests.factories import make_ct_series
from training.phantoms import LUNG_WINDOW, phantom_slice, phantom_volume, window_to_uint8
from triton_local import LocalTriton, free_port
from triton_local.process import children_of, group_members

ROOT = Path(__file__).resolve().parent.parent
CLASSIFIER = "lesion_classifier"
SEGMENTER_3D = "lesion_segmenter_3d"
STAGES = ("parse", "read", "preprocess", "triton", "postprocess", "format")
CONCURRENCY = (1, 8, 32)
THROUGHPUT_TARGET = 0.8
"""Gateway / baseline requests per second, at concurrency 8 and 32."""
P99_TARGET = 1.25
"""Gateway / baseline p99, at concurrency 8 and 32."""
P50_MARGIN_MS = 3.0
"""Gateway p50 at most the baseline's plus this, at concurrency 1."""
CPU_TARGET = 1.3
"""Whole-service CPU per request, gateway + Triton / baseline."""
BATCH_TARGET = 2.0
"""Triton's average dynamic batch at concurrency 8 is above this."""
SERIES_MEMORY_TARGET = 3.0


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000


async def _load(send: Callable[[], Awaitable[None]], requests: int, concurrency: int) -> LoadResult:
    """``requests`` calls of ``send`` spread over ``concurrency`` workers, after a warm-up."""
    for _ in range(concurrency):
        await send()
    latencies: list[float] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await send()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(requests, time.perf_counter() - start, latencies)


def _png() -> bytes:
    """A 512 x 512 chest slice with one nodule, lung-windowed, as PNG."""
    hu = phantom_slice(np.random.default_rng(7), size=512, lesions=[14.0]).hu
    buffer = io.BytesIO()
    Image.fromarray(window_to_uint8(hu, *LUNG_WINDOW)).save(buffer, format="PNG")
    return buffer.getvalue()


async def _post(url: str, path: str, png: bytes, requests: int, concurrency: int) -> LoadResult:
    """The closed loop: ``concurrency`` clients, each posting the PNG as soon as it has its
    answer, on kept-alive connections, the way FLaVor's clients send it."""
    images = json.dumps([{"id": "bench-image-0000000001", "file_name": "slice.png", "index": 0}])
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def send() -> None:
            response = await client.post(
                path,
                files=[("files", ("slice.png", png, "image/png"))],
                data={"images": images},
            )
            response.raise_for_status()

        return await _load(send, requests, concurrency)


@contextmanager
def baseline_process() -> Iterator[tuple[str, int]]:
    """``python -m benchmarks.baseline`` on a free port, until it answers."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.baseline", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until(process, lambda: _answers(f"{url}/ping"), "baseline")
        yield url, process.pid
    finally:
        _stop(process)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).is_success
    except httpx.TransportError:
        return False


def _wait_until(process: subprocess.Popen[bytes], ready: Callable[[], bool], name: str) -> None:
    deadline = time.monotonic() + 60
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"the {name} exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {name} did not become ready within 60 s")
        time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def local_triton(workdir: Path, repository: Path = ROOT / "model_repository") -> LocalTriton:
    """The example models (or ``repository``) on a local Triton on free ports, its log in
    ``workdir``."""
    return LocalTriton(
        repository,
        grpc_port=0,
        http_port=0,
        metrics_port=0,
        log_file=workdir / "triton.log",
    )


@contextmanager
def gateway_process(
    grpc_url: str, upload_dir: Path, settings: Mapping[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """``python -m gateway serve`` on a free port, with its default settings but ``settings``."""
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "TRITON_URL": grpc_url,
        "DEFAULT_MODEL": CLASSIFIER,
        "LOG_LEVEL": "WARNING",
        "UPLOAD_DIR": str(upload_dir),
        **(settings or {}),
    }
    process = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        ready = f"{url}/health/ready"
        _wait_until(process, lambda: _answers(ready), "gateway")
        yield url, process.pid
    finally:
        _stop(process)


def status_kib(pid: int, field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    if match is None:
        raise RuntimeError(f"/proc/{pid}/status has no {field}")
    return int(match.group(1))


@dataclass(frozen=True)
class Measured:
    """One series through the gateway, as the benchmarks measure it."""

    response: httpx.Response
    seconds: float
    idle_kib: int
    """The gateway's resident size before the request."""
    peak_kib: int
    """Its highest resident size during the request (VmHWM, reset just before)."""
    stages: dict[str, float]
    """Seconds the request spent in each stage, from the gateway's histograms."""


def measured_series(
    url: str,
    pid: int,
    model: str,
    files: list[tuple[str, tuple[str, bytes, str]]],
    images: list[dict[str, Any]],
    *,
    timeout_s: float,
) -> Measured:
    """Post a series to ``model`` on the gateway of ``pid``: its time, memory and stages."""
    before = _stage_sums(url, model)
    idle_kib = status_kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    start = time.perf_counter()
    response = httpx.post(
        f"{url}/models/{model}/invocations",
        files=files,
        data={"images": json.dumps(images)},
        timeout=timeout_s,
    )
    seconds = time.perf_counter() - start
    response.raise_for_status()
    peak_kib = status_kib(pid, "VmHWM")
    after = _stage_sums(url, model)
    stages = {stage: after[stage] - before[stage] for stage in STAGES}
    return Measured(response, seconds, idle_kib, peak_kib, stages)


def _stage_sums(url: str, model: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    sums = dict.fromkeys(STAGES, 0.0)
    pattern = re.compile(
        r'^gateway_stage_duration_seconds_sum\{(?=[^}]*model="' + re.escape(model) + r'")'
        r'[^}]*stage="(\w+)"[^}]*\} ([0-9.e+-]+)$',
        re.M,
    )
    for stage, value in pattern.findall(text):
        sums[stage] = float(value)
    return sums


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (``/proc/PID/stat`` utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Server:
    """A service under test: where to post, and how to read its CPU time and batching."""

    name: str
    url: str
    path: str
    processes: Callable[[], dict[str, list[int]]]
    """Every process of the service by part (the gateway's side: the gateway, and Triton with
    its backend stubs)."""
    executions: Callable[[], tuple[int, int]] | None = None


@dataclass
class Side:
    """One server's measurements, by concurrency: the best of its rounds."""

    name: str
    results: dict[int, LoadResult]
    cpu_ms: dict[int, dict[str, float]]
    """CPU milliseconds per request of each part of the service."""
    batch: dict[int, float]
    """Triton's average dynamic batch (the gateway's side only)."""


def _level(server: Server, png: bytes, requests: int, concurrency: int, side: Side) -> None:
    """One load level on one server; kept when its throughput beats the side's earlier rounds."""
    before = _cpu_by_part(server)
    counted = server.executions() if server.executions is not None else (0, 0)
    result = asyncio.run(_post(server.url, server.path, png, requests, concurrency))
    after = _cpu_by_part(server)
    best = side.results.get(concurrency)
    if best is not None and best.throughput >= result.throughput:
        return
    side.results[concurrency] = result
    # The warm-up requests of _load are counted too: `concurrency` of them.
    side.cpu_ms[concurrency] = {
        part: (after[part] - before.get(part, 0.0)) * 1000 / (requests + concurrency)
        for part in after
    }
    if server.executions is not None:
        inferences, runs = (
            now - then for now, then in zip(server.executions(), counted, strict=True)
        )
        side.batch[concurrency] = inferences / max(runs, 1)


def _cpu_by_part(server: Server) -> dict[str, float]:
    return {
        part: sum(_cpu_seconds(pid) for pid in pids) for part, pids in server.processes().items()
    }


def measure(servers: list[Server], png: bytes, requests: int, rounds: int) -> list[Side]:
    """Each level on each server in turn, ``rounds`` times: the servers take turns at every
    level, so a change in the machine's speed during the run (other tenants) reaches both."""
    sides = [Side(server.name, {}, {}, {}) for server in servers]
    for concurrency in CONCURRENCY:
        for _ in range(rounds):
            for server, side in zip(servers, sides, strict=True):
                _level(server, png, requests, concurrency, side)
    return sides


def _executions(triton: LocalTriton, model: str) -> tuple[int, int]:
    """Triton's own counts for ``model``: inferences (batch items) and executions (batches)."""
    client = grpcsync.InferenceServerClient(triton.grpc_url)
    try:
        [stats] = client.get_inference_statistics(model, as_json=True)["model_stats"]
    finally:
        client.close()
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def compare(baseline: Side, gateway: Side) -> None:
    """Print the side-by-side table, and each target's ratio with its verdict."""
    sides = (baseline, gateway)
    print(
        f"  {'side':<9} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>11}"
        "  (by process)"
    )
    cpu = {side.name: {c: sum(side.cpu_ms[c].values()) for c in CONCURRENCY} for side in sides}
    for concurrency in CONCURRENCY:
        for side in sides:
            result = side.results[concurrency]
            parts = side.cpu_ms[concurrency]
            split = " + ".join(f"{part} {ms:.2f}" for part, ms in parts.items())
            print(
                f"  {side.name:<9} {concurrency:>4} {result.throughput:>8.1f} "
                f"{result.percentile_ms(50):>8.1f} {result.percentile_ms(99):>8.1f} "
                f"{cpu[side.name][concurrency]:>11.2f}" + (f"  ({split})" if len(parts) > 1 else "")
            )
    print("  gateway / baseline:")
    for concurrency in CONCURRENCY[1:]:
        ours, theirs = gateway.results[concurrency], baseline.results[concurrency]
        throughput = ours.throughput / theirs.throughput
        p99 = ours.percentile_ms(99) / theirs.percentile_ms(99)
        print(
            f"    concurrency {concurrency:>2}: throughput {throughput:.2f} x "
            f"(target >= {THROUGHPUT_TARGET}: {_verdict(throughput >= THROUGHPUT_TARGET)}), "
            f"p99 {p99:.2f} x "
            f"(target <= {P99_TARGET}: {_verdict(p99 <= P99_TARGET)})"
        )
    extra = gateway.results[1].percentile_ms(50) - baseline.results[1].percentile_ms(50)
    print(
        f"    concurrency  1: p50 {extra:+.1f} ms "
        f"(target <= +{P50_MARGIN_MS:g} ms: {_verdict(extra <= P50_MARGIN_MS)})"
    )
    ratio = {c: cpu["gateway"][c] / cpu["baseline"][c] for c in CONCURRENCY}
    shown = ", ".join(f"{ratio[c]:.2f} x at {c}" for c in CONCURRENCY)
    print(
        f"    CPU per request (gateway + Triton): {shown} "
        f"(target <= {CPU_TARGET}: {_verdict(max(ratio.values()) <= CPU_TARGET)})"
    )
    batch = gateway.batch.get(8, 0.0)
    print(
        f"  Triton's average dynamic batch at concurrency 8: {batch:.2f} "
        f"(target > {BATCH_TARGET:g}: {_verdict(batch > BATCH_TARGET)})"
    )


def series(url: str, pid: int, slices: int, workdir: Path) -> None:
    volume = phantom_volume(
        np.random.default_rng(11), slices=slices, size=512, lesions=[12.0, 20.0]
    )
    paths = make_ct_series(workdir / "series", volume.hu, shuffle=3)
    pixel_bytes = volume.hu.nbytes
    images = [
        {"id": f"bench-slice-{z:010d}", "file_name": p.name, "index": z}
        for z, p in enumerate(paths)
    ]
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in paths]
    print(
        f"3D segmentation: {SEGMENTER_3D}, {slices} x 512 x 512 CT series "
        f"({pixel_bytes / 2**20:.0f} MiB of pixels, {sum(len(f[1][1]) for f in files) / 2**20:.0f} "
        "MiB of DICOM)"
    )
    measured = measured_series(url, pid, SEGMENTER_3D, files, images, timeout_s=600)
    elapsed, spent = measured.seconds, measured.stages
    idle_kib, peak_kib = measured.idle_kib, measured.peak_kib
    answer = measured.response.json()
    print(
        f"  {elapsed:.1f} s end to end; {len(answer['objects'])} objects, "
        f"{len(answer['annotations'])} annotations"
    )
    for stage in STAGES:
        print(f"  {stage:<12} {spent[stage]:>7.2f} s")
    print(
        "  (triton includes turning each batch's maps into full-resolution masks as it "
        "arrives, overlapped with the model; postprocess is the connected components)"
    )
    outside = sum(seconds for stage, seconds in spent.items() if stage != "triton")
    print(
        f"  outside Triton {outside:.2f} s, inside {spent['triton']:.2f} s "
        f"(target: less outside than inside: {_verdict(outside < spent['triton'])})"
    )
    peak = (peak_kib - idle_kib) * 1024
    ratio = peak / pixel_bytes
    verdict = "meets" if ratio < SERIES_MEMORY_TARGET else "misses"
    print(
        f"  gateway peak memory above idle: {peak / 2**20:.0f} MiB = {ratio:.2f} x the pixel bytes "
        f"(idle {idle_kib / 1024:.0f} MiB; {verdict} the < {SERIES_MEMORY_TARGET} x target)"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks gateway")
    parser.add_argument("--requests", type=int, default=400, help="requests per load level")
    parser.add_argument("--rounds", type=int, default=2, help="turns per level and server")
    parser.add_argument("--slices", type=int, default=300, help="slices of the CT series")
    args = parser.parse_args(argv)
    png = _png()
    print(
        f"2D classification: {CLASSIFIER}, 512 x 512 PNG ({len(png)} bytes), "
        f"{args.requests} requests per level, closed loop, {os.cpu_count()} CPUs; the two "
        f"servers take turns at each level, best of {args.rounds} rounds each"
    )
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        workdir = Path(tmp)
        triton = local_triton(workdir)
        with triton, baseline_process() as (baseline_url, baseline_pid):
            triton.wait_for_model(CLASSIFIER)
            triton.wait_for_model(SEGMENTER_3D)
            with gateway_process(triton.grpc_url, workdir) as (url, pid):
                servers = [
                    Server(
                        "baseline", baseline_url, "/invocations", lambda: {"all": [baseline_pid]}
                    ),
                    Server(
                        "gateway",
                        url,
                        f"/models/{CLASSIFIER}/invocations",
                        _service_pids(pid, triton),
                        lambda: _executions(triton, CLASSIFIER),
                    ),
                ]
                compare(*measure(servers, png, args.requests, args.rounds))
                series(url, pid, args.slices, workdir)
    return 0


def _service_pids(gateway_pid: int, triton: LocalTriton) -> Callable[[], dict[str, list[int]]]:
    """The gateway's process with its workers (``WORKERS`` above 1), and every live process of
    Triton's group (server and stubs)."""

    def processes() -> dict[str, list[int]]:
        return {
            "gateway": [gateway_pid, *children_of(gateway_pid)],
            "Triton": group_members(triton.pid) if triton.pid else [],
        }

    return processes
