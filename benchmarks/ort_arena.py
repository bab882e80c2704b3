"""``python -m benchmarks ort-arena``: what ONNX Runtime's CPU arena keeps, for one example model.

The soak's backend stubs (the local backend's ONNX Runtime sessions) grow in steps for the
first 20 minutes and then hold. This runs one model the way the local backend runs it
(:func:`triton_local.ort_runner.create_session`), on batches of random sizes up to its
``max_batch_size`` as Triton's dynamic batcher forms them, and samples the process's anonymous
memory: once with the arena (ONNX Runtime's default, and the local backend's), once without.
With the arena, each batch larger than the arena's free blocks extends it, and what it extends
it keeps; so it climbs in steps and levels off, bounded by the largest batches. Without it the
memory is what one batch needs.

Run it under the allocator Triton runs under (``LD_PRELOAD`` jemalloc, as ``make soak`` does)
to compare with the stubs.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.gateway_bench import status_kib
from triton_local.ort_runner import SessionSettings, create_session

MODEL_REPOSITORY = Path("model_repository")


def run(model: Path, item: tuple[int, ...], max_batch: int, runs: int, arena: bool) -> list[int]:
    """Anonymous memory (MiB) after every twentieth of ``runs`` batches."""
    if arena:
        session = create_session(model, SessionSettings(intra_op_threads=1))
    else:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False
        session = ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
    name = session.get_inputs()[0].name
    sizes = random.Random(0)
    values = np.random.default_rng(0)
    sampled = []
    every = max(runs // 20, 1)
    for k in range(runs):
        batch = values.random((sizes.randint(1, max_batch), *item), dtype=np.float32)
        session.run(None, {name: batch})
        if k % every == every - 1:
            sampled.append(status_kib(os.getpid(), "RssAnon") // 1024)
    return sampled


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ort-arena")
    parser.add_argument("--model", default="lesion_segmenter_3d")
    parser.add_argument("--item", default="1x256x256", help="one batch item's shape")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--no-arena", action="store_true", help="the session without its arena")
    args = parser.parse_args(argv)
    model = MODEL_REPOSITORY / args.model / "1" / "model.onnx"
    item = tuple(int(n) for n in args.item.split("x"))
    arena = not args.no_arena
    sampled = run(model, item, args.max_batch, args.runs, arena)
    print(
        f"{args.model}, batches of 1 to {args.max_batch} x {args.item}, "
        f"{'with' if arena else 'without'} the CPU arena: anonymous memory (MiB) after each "
        f"{args.runs // 20} batches: {', '.join(map(str, sampled))}"
    )
    return 0
