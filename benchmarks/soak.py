"""``make soak``: minutes of mixed load at twice what the settings admit, against the gateway
with its default settings and a local Triton, with both processes' memory sampled.

What it shows, and why each part is there:

- Mixed load from ``2 x MAX_IN_FLIGHT`` closed-loop clients (classification, detection, 2D and
  3D segmentation), plus one client that keeps uploading at about 1 KB/s. Every answer must be
  200 (served), 503 (queue full or waited too long) or 408 (the slow uploader): anything else,
  or a dropped connection, is a failure and the exit status says so.
- Latency percentiles per model.
- Memory (resident set) of the gateway and of Triton with its backend stubs, read with no
  request in progress after a warm-up of the same load and again at the end, and their ratio;
  samples every few seconds under load give the median of each quarter of the run, so that a
  leak shows as a steady climb and warm-up as growth that levels off.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.gateway_bench import gateway_process, local_triton, status_kib
from tests.factories import chest_png, make_ct_series, phantom_hu
from triton_local.process import group_members

SAMPLE_S = 5.0
QUIET_S = 3.0
"""Pause after the load stops before the idle memory is read."""
MAX_IN_FLIGHT = 4
"""The gateway's default, which the load doubles."""
CLIENTS = 2 * MAX_IN_FLIGHT


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
    parser.add_argument("--warm-up", type=float, default=60.0, help="seconds of load first")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gateway-soak-") as tmp:
        workdir = Path(tmp)
        triton = local_triton(workdir)
        with triton, gateway_process(triton.grpc_url, workdir, settings={}) as (url, pid):
            assert triton.pid is not None
            server = triton.pid
            slow_client_ratio(url)
            mix = _requests(workdir)

            def memory() -> tuple[int, int]:
                return _rss_kib([pid]), _rss_kib(group_members(server))

            _load(_Soak(url), mix, args.warm_up, memory)
            start = _quiet(memory)
            split_start = _triton_split(server)
            soak = _Soak(url)
            samples = _load(soak, mix, args.minutes * 60, memory)
            end = _quiet(memory)
            split_end = _triton_split(server)
    print(f"  triton, idle, by process (MiB): {_split_text(split_start, split_end)}")
    return _report(soak, args.minutes, samples, start, end)


def _triton_split(server: int) -> dict[str, int]:
    """Resident KiB of the server and of each backend stub, by the model the stub serves."""
    split = {}
    for pid in group_members(server):
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        # The stub's first argument is the model file: <repository>/<model>/<version>/<file>.
        model = next((Path(a.decode()).parent.parent.name for a in command[1:2]), "")
        name = "tritonserver" if pid == server else f"stub {model or pid}"
        split[name] = _rss_kib([pid])
    return split


def _split_text(start: dict[str, int], end: dict[str, int]) -> str:
    return ", ".join(
        f"{name} {start.get(name, 0) / 1024:.0f} -> {end.get(name, 0) / 1024:.0f}"
        for name in sorted(set(start) | set(end))
    )


def _load(
    soak: _Soak,
    mix: list[tuple[str, dict[str, Any]]],
    seconds: float,
    memory: Callable[[], tuple[int, int]],
) -> list[tuple[int, int]]:
    """Run the clients for ``seconds``, sampling memory; returns the samples."""
    samples = []
    with ThreadPoolExecutor(CLIENTS + 1) as pool:
        futures = [pool.submit(soak.client, mix, seed) for seed in range(CLIENTS)]
        futures.append(pool.submit(soak.slow_client))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            samples.append(memory())
            time.sleep(min(SAMPLE_S, max(end - time.monotonic(), 0)))
        soak.stop.set()
        for future in futures:
            future.result()
    return samples


def _quiet(memory: Callable[[], tuple[int, int]]) -> tuple[int, int]:
    """Memory with no request in progress: what the processes keep, not what one request
    happens to hold at the moment of a sample."""
    time.sleep(QUIET_S)
    return memory()


def _report(
    soak: _Soak,
    minutes: float,
    samples: list[tuple[int, int]],
    start: tuple[int, int],
    end: tuple[int, int],
) -> int:
    total = sum(soak.statuses.values())
    print(f"soak: {minutes:g} min, {CLIENTS} clients + 1 slow uploader, {total} answers")
    print(f"  statuses: {dict(sorted(soak.statuses.items()))}")
    for model, values in sorted(soak.latency.items()):
        print(
            f"  {model}: {len(values)} x 200, p50 {_p(values, 50):.0f} ms, "
            f"p95 {_p(values, 95):.0f} ms, p99 {_p(values, 99):.0f} ms"
        )
    quarters = np.array_split(np.array(samples, dtype=np.float64), 4)
    for column, name in enumerate(("gateway", "triton + stubs")):
        first, final = start[column] / 1024, end[column] / 1024
        trend = ", ".join(f"{np.median(q[:, column]) / 1024:.0f}" for q in quarters if len(q))
        print(
            f"  {name} memory, idle: {first:.0f} MiB after warm-up, {final:.0f} MiB at the end "
            f"= {final / first:.3f} x (target within 10 %); under load, median of each quarter: "
            f"{trend} MiB"
        )
    unexpected = {k: v for k, v in soak.statuses.items() if k not in {"200", "503", "408"}}
    if unexpected:
        print(f"  FAIL: answers other than 200/503/408: {unexpected}")
        return 1
    return 0
