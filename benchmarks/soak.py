"""``make soak MINUTES=60``: mixed traffic at twice what the gateway admits, for as long as asked,
against the gateway and a local Triton, with every process sampled.

What it shows, and why each part is there:

- **Traffic as a hospital's mix**, from ``2 x MAX_IN_FLIGHT`` closed-loop clients: 2D models
  on PNG, a 24-slice CT series, a DICOM SEG answer, a table with its records downloaded, the
  viewer's render, and the requests that must be refused (malformed, an unknown model, a body
  too large). A quarter of the clients open a new connection for every request (churn, as
  health checks and clients that do not pool make). One more client uploads at about 1 KB/s.
  Each kind of request has the statuses it may get; any other status, or a connection error,
  is a failure and the exit status says so. 503 is allowed: the load is twice the admission.
- **Every process sampled every** :data:`SAMPLE_S`: resident memory (split into anonymous,
  shared-memory and file pages, so that growth can be told apart: heap and gRPC buffers are
  anonymous, the Python backend's hand-off regions are shared memory), open file descriptors
  and threads, for the gateway, ``tritonserver`` and the backend stubs.
- **Rests.** Every :data:`REST_EVERY_S` the clients stop, and once nothing is in flight (and
  :data:`REST_SETTLE_S` more) every process is sampled at rest. Under load a sample holds what
  is in flight too (up to eight requests' pixels, tensors and masks, tens of MiB that come and
  go with the mix); at rest it holds what the process keeps, which is where a leak shows.
- **The slope of the last** :data:`SLOPE_WINDOW_S` (or of the last half of a shorter run) by
  least squares: memory in MiB per 10 minutes, at rest (the verdict: target under 1) and under
  load (reported), descriptors and threads per 10 minutes, flat when their fitted change over
  the window is within :data:`COUNT_TOLERANCE`. Warm-up growth that levels off does not count;
  a leak does.
- **Storage back to its bounds** after the load: the upload folder empty, the records store
  within ``RECORDS_MAX_BYTES`` and nothing in it older than ``RECORDS_RETENTION_S`` plus the
  time since the last write (the store is swept when an artifact is written).
- The slow-client check before the load: the classifier's p95 alone, then with eight 1 KB/s
  uploaders connected, and the ratio of the two.

``--samples FILE`` writes every sample as CSV, for a closer look at what grew. The processes run
as they do in production: the gateway with the image's ``GLIBC_TUNABLES`` (read from its
Dockerfile), Triton on jemalloc with :data:`TRITON_MALLOC_CONF` as compose runs it (when
Debian's ``libjemalloc2`` is installed). Triton serves a copy of ``model_repository/`` taken at
the start: it polls its repository, and a model added there during the hour (a retraining, a
test) would otherwise load into the processes measured (it did once: a new backend stub, 36
more Triton threads, 67 MiB more in the stubs).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import json
import os
import shlex
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.gateway_bench import ROOT, gateway_process, local_triton, status_kib
from benchmarks.tables_bench import write_table
from tests.dockerfile import read_dockerfile, stages
from tests.factories import chest_png, make_ct_series, phantom_hu
from training.phantoms import phantom_slice
from triton_local import LocalTriton
from triton_local.process import group_members

SAMPLE_S = 10.0
SLOPE_WINDOW_S = 30 * 60.0
QUIET_S = 3.0
"""Pause after the load stops before storage is checked."""
REST_EVERY_S = 150.0
"""Twelve rests in the slope's window of 30 minutes."""
REST_SETTLE_S = 15.0
"""How long the clients rest, once nothing is in flight, before the at-rest sample: longer than
jemalloc's decay (10 s), so what Triton freed is back with the system."""
REST_TIMEOUT_S = 120.0
MAX_IN_FLIGHT = 4
"""The gateway's default, which the load doubles."""
CLIENTS = 2 * MAX_IN_FLIGHT
CHURNING = CLIENTS // 4
"""Clients that open a new connection for every request."""
MEMORY_TARGET_MIB = 1.0
"""Resident memory slope, MiB per 10 minutes, under which a process is flat."""
COUNT_TOLERANCE = CLIENTS + 2
"""How far descriptors and threads may move over the slope window (by the fit) and still be
flat: a sample catches each client's connection, and a pool thread, open or not."""
RECORDS_RETENTION_S = 300
RECORDS_MAX_BYTES = 32 * 2**20
SETTINGS = {
    "RECORDS_RETENTION_S": str(RECORDS_RETENTION_S),
    "RECORDS_MAX_BYTES": str(RECORDS_MAX_BYTES),
}
"""The gateway's defaults but for a records store small and short enough that the soak fills
it past its bounds many times over."""
STATUS_FIELDS = {"rss": "VmRSS", "anon": "RssAnon", "shmem": "RssShmem", "file": "RssFile"}
TIMEOUT_S = 300.0
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
"""Debian's jemalloc (``make packages`` installs it): Triton runs on it in compose."""
TRITON_MALLOC_CONF = "background_thread:true"
"""jemalloc's setting for Triton, as compose and the Kubernetes manifests set it (a test checks
they agree): background threads return freed pages on jemalloc's decay timer even when no
request arrives, so an idle Triton gives memory back, and a sample at rest sees it."""
IMAGE_VARIABLES = ("GLIBC_TUNABLES",)
"""What the gateway image sets for the process beyond its settings: the soak runs it so too."""

