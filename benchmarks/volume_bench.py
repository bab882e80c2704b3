"""A volumetric model on a clinical-size series: the gateway against MONAI in one process.

``python -m benchmarks volume`` sends a 300 x 512 x 512 CT phantom of 1 mm slices (DICOM, one
file per slice) to ``chest_segmenter_3d`` through the gateway and a local Triton, and runs the
same model on the same files with the same settings in one process the way a MONAI user would:
pydicom, ``Spacing``, ``ScaleIntensityRange``, ``sliding_window_inference`` with an ONNX Runtime
predictor, softmax, ``SpatialResample`` back, argmax. The two take turns on the machine, the
in-process baseline first. It reports:

- the time ratio, gateway over baseline, end to end (the gateway's includes the upload; the
  baseline's reading the files), target at most 1.0;
- patches per second, each side;
- the gateway's peak memory above idle (``VmHWM`` after resetting it) as a multiple of the
  series' pixel bytes, target at most 3 x plus the blend's accumulator (documented in
  ``model_repository/README.md``), and the baseline's the same way;
- where the gateway's time goes, from its own stage histograms.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gateway_bench import STAGES, gateway_process, measured_series, status_kib
from gateway.volumes.grid import resampled_shape
from gateway.volumes.windows import Accumulator, Plan
from tests.factories import make_ct_series
from training.phantoms import LUNG_WINDOW, phantom_volume
from training.volume_cards import CHEST_SEGMENTER_3D as CARD
from triton_local import LocalTriton

ROOT = Path(__file__).resolve().parent.parent
TIME_TARGET = 1.0
MEMORY_TARGET = 3.0
"""Times the pixel bytes, on top of the accumulator."""


def baseline(folder: Path) -> dict[str, float]:
    """The MONAI user's script, timed from reading the files to the labels; run in a child."""
    import onnxruntime as ort
    import pydicom
    import torch
    from monai.data import MetaTensor
    from monai.inferers import sliding_window_inference
    from monai.transforms import ScaleIntensityRange, Spacing, SpatialResample

    torch.set_num_threads(os.cpu_count() or 1)
    session = ort.InferenceSession(
        str(ROOT / "model_repository" / CARD.name / "1" / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    idle = status_kib(os.getpid(), "VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    patches = 0

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        nonlocal patches
        patches += batch.shape[0]
        return torch.from_numpy(session.run(["logits"], {"image": batch.numpy()})[0])

    start = time.perf_counter()
    files = [pydicom.dcmread(path) for path in sorted(folder.iterdir())]
    files.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    first = files[0]
    shape = (len(files), int(first.Rows), int(first.Columns))
    hu = np.stack(
        [ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) for ds in files]
    ) + float(first.RescaleIntercept)
    z_step = float(files[1].ImagePositionPatient[2]) - float(first.ImagePositionPatient[2])
    spacing = [z_step, *map(float, first.PixelSpacing)]
    affine = torch.from_numpy(np.diag([*spacing, 1.0]))
    image: Any = MetaTensor(torch.from_numpy(hu)[None], affine=affine)
    del hu, files
    centre, width = LUNG_WINDOW
    image = Spacing(pixdim=CARD.spacing, mode="bilinear")(image)
    image = ScaleIntensityRange(centre - width / 2, centre + width / 2, 0, 1, clip=True)(image)
    with torch.no_grad():
        logits = sliding_window_inference(
            image.as_tensor()[None],
            CARD.roi,
            int(CARD.window["batch"]),
            predictor,
            overlap=float(CARD.window["overlap"]),
            mode=str(CARD.window["blend"]),
        )[0]
        probabilities: Any = MetaTensor(torch.softmax(logits, 0), affine=image.affine)
        del logits
        back = SpatialResample(mode="bilinear")(
            probabilities, dst_affine=affine, spatial_size=shape
        )
    labels = back.argmax(0)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "patches": float(patches),
        "peak_kib": float(status_kib(os.getpid(), "VmHWM") - idle),
        "voxels": float(labels.numel()),
    }


def gateway_run(folder: Path, workdir: Path) -> dict[str, float]:
    """The same series through the gateway and a local Triton serving the model alone."""
    repository = workdir / "repository"
    shutil.copytree(ROOT / "model_repository" / CARD.name, repository / CARD.name)
    triton = LocalTriton(
        repository, grpc_port=0, http_port=0, metrics_port=0, log_file=workdir / "triton.log"
    ).start()
    try:
        upload_dir = workdir / "uploads"
        upload_dir.mkdir()
        settings = {"DEFAULT_MODEL": CARD.name}
        with gateway_process(triton.grpc_url, upload_dir, settings) as (url, pid):
            paths = sorted(folder.iterdir())
            images = [{"id": f"s{z}", "file_name": p.name, "index": z} for z, p in enumerate(paths)]
            files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in paths]
            measured = measured_series(url, pid, CARD.name, files, images, timeout_s=1800)
    finally:
        triton.stop()
    peak = measured.peak_kib - measured.idle_kib
    return {"seconds": measured.seconds, "peak_kib": float(peak), **measured.stages}


