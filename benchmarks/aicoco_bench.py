"""Segmentation formatting: this library against FLaVor's per-label, per-slice loop.

``python -m benchmarks aicoco`` (``--quick`` for a seconds-long smoke run on small volumes).

Cases (synthetic, deterministic):

- semantic: 14 classes of organ-like blobs (lumpy ellipsoids, some classes in two pieces) over
  300 x 512 x 512, a (14, 300, 512, 512) uint8 0/1 mask, as a segmentation model sends it;
- instance: 2,000 lesion-like labels (lumpy ellipsoids on a jittered grid) in one
  64 x 512 x 512 uint16 label map.

Every measurement runs in a fresh child process that builds the volume, then times one call of
the strategy. Peak memory is the child's peak resident set size (``ru_maxrss``) during the call
minus its resident size just before it: it counts everything the call allocates (numpy buffers
and the Python objects of the document) and nothing of the input. The volumes are built in
slabs so that building them peaks below that. Linux only (``/proc/self/statm``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from aicoco import AiImage, IdGenerator, SegmentationStrategy
from aicoco.strategies.base import OutputStrategy
from benchmarks.naive_segmentation import NaiveSegmentationStrategy

MIB = 1 << 20


@dataclass(frozen=True)
class Case:
    description: str
    build: Callable[[], NDArray[np.integer]]
    """The (C, Z, H, W) model output."""


def semantic_volume(
    shape: tuple[int, int, int] = (300, 512, 512), classes: int = 14, seed: int = 0
) -> NDArray[np.uint8]:
    """Organ-like 0/1 masks: per class one lumpy ellipsoid (two for every fifth class)."""
    rng = np.random.default_rng(seed)
    depth, height, width = shape
    mask = np.zeros((classes, *shape), dtype=np.uint8)
    for k in range(classes):
        for _ in range(2 if k % 5 == 1 else 1):
            radius = rng.uniform([0.08, 0.04, 0.04], [0.3, 0.14, 0.14]) * shape
            centre = rng.uniform(
                [radius[0], 0.2 * height + radius[1], 0.15 * width + radius[2]],
                [depth - radius[0], 0.8 * height - radius[1], 0.85 * width - radius[2]],
            )
            freq, phase = rng.uniform(1, 3, 3), rng.uniform(0, 2 * np.pi, 3)
            low = np.maximum(0, (centre - 1.3 * radius).astype(int))
            high = np.minimum(shape, (centre + 1.3 * radius).astype(int) + 1)
            yy, xx = np.ogrid[low[1] : high[1], low[2] : high[2]]
            v, u = (yy - centre[1]) / radius[1], (xx - centre[2]) / radius[2]
            for start in range(low[0], high[0], 16):
                zz = np.arange(start, min(start + 16, high[0]))[:, None, None]
                w = (zz - centre[0]) / radius[0]
                lumps = 0.18 * (
                    np.sin(freq[0] * np.pi * u + phase[0]) * np.sin(freq[1] * np.pi * v + phase[1])
                    + np.sin(freq[2] * np.pi * w + phase[2])
                )
                block = mask[k, start : start + len(zz), low[1] : high[1], low[2] : high[2]]
                block |= u * u + v * v + w * w < 1 + lumps
    return mask


def instance_volume(
    shape: tuple[int, int, int] = (64, 512, 512), count: int = 2000, seed: int = 0
) -> NDArray[np.uint16]:
    """Disjoint lesion-like blobs labelled 1..count, one per cell of a 4 x 23 x 22 grid."""
    rng = np.random.default_rng(seed)
    grid = np.array([4, 23, 22])
    cell = np.array(shape) / grid
    labels = np.zeros((1, *shape), dtype=np.uint16)
    cells = np.argwhere(np.ones(grid, dtype=bool))[:count]
    for label, index in enumerate(cells, start=1):
        radius = rng.uniform([2, 3, 3], np.maximum(cell / 2 - 0.5, [2.5, 3.5, 3.5]))
        centre = (index + 0.5) * cell + rng.uniform(-1, 1, 3) * (cell / 2 - radius)
        low = np.maximum(0, (centre - radius).astype(int))
        high = np.minimum(shape, (centre + radius).astype(int) + 1)
        zz, yy, xx = np.ogrid[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
        angle = np.arctan2(yy - centre[1], xx - centre[2])
        phase = rng.uniform(0, 2 * np.pi, 2)
        lumps = 1 + 0.25 * np.sin(3 * angle + phase[0]) * np.cos(
            2 * (zz - centre[0]) / radius[0] + phase[1]
        )
        distance = sum(
            ((axis - c) / r) ** 2 for axis, c, r in zip((zz, yy, xx), centre, radius, strict=True)
        )
        block = labels[0, low[0] : high[0], low[1] : high[1], low[2] : high[2]]
        block[distance < lumps] = label
    return labels


CASES = {
    "semantic": Case("semantic 3D, 14 classes, 300x512x512", semantic_volume),
    "instance": Case("instance 3D, 2,000 labels, 64x512x512", instance_volume),
}
QUICK_CASES = {
    "semantic": Case(
        "semantic 3D, 14 classes, 24x96x96 (quick)",
        lambda: semantic_volume((24, 96, 96)),
    ),
    "instance": Case(
        "instance 3D, 120 labels, 16x128x128 (quick)",
        lambda: instance_volume((16, 128, 128), count=120),
    ),
}
STRATEGIES: dict[str, Callable[[], OutputStrategy]] = {
    "ours": SegmentationStrategy,
    "naive": NaiveSegmentationStrategy,
}


def _resident_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def measure(case: Case, strategy: str) -> dict[str, float | int | str]:
    """One timed call, in this process (the parent runs each in a child of its own)."""
    labels = case.build()
    images = [
        AiImage(id=f"slice-{z}", file_name=f"{z}.dcm", index=z) for z in range(labels.shape[1])
    ]
    categories = [{"name": f"class {c}"} for c in range(labels.shape[0])]
    formatter = STRATEGIES[strategy]()
    before = _resident_bytes()
    start = time.perf_counter()
    document = formatter(labels, images=images, categories=categories, ids=IdGenerator(seed=0))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {
        "seconds": seconds,
        "peak_bytes": max(peak, 0),
        "mask_bytes": labels.nbytes,
        "objects": len(document.objects),
        "annotations": len(document.annotations),
        "digest": hashlib.sha256(document.to_json_bytes()).hexdigest(),
    }


def _child(case: str, strategy: str, quick: bool) -> dict[str, float | int | str]:
    command = [sys.executable, "-m", "benchmarks.aicoco_bench", "--child", case, strategy]
    if quick:
        command.append("--quick")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{case}/{strategy} failed:\n{result.stderr}")
    measured: dict[str, float | int | str] = json.loads(result.stdout.splitlines()[-1])
    return measured


def report(quick: bool) -> int:
    cases = QUICK_CASES if quick else CASES
    print(
        "aicoco segmentation formatting: SegmentationStrategy() vs FLaVor's per-label,\n"
        "per-slice loop (same tracer, same output). Peak = extra resident memory of the call.\n"
    )
    header = (
        f"{'case':<44} {'objects':>7} {'annots':>7} {'ours s':>8} {'naive s':>8} {'speed-up':>8}"
        f" {'ours peak':>10} {'naive peak':>10} {'mask':>9} {'ours/mask':>9} {'same':>5}"
    )
    print(header)
    print("-" * len(header))
    status = 0
    for name, case in cases.items():
        ours, naive = _child(name, "ours", quick), _child(name, "naive", quick)
        same = ours["digest"] == naive["digest"]
        status |= 0 if same else 1
        print(
            f"{case.description:<44} {ours['objects']:>7} {ours['annotations']:>7}"
            f" {float(ours['seconds']):>8.2f} {float(naive['seconds']):>8.2f}"
            f" {float(naive['seconds']) / float(ours['seconds']):>7.1f}x"
            f" {int(ours['peak_bytes']) / MIB:>6.0f} MiB {int(naive['peak_bytes']) / MIB:>6.0f} MiB"
            f" {int(ours['mask_bytes']) / MIB:>5.0f} MiB"
            f" {int(ours['peak_bytes']) / int(ours['mask_bytes']):>8.2f}x"
            f" {'yes' if same else 'NO':>5}",
            flush=True,
        )
    return status


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks aicoco", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small volumes, a smoke run")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "STRATEGY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        case, strategy = args.child
        print(json.dumps(measure((QUICK_CASES if args.quick else CASES)[case], strategy)))
        return 0
    return report(args.quick)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