Send = Callable[[httpx.Client, str], int]


@dataclass(frozen=True)
class Kind:
    """One kind of request: how often, how it is sent, the statuses it may get."""

    name: str
    weight: int
    send: Send
    allowed: frozenset[int]


def _entry(name: str, index: int = 0) -> dict[str, Any]:
    return {"id": f"image-{index}", "file_name": name, "index": index}


def _form(files: list[tuple[str, bytes, str]]) -> dict[str, Any]:
    return {
        "files": [("files", item) for item in files],
        "data": {"images": json.dumps([_entry(name, i) for i, (name, _, _) in enumerate(files)])},
    }


def _post(route: str, request: dict[str, Any], **params: str) -> Send:
    def send(http: httpx.Client, url: str) -> int:
        return http.post(route, params=params or None, **request).status_code

    return send


def _raw(head: bytes) -> Send:
    """A request no HTTP library would send, on a socket of its own."""

    def send(http: httpx.Client, url: str) -> int:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
            sock.sendall(head)
            answer = sock.recv(65536)
        return int(answer[9:12])

    return send


def _table(table: bytes) -> Send:
    """A table posted, then its records artifact downloaded (200 twice, or the refusal)."""
    fields = {
        "tables": json.dumps([{"id": "rows", "file_name": "rows.csv"}]),
        "meta": json.dumps({"window_size": 1}),
    }

    def send(http: httpx.Client, url: str) -> int:
        answer = http.post(
            "/models/house_value_regressor/invocations",
            data=fields,
            files=[("files", ("rows.csv", table, "text/csv"))],
        )
        if answer.status_code != 200:
            return answer.status_code
        return http.get(answer.json()["records"]["href"]).status_code

    return send


