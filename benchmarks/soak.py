"""``make soak``: minutes of mixed load at twice what the settings admit, against the gateway
with its default settings and a local Triton, with both processes' memory sampled.

What it shows, and why each part is there:

- Mixed load from ``2 x MAX_IN_FLIGHT`` closed-loop clients (classification, detection, 2D and
  3D segmentation), plus one client that keeps uploading at about 1 KB/s. Every answer must be
  200 (served), 503 (queue full or waited too long) or 408 (the slow uploader): anything else,
  or a dropped connection, is a failure and the exit status says so.
- Latency percentiles per model.
- Memory (resident set) of the gateway and of Triton with its backend stubs, sampled every few
  seconds: the first sample after warm-up and the last one, and their ratio, so that a leak
  shows as growth that warm-up does not explain.
- The slow-client check: the classifier's p95 alone, then with eight 1 KB/s uploaders
  connected, and the ratio of the two.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.gateway_bench import gateway_process, local_triton, status_kib
from tests.factories import chest_png, make_ct_series, phantom_hu
from triton_local.process import group_members

SAMPLE_S = 5.0
MAX_IN_FLIGHT = 4
"""The gateway's default, which the load doubles."""


def _entry(name: str, index: int = 0) -> dict[str, Any]:
    return {"id": f"image-{index}", "file_name": name, "index": index}


