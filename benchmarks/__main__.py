"""``python -m benchmarks [NAME [ARGS...]]``: one benchmark, or every available one in turn."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import cast

Main = Callable[[list[str]], int]

MODULES = {
    "aicoco": "benchmarks.aicoco_bench",
    "gateway": "benchmarks.gateway_bench",
    "tables": "benchmarks.tables_bench",
    "volume": "benchmarks.volume_bench",
}
"""Benchmark name -> module defining ``main(argv) -> int``, imported only when it runs."""

LONG = {"soak": "benchmarks.soak", "ort-arena": "benchmarks.ort_arena"}
"""Run only when named: the soak (``make soak``, minutes long) and the probes that explain what
it measures; not part of ``make bench``."""


def registry() -> dict[str, Main]:
    """The benchmarks whose module exists, each imported lazily when called."""
    return {
        name: _lazy(module)
        for name, module in {**MODULES, **LONG}.items()
        if importlib.util.find_spec(module) is not None
    }


def _lazy(module: str) -> Main:
    def run(argv: list[str]) -> int:
        return cast(Main, importlib.import_module(module).main)(argv)

    return run


def main(argv: list[str]) -> int:
    benchmarks = registry()
    if not argv:
        status = 0
        for name, run in benchmarks.items():
            if name in LONG:
                continue
            print(f"== {name} ==", flush=True)
            status = max(status, run([]))
        return status
    name, *rest = argv
    if name not in benchmarks:
        print(f"unknown benchmark {name!r}; available: {', '.join(benchmarks)}", file=sys.stderr)
        return 2
    return benchmarks[name](rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