def kinds(workdir: Path) -> list[Kind]:
    png = ("chest.png", chest_png(), "image/png")
    paths = make_ct_series(workdir / "series", phantom_hu((24, 256, 256)))
    series = [(path.name, path.read_bytes(), "application/dicom") for path in paths]
    chest = phantom_slice(np.random.default_rng(7), 512, lesions=[20.0])
    (slice_path,) = make_ct_series(workdir / "slice", chest.hu[None], spacing=(1.0, 0.7, 0.7))
    dicom_slice = (slice_path.name, slice_path.read_bytes(), "application/dicom")
    write_table(workdir / "rows.csv", 500)
    table = (workdir / "rows.csv").read_bytes()
    form = b"Content-Type: multipart/form-data; boundary=b\r\n"
    served = frozenset({200, 503})
    return [
        Kind(
            "classifier png",
            3,
            _post("/models/lesion_classifier/invocations", _form([png])),
            served,
        ),
        Kind("detector png", 2, _post("/models/lesion_detector/invocations", _form([png])), served),
        Kind("segmenter png", 2, _post("/models/lung_segmenter/invocations", _form([png])), served),
        Kind(
            "3d series", 1, _post("/models/lesion_segmenter_3d/invocations", _form(series)), served
        ),
        Kind(
            "dicom seg",
            1,
            _post("/models/lung_segmenter/invocations", _form([dicom_slice]), output="seg"),
            served,
        ),
        Kind("table + records", 1, _table(table), served),
        Kind("viewer render", 1, _post("/viewer/render", _form(series)), served),
        Kind(
            "malformed",
            1,
            _raw(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n"),
            frozenset({400}),
        ),
        Kind(
            "too large",
            1,
            _raw(
                b"POST /invocations HTTP/1.1\r\nHost: x\r\n"
                + form
                + b"Content-Length: 99999999999999\r\n\r\n"
            ),
            frozenset({413}),
        ),
        Kind(
            "unknown model",
            1,
            _post("/models/no_such_model/invocations", _form([png])),
            frozenset({404}),
        ),
    ]


@dataclass
class Tally:
    statuses: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    latency: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    go: threading.Event = field(default_factory=threading.Event)
    """Clear while the clients rest."""
    busy: int = 0
    idle: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.go.set()

    def add(self, kind: str, status: str, seconds: float) -> None:
        with self.lock:
            self.statuses[(kind, status)] += 1
            if status == "200":
                self.latency[kind].append(seconds)

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """One client's request: started only while the load runs, counted while in flight."""
        self.go.wait()
        with self.idle:
            self.busy += 1
        try:
            yield
        finally:
            with self.idle:
                self.busy -= 1
                self.idle.notify_all()

    @contextlib.contextmanager
    def resting(self) -> Iterator[None]:
        """No request in flight (the slow uploader's trickle aside) until the block ends."""
        self.go.clear()
        try:
            with self.idle:
                if not self.idle.wait_for(lambda: self.busy == 0, REST_TIMEOUT_S):
                    raise RuntimeError(f"requests still in flight after {REST_TIMEOUT_S:g} s")
            time.sleep(REST_SETTLE_S)
            yield
        finally:
            self.go.set()


def client(url: str, mix: list[Kind], seed: int, churn: bool, tally: Tally) -> None:
    rng = np.random.default_rng(seed)
    weights = np.array([kind.weight for kind in mix], dtype=np.float64)
    weights /= weights.sum()
    pooled = httpx.Client(base_url=url, timeout=TIMEOUT_S)
    try:
        while not tally.stop.is_set():
            kind = mix[int(rng.choice(len(mix), p=weights))]
            with tally.request():
                started = time.perf_counter()
                try:
                    if churn:
                        with httpx.Client(base_url=url, timeout=TIMEOUT_S) as fresh:
                            status = str(kind.send(fresh, url))
                    else:
                        status = str(kind.send(pooled, url))
                except (httpx.TransportError, OSError) as exc:
                    status = f"connection error ({type(exc).__name__})"
            tally.add(kind.name, status, time.perf_counter() - started)
    finally:
        pooled.close()


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
            sock.settimeout(20)  # past UPLOAD_IDLE_TIMEOUT_S, when the gateway answers 408
            while chunk := sock.recv(65536):
                answer += chunk
    except OSError:
        pass
    return answer[9:12].decode() if answer.startswith(b"HTTP/1.1 ") else "no answer (slow)"


def slow_client(url: str, tally: Tally) -> None:
    while not tally.stop.is_set():
        tally.add("slow uploader", slow_upload(url, tally.stop), 0.0)


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


def slow_client_ratio(url: str, requests: int = 60) -> None:
    png_request = _form([("chest.png", chest_png(), "image/png")])

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


# Sampling ------------------------------------------------------------------------------------


Sample = dict[str, float]
"""One process group at one time: ``<group> <measure>`` -> value (KiB or a count)."""


def process_sample(pid: int) -> dict[str, int] | None:
    """Memory (KiB) by kind of page, open descriptors and threads; None if it has ended."""
    try:
        values = {name: status_kib(pid, field) for name, field in STATUS_FIELDS.items()}
        values["fds"] = sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
        status = Path(f"/proc/{pid}/status").read_text()
        values["threads"] = int(status.split("Threads:", 1)[1].split()[0])
    except (OSError, RuntimeError, IndexError):
        return None
    return values


def groups(gateway: int, triton: int) -> dict[str, list[int]]:
    members = group_members(triton)
    return {
        "gateway": [gateway],
        "tritonserver": [triton],
        "stubs": [pid for pid in members if pid != triton],
    }


def sample(gateway: int, triton: int, started: float) -> Sample:
    row: Sample = {"t": time.monotonic() - started}
    for group, pids in groups(gateway, triton).items():
        totals: collections.Counter[str] = collections.Counter()
        for pid in pids:
            values = process_sample(pid)
            if values is not None:
                totals.update(values)
        row.update({f"{group} {name}": float(value) for name, value in totals.items()})
        row[f"{group} processes"] = float(len(pids))
    return row


def slope_per_10_min(samples: list[Sample], key: str, window_s: float) -> float:
    """Least-squares slope of ``key`` over the last ``window_s``, per 10 minutes."""
    end = samples[-1]["t"]
    recent = [s for s in samples if s["t"] >= end - window_s and key in s]
    if len(recent) < 3:
        return float("nan")
    t = np.array([s["t"] for s in recent])
    y = np.array([s[key] for s in recent])
    return float(np.polyfit(t, y, 1)[0] * 600)


def run_load(url: str, mix: list[Kind], seconds: float, observe: Callable[[bool], None]) -> Tally:
    """``seconds`` of load, ``observe(False)`` every :data:`SAMPLE_S` under it and
    ``observe(True)`` at each rest, every :data:`REST_EVERY_S` and at the end."""
    tally = Tally()
    with ThreadPoolExecutor(CLIENTS + 1) as pool:
        futures = [
            pool.submit(client, url, mix, seed, seed < CHURNING, tally) for seed in range(CLIENTS)
        ]
        futures.append(pool.submit(slow_client, url, tally))
        end = time.monotonic() + seconds
        rest = time.monotonic() + REST_EVERY_S
        while time.monotonic() < end:
            observe(False)
            if time.monotonic() >= rest:
                with tally.resting():
                    observe(True)
                rest = time.monotonic() + REST_EVERY_S
            time.sleep(min(SAMPLE_S, max(end - time.monotonic(), 0)))
        with tally.resting():
            observe(True)
        tally.stop.set()
        for future in futures:
            future.result()
    return tally


# Report ----------------------------------------------------------------------------------------


def storage(upload_dir: Path, records_dir: Path) -> tuple[list[str], int]:
    """Lines about the upload folder and the records store; the number of failures."""
    failures = 0
    left = sorted(path.name for path in upload_dir.iterdir())
    lines = [f"  upload folder after the load: {len(left)} entries (target 0)"]
    if left:
        failures += 1
        lines.append(f"  FAIL: left in the upload folder: {left[:10]}")
    files = [path for path in records_dir.rglob("*") if path.is_file()]
    size = sum(path.stat().st_size for path in files)
    now = time.time()
    ages = [now - path.stat().st_mtime for path in files]
    oldest, newest = max(ages, default=0.0), min(ages, default=0.0)
    bound = RECORDS_RETENTION_S + newest  # swept at each write: the last write's age on top
    lines.append(
        f"  records store: {len(files)} artifacts, {size / 2**20:.1f} MiB (cap "
        f"{RECORDS_MAX_BYTES / 2**20:.0f} MiB), oldest {oldest:.0f} s (retention "
        f"{RECORDS_RETENTION_S} s + {newest:.0f} s since the last write)"
    )
    if size > RECORDS_MAX_BYTES or oldest > bound + SAMPLE_S:
        failures += 1
        lines.append("  FAIL: the records store is past its bounds")
    return lines, failures


def report(
    tally: Tally, mix: Iterable[Kind], minutes: float, samples: list[Sample]
) -> tuple[list[str], int]:
    failures = 0
    total = sum(tally.statuses.values())
    lines = [
        f"soak: {minutes:g} min, {CLIENTS} clients ({CHURNING} churning) + 1 slow "
        f"uploader, {total} answers"
    ]
    allowed = {kind.name: kind.allowed for kind in mix}
    allowed["slow uploader"] = frozenset({408, 503})
    by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for (kind, status), count in tally.statuses.items():
        by_kind[kind][status] += count
    for kind, statuses in sorted(by_kind.items()):
        latency = tally.latency.get(kind, [])
        timing = f", p50 {_p(latency, 50):.0f} ms, p95 {_p(latency, 95):.0f} ms" if latency else ""
        lines.append(f"  {kind}: {dict(sorted(statuses.items()))}{timing}")
        wrong = {
            s: n for s, n in statuses.items() if not s.isdigit() or int(s) not in allowed[kind]
        }
        if wrong:
            failures += 1
            lines.append(f"  FAIL: {kind} got {wrong}, allowed {sorted(allowed[kind])}")
    window = min(SLOPE_WINDOW_S, samples[-1]["t"] / 2)
    rests = [s for s in samples if s["rest"]]
    lines.append(
        f"  slopes over the last {window / 60:.0f} min, per 10 min (least squares), at rest "
        "(what a process keeps) and under load (what is in flight too):"
    )
    for group in ("gateway", "tritonserver", "stubs"):
        last = samples[-1]
        kept = slope_per_10_min(rests, f"{group} rss", window) / 1024
        rss = slope_per_10_min(samples, f"{group} rss", window) / 1024
        parts = ", ".join(
            f"{name} {slope_per_10_min(samples, f'{group} {name}', window) / 1024:+.2f}"
            for name in ("anon", "shmem", "file")
        )
        fds = slope_per_10_min(samples, f"{group} fds", window)
        threads = slope_per_10_min(samples, f"{group} threads", window)
        verdict = (
            "fewer than 3 rests"
            if np.isnan(kept)
            else "flat"
            if abs(kept) < MEMORY_TARGET_MIB
            else "GROWS"
            if kept > 0
            else "shrinks"
        )
        lines.append(
            f"    {group}: RSS {last.get(f'{group} rss', 0) / 1024:.0f} MiB, at rest "
            f"{kept:+.2f} MiB ({verdict}; target under {MEMORY_TARGET_MIB:g}), under load "
            f"{rss:+.2f} MiB = {parts}; descriptors {last.get(f'{group} fds', 0):.0f} "
            f"({fds:+.1f}), threads {last.get(f'{group} threads', 0):.0f} ({threads:+.1f})"
        )
        for measure, value in (("descriptors", fds), ("threads", threads)):
            change = value * window / 600
            if abs(change) > COUNT_TOLERANCE:
                failures += 1
                lines.append(
                    f"  FAIL: {group} {measure} are not flat: {change:+.1f} over the window "
                    f"(tolerance {COUNT_TOLERANCE})"
                )
    return lines, failures


def at_rests(samples: list[Sample], key: str) -> str:
    return ", ".join(f"{s[key] / 1024:.0f}" for s in samples if s["rest"] and key in s)


def quarters(samples: list[Sample], key: str) -> str:
    values = [s[key] / 1024 for s in samples if key in s]
    return ", ".join(f"{np.median(q):.0f}" for q in np.array_split(np.array(values), 4) if len(q))


@contextlib.contextmanager
def triton_running(triton: LocalTriton, preload: str | None) -> Iterator[None]:
    """Triton running, started with ``LD_PRELOAD=preload`` and :data:`TRITON_MALLOC_CONF` if
    given: it and its stubs inherit this process's environment at start, which is then put back
    for the gateway."""
    if preload is not None and not Path(preload).is_file():
        raise SystemExit(f"--triton-preload: no such file {preload}")
    saved = {name: os.environ.get(name) for name in ("LD_PRELOAD", "MALLOC_CONF")}
    if preload is not None:
        os.environ.update(LD_PRELOAD=preload, MALLOC_CONF=TRITON_MALLOC_CONF)
    try:
        triton.start()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        yield
    finally:
        triton.stop()


def image_environment() -> dict[str, str]:
    """:data:`IMAGE_VARIABLES` as the gateway image's runtime stage sets them."""
    runtime = stages(read_dockerfile())[-1]
    found = {}
    for keyword, arguments in runtime:
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                if name in IMAGE_VARIABLES:
                    found[name] = value
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks soak")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--warm-up", type=float, default=60.0, help="seconds of load first")
    parser.add_argument("--samples", type=Path, help="write every sample here, as CSV")
    parser.add_argument(
        "--triton-preload",
        metavar="LIBRARY",
        default=JEMALLOC if Path(JEMALLOC).is_file() else None,
        help="LD_PRELOAD for Triton and its stubs alone (default: jemalloc, as compose runs "
        "Triton, when installed; 'none' for glibc's malloc)",
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the gateway alone, e.g. a malloc tunable (repeatable)",
    )
    args = parser.parse_args(argv)
    preload = None if args.triton_preload in (None, "none") else args.triton_preload
    extra = {**image_environment(), **dict(pair.split("=", 1) for pair in args.gateway_env)}
    print(f"triton malloc: {preload or 'glibc'}; gateway environment: {extra}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gateway-soak-") as tmp:
        workdir = Path(tmp)
        upload_dir, records_dir = workdir / "uploads", workdir / "records"
        upload_dir.mkdir()
        settings = {**SETTINGS, "RECORDS_DIR": str(records_dir), **extra}
        # A copy: Triton polls its repository, and a model added to model_repository/ during
        # the hour (a retraining, a test) would load into the processes being measured.
        snapshot = shutil.copytree(ROOT / "model_repository", workdir / "model_repository")
        triton = local_triton(workdir, snapshot)
        with (
            triton_running(triton, preload),
            gateway_process(triton.grpc_url, upload_dir, settings) as (url, pid),
        ):
            assert triton.pid is not None
            server = triton.pid
            slow_client_ratio(url)
            mix = kinds(workdir)
            run_load(url, mix, args.warm_up, lambda at_rest: None)
            samples: list[Sample] = []
            started = time.monotonic()

            def observe(at_rest: bool) -> None:
                samples.append({**sample(pid, server, started), "rest": float(at_rest)})

            tally = run_load(url, mix, args.minutes * 60, observe)
            time.sleep(QUIET_S)
            lines, failures = report(tally, mix, args.minutes, samples)
            for group in ("gateway", "tritonserver", "stubs"):
                lines.append(
                    f"  {group} RSS under load, median of each quarter: "
                    f"{quarters(samples, f'{group} rss')} MiB; at each rest: "
                    f"{at_rests(samples, f'{group} rss')} MiB"
                )
            stored, storage_failures = storage(upload_dir, records_dir)
    print("\n".join([*lines, *stored]))
    if args.samples is not None:
        keys = sorted({key for row in samples for key in row}, key=lambda k: (k != "t", k))
        with args.samples.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=keys)
            writer.writeheader()
            writer.writerows(samples)
        print(f"  samples: {args.samples}")
    return 1 if failures + storage_failures else 0
