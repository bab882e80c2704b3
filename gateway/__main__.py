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
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.launch import DEFAULT_REPOSITORY, RUN_DIR, run_local, serve
from gateway.settings import Settings, SettingsError

KEY_VARIABLE = "GATEWAY_API_KEY"
"""Where ``send`` finds its API key by default: a client-side variable, not a setting."""


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
    run.add_argument(
        "--repository",
        type=Path,
        default=DEFAULT_REPOSITORY,
        help="Triton model repository (default: %(default)s, in the working directory)",
    )
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
    send.add_argument(
        "--key",
        default=os.environ.get(KEY_VARIABLE) or None,
        help=f"an API key, sent as X-API-Key (default: ${KEY_VARIABLE}; the environment keeps it "
        "out of the process list)",
    )
    send.add_argument(
        "--job",
        action="store_true",
        help="submit as a job and follow it (progress on stderr; Ctrl-C cancels it): for long "
        "work, e.g. a CT series through a volumetric model",
    )
    send.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the answer (with --job: for each call)",
    )
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
            job=args.job,
            key=args.key,
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


if __name__ == "__main__":
    sys.exit(main())
