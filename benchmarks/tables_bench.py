"""A table of a million rows through the tabular regressor, against FLaVor's in-process way.

``python -m benchmarks tables`` writes a CSV of ``--rows`` rows of the housing columns, posts
it to the gateway (local Triton, ``house_value_regressor``) and downloads the records artifact.
It reports the gateway's peak resident memory (``VmHWM`` after resetting it) against the file's
size (target: below 3 x), and the time against a baseline measured in the same run: the way a
FLaVor tabular service does it, in one process (pandas reads the whole table, ONNX Runtime runs
the same model in-process, every record is built and written as JSON), with that process's
peak memory too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.gateway_bench import ROOT, gateway_process, local_triton, status_kib
from training.tables import HOUSING_COLUMNS, housing_table

MODEL = "house_value_regressor"
MEMORY_TARGET = 3.0
"""Gateway peak resident memory / table bytes."""


def write_table(path: Path, rows: int) -> None:
    table = housing_table(5, rows)
    with path.open("w") as file:
        file.write(",".join(HOUSING_COLUMNS) + "\n")
        np.savetxt(file, table.values, delimiter=",", fmt="%.6g")


def baseline(path: Path) -> dict[str, float]:
    """What a FLaVor tabular service does, timed; run in its own process (``--baseline``).

    Its peak is this process's ``VmHWM``: ``ru_maxrss`` would carry the parent's peak over
    (Linux keeps it across ``execve``), and the parent has just run the other benchmarks.
    """
    import onnxruntime as ort
    import pandas as pd

    start = time.perf_counter()
    session = ort.InferenceSession(
        str(ROOT / "model_repository" / MODEL / "1" / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    frame = pd.read_csv(path)
    features = frame[list(HOUSING_COLUMNS)].to_numpy(dtype=np.float32)[:, None, :]
    values = np.concatenate(
        [
            session.run(None, {"features": features[i : i + 4096]})[0]
            for i in range(0, len(features), 4096)
        ]
    )
    with (path.parent / "baseline.jsonl").open("w") as out:
        for row, value in enumerate(values[:, 0].tolist()):
            record = {
                "id": f"{row:021d}",
                "table_id": "t",
                "row_indexes": [row],
                "category_ids": None,
                "regressions": [{"regression_id": "r", "value": value}],
            }
            out.write(json.dumps(record) + "\n")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_kib": float(status_kib(os.getpid(), "VmHWM"))}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks tables")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline is not None:
        print(json.dumps(baseline(args.baseline)))
        return 0
    with tempfile.TemporaryDirectory(prefix="tables-bench-") as tmp:
        workdir = Path(tmp)
        table = workdir / "blocks.csv"
        write_table(table, args.rows)
        size = table.stat().st_size
        print(f"Tabular regression: {MODEL}, {args.rows:,} rows, {size / 2**20:.0f} MiB of CSV")
        reference = json.loads(
            subprocess.run(
                [sys.executable, "-m", "benchmarks.tables_bench", "--baseline", str(table)],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        records = workdir / "records"
        triton = local_triton(workdir)
        with triton:
            triton.wait_for_model(MODEL)
            settings = {"RECORDS_DIR": str(records), "RECORDS_MAX_BYTES": "8GiB"}
            with gateway_process(triton.grpc_url, workdir, settings) as (url, pid):
                idle_kib = status_kib(pid, "VmRSS")
                Path(f"/proc/{pid}/clear_refs").write_text("5")
                fields = {
                    "tables": json.dumps([{"id": "blocks", "file_name": table.name}]),
                    "meta": json.dumps({"window_size": 1}),
                }
                start = time.perf_counter()
                with table.open("rb") as file:
                    response = httpx.post(
                        f"{url}/models/{MODEL}/invocations",
                        data=fields,
                        files=[("files", (table.name, file, "text/csv"))],
                        timeout=1800,
                    )
                answered = time.perf_counter() - start
                response.raise_for_status()
                peak_kib = status_kib(pid, "VmHWM")
                answer = response.json()
                lines = 0
                with httpx.stream("GET", url + answer["records"]["href"], timeout=600) as download:
                    for chunk in download.iter_bytes():
                        lines += chunk.count(b"\n")
                total = time.perf_counter() - start
    rows = answer["records"]["rows"]
    print(
        f"  gateway: answered in {answered:.1f} s ({rows / answered:,.0f} records/s), "
        f"artifact {answer['records']['bytes'] / 2**20:.0f} MiB downloaded with {lines:,} lines "
        f"({total:.1f} s in all)"
    )
    ratio = peak_kib * 1024 / size
    verdict = "meets" if ratio < MEMORY_TARGET else "misses"
    print(
        f"  gateway peak memory {peak_kib / 1024:.0f} MiB (idle {idle_kib / 1024:.0f} MiB) = "
        f"{ratio:.2f} x the file ({verdict} the < {MEMORY_TARGET:g} x target); the request "
        f"itself {(peak_kib - idle_kib) * 1024 / size:.2f} x"
    )
    print(
        "  in-process baseline (pandas + ONNX Runtime + JSON lines): "
        f"{reference['seconds']:.1f} s, peak memory {reference['peak_kib'] / 1024:.0f} MiB = "
        f"{reference['peak_kib'] * 1024 / size:.2f} x the file"
    )
    print(
        f"  gateway / baseline: time {answered / reference['seconds']:.2f} x, peak memory "
        f"{peak_kib / reference['peak_kib']:.2f} x"
    )
    return 0 if ratio < MEMORY_TARGET and lines == rows == args.rows else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
