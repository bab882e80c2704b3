"""Command line: ``serve`` the gateway, ``run`` it with a local Triton, ``send`` a request.

python -m gateway serve                 # the gateway alone, against TRITON_URL (compose)
python -m gateway run                   # local Triton on model_repository/ + the gateway
python -m gateway send a.png b.png      # post files the way FLaVor clients do

``aicoco-gateway`` (the installed console script) is the same command. The server's imports are
inside the commands that need them, so that ``send`` (:mod:`gateway.send`) starts quickly and
works where only the aicoco library is installed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from gateway.settings import Settings, SettingsError

if TYPE_CHECKING:
    from gateway.pipelines.catalog import Factories

REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"
RUN_DIR = Path(".run")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aicoco-gateway",
        description="Serve the AiCOCO gateway, run it with a local Triton, or send it a request.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "serve", help="serve the gateway against TRITON_URL (settings from the environment)"
    )
    run = commands.add_parser(
        "run",
        help="start a local Triton on the model repository, then the gateway (Ctrl-C stops both)",
    )
    run.add_argument("--repository", type=Path, default=REPOSITORY, help="Triton model repository")
    run.add_argument("--log-dir", type=Path, default=RUN_DIR, help="where Triton's log goes")
    send = commands.add_parser("send", help="post image or table files and print the AiCOCO answer")
    send.add_argument(
        "files",
        nargs="+",
        type=Path,
        help="image files (one images entry each) and .csv/.tsv tables (one tables entry each)",
    )
    send.add_argument("--model", help="model name (default: the gateway's default model)")
    send.add_argument(
        "--url",
        default=f"http://127.0.0.1:{os.environ.get('PORT', '9111')}",
        help="gateway base URL (default: %(default)s)",
    )
    send.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help='an extra JSON field, e.g. --field \'meta={"task_type": "x"}\' (repeatable)',
    )
    send.add_argument(
        "--output",
        choices=["aicoco", "seg", "sr", "dicom"],
        default="aicoco",
        help="the answer: AiCOCO (printed), or a DICOM SEG or SR (saved; see --save)",
    )
    send.add_argument(
        "--save",
        type=Path,
        help="where a DICOM answer goes (default: the file name the gateway suggests, here)",
    )
    send.add_argument(
        "--window-size",
        type=int,
        default=1,
        help="tables: the rows that make one record, sent as meta.window_size (default 1)",
    )
    send.add_argument(
        "--records", type=Path, help="tables: download the answer's records (JSON Lines) here"
    )
    send.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the answer")
    new_key = commands.add_parser(
        "new-key", help="make an API key; prints the key (for the client) and its API_KEYS entry"
    )
    new_key.add_argument("id", help="the key's name in the audit log, e.g. the client's")
    args = parser.parse_args(argv)

    if args.command == "new-key":
        from gateway.keys import new_key as make_key

        try:
            key, entry = make_key(args.id)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"key (give it to the client; it is not stored): {key}")
        print(f"entry (for API_KEYS or API_KEYS_FILE): {entry}")
        return 0

    if args.command == "send":
        from gateway.send import send_files

        return send_files(
            args.files,
            model=args.model,
            url=args.url,
            fields=args.field,
            timeout_s=args.timeout,
            output=args.output,
            save=args.save,
            window_size=args.window_size,
            records=args.records,
        )
    try:
        settings = Settings.from_env()
        _check_pipelines(settings)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        serve(settings)
        return 0
    return run_local(settings, args.repository, args.log_dir)


def _check_pipelines(settings: Settings) -> None:
    """Import the custom pipelines now, so a typo is one clear line rather than a failed start."""
    from gateway.pipelines.catalog import load_pipeline_class

    for model, target in settings.pipelines.items():
        load_pipeline_class(model, target)


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


if __name__ == "__main__":
    sys.exit(main())
