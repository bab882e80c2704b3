"""The gateway against the same local Triton and model as a direct gRPC loop, in one run.

Two measurements (``python -m benchmarks gateway``):

1. 2D classification of a 512 x 512 PNG at concurrency 1 and 8: the gateway (HTTP multipart,
   PNG decode, resize, Triton, AiCOCO) next to a ``tritonclient`` gRPC loop that sends the
   already decoded and preprocessed tensor to the same model. The ratio at concurrency 8 is the
   gateway's overhead as a client sees it; both share the machine's cores with Triton.
2. A CT-like DICOM series (300 slices of 512 x 512 by default) through the 3D segmenter:
   seconds per stage (from the gateway's own ``/metrics``) and the gateway's peak memory, read
   from the kernel (``VmHWM`` after resetting it through ``/proc/PID/clear_refs``), above its
   idle resident size, against the raw pixel bytes of the series.

The gateway runs as its own process (``python -m gateway serve``) so its memory is its own.
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

import httpx
import numpy as np
import tritonclient.grpc.aio as grpcclient
from PIL import Image

from tests.factories import make_ct_series
from training.phantoms import LUNG_WINDOW, phantom_slice, phantom_volume, window_to_uint8
from triton_local import LocalTriton, free_port

ROOT = Path(__file__).resolve().parent.parent
CLASSIFIER = "lesion_classifier"
SEGMENTER_3D = "lesion_segmenter_3d"
STAGES = ("parse", "read", "preprocess", "triton", "postprocess", "format")
CLASSIFIER_THROUGHPUT_TARGET = 0.8
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


def _classifier_tensor(png: bytes, size: int) -> np.ndarray:
    """What the gateway sends Triton for this PNG: resized, scaled by the dtype's max."""
    image = Image.open(io.BytesIO(png))
    resized = image.resize((size, size), Image.Resampling.BILINEAR)
    return (np.asarray(resized, dtype=np.float32) / 255.0)[None, None]


def _decode_ms(png: bytes, repeats: int = 50) -> float:
    """Milliseconds to decode the PNG in this process: a floor of the gateway's own work per
    request, next to which the direct loop's cost per request can be read."""
    start = time.perf_counter()
    for _ in range(repeats):
        np.asarray(Image.open(io.BytesIO(png)))
    return (time.perf_counter() - start) * 1000 / repeats


async def _direct(grpc_url: str, tensor: np.ndarray, requests: int, concurrency: int) -> LoadResult:
    client = grpcclient.InferenceServerClient(grpc_url)
    try:

        async def send() -> None:
            infer_input = grpcclient.InferInput("image", list(tensor.shape), "FP32")
            infer_input.set_data_from_numpy(tensor)
            result = await client.infer(CLASSIFIER, [infer_input])
            if result.as_numpy("probabilities") is None:
                raise RuntimeError("the classifier answered without probabilities")

        return await _load(send, requests, concurrency)
    finally:
        await client.close()


async def _gateway(url: str, png: bytes, requests: int, concurrency: int) -> LoadResult:
    images = json.dumps([{"id": "bench-image-0000000001", "file_name": "slice.png", "index": 0}])
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def send() -> None:
            response = await client.post(
                f"/models/{CLASSIFIER}/invocations",
                files=[("files", ("slice.png", png, "image/png"))],
                data={"images": images},
            )
            response.raise_for_status()

        return await _load(send, requests, concurrency)


def local_triton(workdir: Path) -> LocalTriton:
    """The example models on a local Triton on free ports, its log in ``workdir``."""
    return LocalTriton(
        ROOT / "model_repository",
        grpc_port=0,
        http_port=0,
        metrics_port=0,
        log_file=workdir / "triton.log",
    )