def _requests(workdir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(model, httpx arguments) of the mix, most of it the cheap 2D models."""
    png = chest_png()
    paths = make_ct_series(workdir / "series", phantom_hu((24, 256, 256)))
    series = [(path.name, path.read_bytes()) for path in paths]
    two_d: dict[str, Any] = {
        "files": [("files", ("chest.png", png, "image/png"))],
        "data": {"images": json.dumps([_entry("chest.png")])},
    }
    three_d: dict[str, Any] = {
        "files": [("files", (name, data, "application/dicom")) for name, data in series],
        "data": {"images": json.dumps([_entry(name, i) for i, (name, _) in enumerate(series)])},
    }
    return [
        ("lesion_classifier", two_d),
        ("lesion_classifier", two_d),
        ("lesion_detector", two_d),
        ("lung_segmenter", two_d),
        ("lesion_segmenter_3d", three_d),
    ]


def _rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, RuntimeError):  # the process ended meanwhile
            total += status_kib(pid, "VmRSS")
    return total


class _Soak:
    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: collections.Counter[str] = collections.Counter()
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def client(self, mix: list[tuple[str, dict[str, Any]]], seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=self.url, timeout=300) as http:
            while not self.stop.is_set():
                model, kwargs = mix[int(rng.integers(len(mix)))]
                started = time.perf_counter()
                try:
                    status = str(http.post(f"/models/{model}/invocations", **kwargs).status_code)
                except httpx.TransportError as exc:
                    status = f"dropped ({type(exc).__name__})"
                with self.lock:
                    self.statuses[status] += 1
                    if status == "200":
                        self.latency[model].append(time.perf_counter() - started)

    def slow_client(self) -> None:
        while not self.stop.is_set():
            status = slow_upload(self.url, self.stop)
            with self.lock:
                self.statuses[status] += 1


def slow_upload(url: str, stop: threading.Event, seconds: float = 60.0) -> str:
    """One request whose body trickles in at about 1 KB/s; the status the gateway answered."""
    host, port = url.removeprefix("http://").split(":")
    request = httpx.Request("POST", f"{url}/invocations", files={"files": ("a.png", b"\0" * 10**6)})
    body = request.read()
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
        f"{request.headers['content-type']}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    answer = b""
    try:
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(head)
            deadline = time.monotonic() + seconds
            sent = 0
            try:
                while time.monotonic() < deadline and not stop.is_set():
                    sock.sendall(body[sent : sent + 100])
                    sent += 100
                    time.sleep(0.1)
            except OSError:
                pass
            sock.settimeout(10)
            while chunk := sock.recv(65536):
                answer += chunk
    except OSError:
        pass
    return answer[9:12].decode() if answer.startswith(b"HTTP/1.1 ") else "no answer (slow)"


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


def slow_client_ratio(url: str, requests: int = 60) -> None:
    png_request: dict[str, Any] = {
        "files": [("files", ("chest.png", chest_png(), "image/png"))],
        "data": {"images": json.dumps([_entry("chest.png")])},
    }

    def p95() -> float:
        times = []
        with httpx.Client(base_url=url, timeout=60) as http:
            for _ in range(requests):
                started = time.perf_counter()
                assert http.post("/invocations", **png_request).status_code == 200
                times.append(time.perf_counter() - started)
        return _p(times, 95)

    idle = p95()
    stop = threading.Event()
    with ThreadPoolExecutor(8) as pool:
        slow = [pool.submit(slow_upload, url, stop, 8.0) for _ in range(8)]
        time.sleep(0.5)
        loaded = p95()
        stop.set()
        answers = collections.Counter(future.result() for future in slow)
    print(
        f"slow clients: classifier p95 {idle:.1f} ms alone, {loaded:.1f} ms with eight 1 KB/s "
        f"uploaders = {loaded / idle:.2f} x (target <= 2 x); the uploaders got {dict(answers)}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks soak")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warm-up", type=float, default=60.0, help="seconds before the baseline")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gateway-soak-") as tmp:
        workdir = Path(tmp)
        triton = local_triton(workdir)
        with triton, gateway_process(triton.grpc_url, workdir, settings={}) as (url, pid):
            assert triton.pid is not None
            slow_client_ratio(url)
            soak = _Soak(url)
            mix = _requests(workdir)
            clients = 2 * MAX_IN_FLIGHT
            samples: list[tuple[float, int, int]] = []
            started = time.monotonic()
            with ThreadPoolExecutor(clients + 1) as pool:
                futures = [pool.submit(soak.client, mix, seed) for seed in range(clients)]
                futures.append(pool.submit(soak.slow_client))
                end = started + args.minutes * 60
                while time.monotonic() < end:
                    triton_pids = group_members(triton.pid)
                    elapsed = time.monotonic() - started
                    samples.append((elapsed, _rss_kib([pid]), _rss_kib(triton_pids)))
                    time.sleep(min(SAMPLE_S, max(end - time.monotonic(), 0)))
                soak.stop.set()
                for future in futures:
                    future.result()
            samples.append(
                (time.monotonic() - started, _rss_kib([pid]), _rss_kib(group_members(triton.pid)))
            )
    return _report(soak, samples, args.warm_up, clients)


def _report(
    soak: _Soak, samples: list[tuple[float, int, int]], warm_up: float, clients: int
) -> int:
    total = sum(soak.statuses.values())
    print(
        f"soak: {samples[-1][0] / 60:.1f} min, {clients} clients + 1 slow uploader, {total} answers"
    )
    print(f"  statuses: {dict(sorted(soak.statuses.items()))}")
    for model, values in sorted(soak.latency.items()):
        print(
            f"  {model}: {len(values)} x 200, p50 {_p(values, 50):.0f} ms, "
            f"p95 {_p(values, 95):.0f} ms, p99 {_p(values, 99):.0f} ms"
        )
    baseline = next((s for s in samples if s[0] >= warm_up), samples[0])
    last = samples[-1]
    for name, column in (("gateway", 1), ("triton + stubs", 2)):
        first, final = baseline[column] / 1024, last[column] / 1024
        print(
            f"  {name} memory: {first:.0f} MiB after {baseline[0]:.0f} s warm-up, {final:.0f} MiB "
            f"at the end = {final / first:.3f} x (target within 10 %)"
        )
    unexpected = {k: v for k, v in soak.statuses.items() if k not in {"200", "503", "408"}}
    if unexpected:
        print(f"  FAIL: answers other than 200/503/408: {unexpected}")
        return 1
    return 0
