"""Command line: ``serve`` the gateway, ``run`` it with a local Triton, ``send`` a request.

python -m gateway serve                 # the gateway alone, against TRITON_URL (compose)
python -m gateway run                   # local Triton on model_repository/ + the gateway
python -m gateway send a.png b.png      # post files the way FLaVor clients do

The server's imports are inside the commands that need them, so that ``send`` starts quickly
and works where only the aicoco library is installed.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import signal
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from gateway.settings import Settings, SettingsError

REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"
RUN_DIR = Path(".run")
_CHUNK = 1024 * 1024


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__.split("\n")[0])
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
    send = commands.add_parser("send", help="post image files and print the AiCOCO answer")
    send.add_argument("files", nargs="+", type=Path, help="image files, one images entry each")
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
    send.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)

    if args.command == "send":
        return send_files(
            args.files, model=args.model, url=args.url, fields=args.field, timeout_s=args.timeout
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


def serve(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then let requests in progress finish."""
    from gateway import server
    from gateway.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    server.serve(settings)


def run_local(settings: Settings, repository: Path, log_dir: Path) -> int:
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
            serve(settings)
            signal.signal(signal.SIGTERM, _exit_on_signal)
    except TritonStartError as exc:
        print(f"Triton did not start: {exc} (log: {triton_log})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def send_files(
    files: Sequence[Path], *, model: str | None, url: str, fields: Sequence[str], timeout_s: float
) -> int:
    """Post like a FLaVor client: repeated ``files`` parts and an ``images`` JSON field."""
    from aicoco import IdGenerator

    names = [path.name for path in files]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        print(f"file names must be unique, repeated: {', '.join(duplicates)}", file=sys.stderr)
        return 2
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        print(f"not a file: {', '.join(missing)}", file=sys.stderr)
        return 2
    ids = IdGenerator()
    images = [
        {
            "id": ids(),
            "file_name": path.name,
            "index": index,
            "category_ids": None,
            "regressions": None,
        }
        for index, path in enumerate(files)
    ]
    form: dict[str, str] = {"images": json.dumps(images)}
    for item in fields:
        name, sep, value = item.partition("=")
        if not sep or not name or not _is_json(value):
            print(f"--field takes NAME=JSON (valid JSON), got {item!r}", file=sys.stderr)
            return 2
        form[name] = value
    boundary = uuid.uuid4().hex
    parts = list(_multipart_parts(files, form, boundary))
    length = sum(part.stat().st_size if isinstance(part, Path) else len(part) for part in parts)
    target = url.rstrip("/") + (f"/models/{model}/invocations" if model else "/invocations")
    request = urllib.request.Request(
        target,
        data=_stream(parts),
        method="POST",
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(length),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body: Any = json.load(response)
    except urllib.error.HTTPError as exc:
        print(f"HTTP {exc.code}: {exc.read().decode('utf-8', 'replace')}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"cannot reach {target}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2, ensure_ascii=False))
    return 0


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _multipart_parts(
    files: Sequence[Path], form: dict[str, str], boundary: str
) -> Iterator[bytes | Path]:
    for name, value in form.items():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n'
            f"Content-Type: application/json\r\n\r\n"
        ).encode()
        yield value.encode()
        yield b"\r\n"
    for path in files:
        content_type = mimetypes.guess_type(path.name)[0] or (
            "application/dicom" if path.suffix.lower() == ".dcm" else "application/octet-stream"
        )
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="{_quote(path.name)}"\r\nContent-Type: {content_type}\r\n\r\n'
        ).encode()
        yield path
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _stream(parts: Sequence[bytes | Path]) -> Iterator[bytes]:
    for part in parts:
        if isinstance(part, bytes):
            yield part
            continue
        with part.open("rb") as file:
            while chunk := file.read(_CHUNK):
                yield chunk


if __name__ == "__main__":
    sys.exit(main())
