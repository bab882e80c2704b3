"""Starting the gateway: alone against ``TRITON_URL``, or with a local Triton it supervises.

The command line (``python -m gateway``) and FLaVor's ``InferAPP.run`` both start it from here.
Paths are the caller's: the model repository and the folder for Triton's log are arguments, by
default relative to the working directory (``make run`` runs in the repository's root), never
to where this package is installed.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.pipelines.catalog import Factories

DEFAULT_REPOSITORY = Path("model_repository")
RUN_DIR = Path(".run")


def serve(settings: Settings, pipelines: Factories | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then let requests in progress finish."""
    from gateway import server
    from gateway.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    server.serve(settings, pipelines)


def run_local(
    settings: Settings, repository: Path, log_dir: Path, pipelines: Factories | None = None
) -> int:
    """The embedded default (``make run``): local Triton on free ports, then the gateway."""
    from gateway.logs import configure_logging
    from triton_local import LocalTriton, TritonStartError, TritonSupervisor

    configure_logging(settings.log_level, settings.log_format)
    # SIGTERM outside the event loop must unwind too, so that Triton is stopped on the way out.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    triton_log = (log_dir / "tritonserver.log").resolve()
    print(f"Starting Triton on {repository} (log: {triton_log})", file=sys.stderr, flush=True)
    triton = LocalTriton(repository, grpc_port=0, http_port=0, metrics_port=0, log_file=triton_log)
    try:
        # Supervised: a Triton that dies is cleaned up and restarted on the same ports, and the
        # gateway reconnects to it without a restart of its own.
        with TritonSupervisor(triton):
            settings = replace(settings, triton_url=triton.grpc_url)
            exposed = settings.host in {"0.0.0.0", "::"}
            shown = "127.0.0.1" if exposed else settings.host
            if exposed:
                print(
                    f"HOST={settings.host}: the gateway accepts patient images from the whole "
                    "network, without authentication.",
                    file=sys.stderr,
                    flush=True,
                )
            print(
                f"Triton is up at {triton.grpc_url} (gRPC); its log: {triton_log}\n"
                f"Gateway: http://{shown}:{settings.port} (docs: /docs); its log: this terminal\n"
                "Ctrl-C stops both.",
                file=sys.stderr,
                flush=True,
            )
            serve(settings, pipelines)
            signal.signal(signal.SIGTERM, _exit_on_signal)
    except TritonStartError as exc:
        print(f"Triton did not start: {exc} (log: {triton_log})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