def _verdict(met: bool) -> str:
    return "meets" if met else "MISSES"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks volume")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--baseline-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_child is not None:
        print(json.dumps(baseline(args.baseline_child)))
        return 0
    with tempfile.TemporaryDirectory(prefix="volume-bench-") as tmp:
        workdir = Path(tmp)
        volume = phantom_volume(np.random.default_rng(17), args.slices, 512, slice_thickness_mm=1.0)
        folder = workdir / "series"
        make_ct_series(folder, volume.hu, volume.spacing_mm, shuffle=2)
        shape = (volume.hu.shape[0], volume.hu.shape[1], volume.hu.shape[2])
        pixel_bytes = volume.hu.nbytes
        spacing = volume.spacing_mm
        grid = resampled_shape(shape, spacing, CARD.spacing)
        overlap = float(CARD.window["overlap"])
        plan = Plan.of(grid, CARD.roi, (overlap,) * 3, "gaussian", 0.125)
        accumulator = Accumulator.bytes_for(math.prod(plan.padded_shape), CARD.channels)
        del volume
        print(
            f"volumetric segmentation: {CARD.name}, {' x '.join(map(str, shape))} CT series of "
            f"{' x '.join(f'{mm:g}' for mm in spacing)} mm ({pixel_bytes / 2**20:.0f} MiB of "
            "pixels), model "
            f"grid {' x '.join(map(str, grid))}, {len(plan.starts)} patches of "
            f"{' x '.join(map(str, CARD.roi))}, {os.cpu_count()} CPUs; baseline first"
        )
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.volume_bench", "--baseline-child", str(folder)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        theirs = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"  baseline (MONAI + ONNX Runtime, one process): {theirs['seconds']:.1f} s, "
            f"{theirs['patches'] / theirs['seconds']:.1f} patches/s",
            flush=True,
        )
        ours = gateway_run(folder, workdir)
    ratio = ours["seconds"] / theirs["seconds"]
    patches = len(plan.starts)
    print(f"  gateway + Triton: {ours['seconds']:.1f} s, {patches / ours['seconds']:.1f} patches/s")
    print(
        f"  time: {ratio:.2f} x the baseline "
        f"(target <= {TIME_TARGET}: {_verdict(ratio <= TIME_TARGET)})"
    )
    for stage in STAGES:
        print(f"    {stage:<12} {ours[stage]:>7.2f} s")
    bound = MEMORY_TARGET * pixel_bytes + accumulator
    peak = ours["peak_kib"] * 1024
    print(
        f"  gateway peak memory above idle: {peak / 2**20:.0f} MiB = {peak / pixel_bytes:.2f} x "
        f"the pixel bytes (target <= {MEMORY_TARGET:g} x + the accumulator "
        f"{accumulator / 2**20:.0f} MiB = {bound / 2**20:.0f} MiB: {_verdict(peak <= bound)})"
    )
    print(
        f"  baseline peak memory above idle: {theirs['peak_kib'] / 1024:.0f} MiB = "
        f"{theirs['peak_kib'] * 1024 / pixel_bytes:.2f} x the pixel bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
