"""``python -m triton_local``: run the local Triton on a model repository until interrupted.

Ctrl-C or SIGTERM stops the server and its backend stubs before exiting. A model that fails to
load is reported with Triton's reason and the server keeps running: fix the folder and poll mode
reloads it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from triton_local.errors import TritonStartError
from triton_local.launcher import LocalTriton


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m triton_local", description="Run the local Triton on a model repository."
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument("--grpc-port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--http-port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--metrics-port", type=int, default=8002, help="0 picks a free port")
    parser.add_argument("--log-file", type=Path, default=Path(".run/tritonserver.log"))
    parser.add_argument(
        "--poll-interval", type=int, default=5, help="seconds between repository polls"
    )
    parser.add_argument(
        "--require-all-models",
        action="store_true",
        help="exit with an error if any model fails to load at start",
    )
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM (docker stop, systemd, a supervisor) takes the same clean path as Ctrl-C. SIGINT
    # is set too: a process started with it ignored (a shell's background job) gets no
    # KeyboardInterrupt from Python, and would ignore Ctrl-C's signal.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    triton = LocalTriton(
        args.repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        host=args.host,
        log_file=args.log_file,
        poll_interval_s=args.poll_interval,
        require_all_models=args.require_all_models,
    )
    try:
        triton.start()
        print(
            f"Triton ready: grpc {triton.grpc_url}, http {triton.http_url}, "
            f"metrics {triton.metrics_url}, log {triton.log_path} (pid {triton.pid}); "
            "Ctrl-C stops it",
            flush=True,
        )
        code = triton.wait()
        print(f"tritonserver exited on its own with status {code}; see {triton.log_path}")
        return 1
    except TritonStartError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave stubs behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        triton.stop()


if __name__ == "__main__":
    sys.exit(main())