@contextmanager
def gateway_process(
    grpc_url: str, upload_dir: Path, settings: Mapping[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """``python -m gateway serve`` on a free port; ``settings`` replace the bench's defaults."""
    port = free_port()
    env = dict(
        os.environ,
        PORT=str(port),
        HOST="127.0.0.1",
        TRITON_URL=grpc_url,
        DEFAULT_MODEL=CLASSIFIER,
        LOG_LEVEL="WARNING",
        UPLOAD_DIR=str(upload_dir),
        **(settings if settings is not None else {"MAX_IN_FLIGHT": "16"}),
    )
    process = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the gateway exited with status {process.returncode}")
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not become ready within 60 s")
            time.sleep(0.2)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def status_kib(pid: int, field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    if match is None:
        raise RuntimeError(f"/proc/{pid}/status has no {field}")
    return int(match.group(1))


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


def classification(triton: LocalTriton, url: str, pid: int, requests: int) -> float:
    rng = np.random.default_rng(7)
    hu = phantom_slice(rng, size=512, lesions=[14.0]).hu
    buffer = io.BytesIO()
    Image.fromarray(window_to_uint8(hu, *LUNG_WINDOW)).save(buffer, format="PNG")
    png = buffer.getvalue()
    tensor = _classifier_tensor(png, 256)
    decode_ms = _decode_ms(png)
    print(f"2D classification: {CLASSIFIER}, 512 x 512 PNG ({len(png)} bytes), {requests} requests")
    print(
        f"  {'path':<8} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'gateway CPU ms/req':>19}"
    )
    results: dict[tuple[str, int], LoadResult] = {}
    cpu_ms: dict[int, float] = {}
    for concurrency in (1, 8):
        direct = asyncio.run(_direct(triton.grpc_url, tensor, requests, concurrency))
        cpu_before = _cpu_seconds(pid)
        gateway = asyncio.run(_gateway(url, png, requests, concurrency))
        # The warm-up requests of _load are counted too: `concurrency` of them.
        cpu_ms[concurrency] = (
            (_cpu_seconds(pid) - cpu_before) * 1000 / (gateway.requests + concurrency)
        )
        results["direct", concurrency] = direct
        results["gateway", concurrency] = gateway
        for name, result in (("direct", direct), ("gateway", gateway)):
            cpu = f"{cpu_ms[concurrency]:>19.2f}" if name == "gateway" else f"{'-':>19}"
            print(
                f"  {name:<8} {concurrency:>4} {result.throughput:>8.1f} "
                f"{result.percentile_ms(50):>8.1f} {result.percentile_ms(99):>8.1f} {cpu}"
            )
    ratio = results["gateway", 8].throughput / results["direct", 8].throughput
    overhead_ms = results["gateway", 1].percentile_ms(50) - results["direct", 1].percentile_ms(50)
    print(
        f"  gateway overhead per request at concurrency 1 (p50 gateway - p50 direct): "
        f"{overhead_ms:.1f} ms; gateway CPU per request at concurrency 8: {cpu_ms[8]:.2f} ms"
    )
    if ratio >= CLASSIFIER_THROUGHPUT_TARGET:
        print(
            f"  gateway / direct throughput at concurrency 8: {ratio:.2f} "
            f"(meets the {CLASSIFIER_THROUGHPUT_TARGET} target)"
        )
    else:
        direct_ms = 1000 / results["direct", 8].throughput
        print(
            f"  decoding this PNG alone takes {decode_ms:.2f} ms here, "
            f"{decode_ms / direct_ms:.1f} x the {direct_ms:.2f} ms of machine time that each "
            "request of the direct loop takes at concurrency 8"
        )
        print(
            f"  gateway / direct throughput at concurrency 8: {ratio:.2f}: MISSES the "
            f"{CLASSIFIER_THROUGHPUT_TARGET} target. The direct loop sends an already decoded, "
            "resized tensor; the gateway also receives the HTTP multipart upload, writes it to "
            "the request's folder, decodes the PNG, resizes it and writes AiCOCO JSON, on the "
            f"same {os.cpu_count()} cores as Triton and this client, for a model of a few ms."
        )
    return ratio


def series(url: str, pid: int, slices: int, workdir: Path) -> float:
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
    before = _stage_sums(url, SEGMENTER_3D)
    idle_kib = status_kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    start = time.perf_counter()
    response = httpx.post(
        f"{url}/models/{SEGMENTER_3D}/invocations",
        files=files,
        data={"images": json.dumps(images)},
        timeout=600,
    )
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    peak_kib = status_kib(pid, "VmHWM")
    after = _stage_sums(url, SEGMENTER_3D)
    answer = response.json()
    print(
        f"  {elapsed:.1f} s end to end; {len(answer['objects'])} objects, "
        f"{len(answer['annotations'])} annotations"
    )
    for stage in STAGES:
        print(f"  {stage:<12} {after[stage] - before[stage]:>7.2f} s")
    print(
        "  (triton includes turning each batch's maps into full-resolution masks as it "
        "arrives, overlapped with the model; postprocess is the connected components)"
    )
    peak = (peak_kib - idle_kib) * 1024
    ratio = peak / pixel_bytes
    verdict = "meets" if ratio < SERIES_MEMORY_TARGET else "misses"
    print(
        f"  gateway peak memory above idle: {peak / 2**20:.0f} MiB = {ratio:.2f} x the pixel bytes "
        f"(idle {idle_kib / 1024:.0f} MiB; {verdict} the < {SERIES_MEMORY_TARGET} x target)"
    )
    return ratio


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks gateway")
    parser.add_argument("--requests", type=int, default=200, help="requests per load level")
    parser.add_argument("--slices", type=int, default=300, help="slices of the CT series")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        workdir = Path(tmp)
        triton = local_triton(workdir)
        with triton:
            triton.wait_for_model(CLASSIFIER)
            triton.wait_for_model(SEGMENTER_3D)
            with gateway_process(triton.grpc_url, workdir) as (url, pid):
                classification(triton, url, pid, args.requests)
                series(url, pid, args.slices, workdir)
    return 0
