"""``python -m gateway send``: post image or table files to a gateway the way FLaVor clients do.

Standard library only, so that it runs where only the aicoco library is installed: repeated
``files`` parts streamed from disk (a CT series is never held in memory), an ``images`` field
with one entry per image, a ``tables`` field with one entry per ``.csv`` or ``.tsv`` file (and
``meta`` with ``window_size``), and any extra JSON fields. Images and tables together make a
hybrid request: each image names its table (the one table, or the table in the same position).

With ``--job`` the same form is submitted as a job (``POST /models/{name}/jobs``): the command
follows it, printing each change of its state, stage and progress to stderr (slices read,
patches done of total), then fetches the result and treats it as the synchronous answer. Ctrl-C
while it waits cancels the job (``DELETE``). Long work, a CT series through a volumetric model
on a CPU host, then survives proxies and timeouts between the client and the gateway.
"""

from __future__ import annotations

import json
import mimetypes
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CHUNK = 1024 * 1024
TABLE_SUFFIXES = frozenset({".csv", ".tsv"})
POLL_S = 0.5
"""How often ``--job`` asks for the job's status."""


def send_files(
    files: Sequence[Path],
    *,
    model: str | None,
    url: str,
    fields: Sequence[str],
    timeout_s: float,
    output: str = "aicoco",
    save: Path | None = None,
    window_size: int = 1,
    records: Path | None = None,
    job: bool = False,
    poll_s: float = POLL_S,
    key: str | None = None,
) -> int:
    """Post like a FLaVor client: repeated ``files`` parts and an ``images`` JSON field.

    The AiCOCO answer is printed; a DICOM one (``output`` seg, sr or dicom) is saved to ``save``,
    or under the name the gateway's Content-Disposition suggests, and its path printed. A
    tabular answer's records are downloaded to ``records`` when it is given. With ``job``, the
    form is submitted as a job and followed until it ends (``timeout_s`` then bounds each call,
    not the job). ``key`` is sent as ``X-API-Key`` with every call.
    """
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
    table_files = [path for path in files if path.suffix.lower() in TABLE_SUFFIXES]
    image_files = [path for path in files if path.suffix.lower() not in TABLE_SUFFIXES]
    tables = [{"id": ids(), "file_name": path.name} for path in table_files]
    images: list[dict[str, Any]] = [
        {
            "id": ids(),
            "file_name": path.name,
            "index": index,
            "category_ids": None,
            "regressions": None,
        }
        for index, path in enumerate(image_files)
    ]
    if images and tables:
        if len(tables) not in (1, len(images)):
            print(
                f"{len(images)} images and {len(tables)} tables: a hybrid request links each "
                "image to one table, so send one table, or one per image (in the same order)",
                file=sys.stderr,
            )
            return 2
        for position, image in enumerate(images):
            image["table_ids"] = [tables[position if len(tables) > 1 else 0]["id"]]
    form: dict[str, str] = {}
    if images:
        form["images"] = json.dumps(images)
    if tables:
        form["tables"] = json.dumps(tables)
        form["meta"] = json.dumps({"window_size": window_size})
    for item in fields:
        name, sep, value = item.partition("=")
        if not sep or not name or not _is_json(value):
            print(f"--field takes NAME=JSON (valid JSON), got {item!r}", file=sys.stderr)
            return 2
        form[name] = value
    boundary = uuid.uuid4().hex
    parts = list(_multipart_parts(files, form, boundary))
    length = sum(part.stat().st_size if isinstance(part, Path) else len(part) for part in parts)
    route = "jobs" if job else "invocations"
    target = url.rstrip("/") + (f"/models/{model}/{route}" if model else f"/{route}")
    if output != "aicoco":
        target += f"?output={output}"
    gateway = _Gateway(url.rstrip("/"), timeout_s, key)
    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(length),
    }
    try:
        with gateway.open(target, "POST", _stream(parts), headers) as response:
            if not job:
                return _answer(response, gateway, save, records)
            status = json.load(response)
    except (urllib.error.URLError, OSError) as exc:
        return _failed(target, exc)
    return _follow(gateway.url + status["href"], gateway, save, records, poll_s)


@dataclass(frozen=True)
class _Gateway:
    """Where the calls go, how long each may take, and the API key they carry."""

    url: str
    timeout_s: float
    key: str | None

    def open(
        self,
        target: str,
        method: str = "GET",
        data: Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        sent = {**(headers or {}), **({"X-API-Key": self.key} if self.key else {})}
        request = urllib.request.Request(target, data=data, method=method, headers=sent)
        return urllib.request.urlopen(request, timeout=self.timeout_s)


def _answer(response: Any, gateway: _Gateway, save: Path | None, records: Path | None) -> int:
    """Print the AiCOCO answer (and fetch its records), or save the DICOM one."""
    if response.headers.get_content_type() == "application/dicom":
        path = save or Path(response.headers.get_filename() or "result.dcm").name
        Path(path).write_bytes(response.read())
        print(path)
        return 0
    body: Any = json.load(response)
    print(json.dumps(body, indent=2, ensure_ascii=False))
    href = body.get("records", {}).get("href") if isinstance(body, dict) else None
    if records is not None and href:
        return _download(gateway, gateway.url + href, records)
    return 0


def _follow(
    job: str, gateway: _Gateway, save: Path | None, records: Path | None, poll_s: float
) -> int:
    """Poll the job, saying each change on stderr, until it ends; then its answer."""
    shown = ""
    try:
        while True:
            with gateway.open(job) as response:
                status = json.load(response)
            line = _describe(status)
            if line != shown:
                print(line, file=sys.stderr, flush=True)
                shown = line
            if status["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        try:
            with gateway.open(job, "DELETE"):
                print(f"job {job} cancelled", file=sys.stderr)
        except (urllib.error.URLError, OSError) as exc:
            _failed(job, exc)
        return 130
    except (urllib.error.URLError, OSError) as exc:
        return _failed(job, exc)
    if status["state"] != "succeeded":
        print(json.dumps(status.get("error"), indent=2), file=sys.stderr)
        return 1
    try:
        with gateway.open(job + "/result") as response:
            return _answer(response, gateway, save, records)
    except (urllib.error.URLError, OSError) as exc:
        return _failed(job + "/result", exc)


def _describe(status: dict[str, Any]) -> str:
    """``job X: running, triton, patches 40 of 175``."""
    words = [f"job {status['id']}: {status['state']}"]
    if status.get("queue_position") is not None:
        words.append(f"{status['queue_position']} ahead")
    if status.get("stage"):
        words.append(status["stage"])
    progress = status.get("progress")
    if progress:
        words.append(f"{progress['unit']} {progress['done']} of {progress['total']}")
    return ", ".join(words)


def _download(gateway: _Gateway, target: str, path: Path) -> int:
    """The records artifact, streamed to ``path``; its line count printed to stderr."""
    try:
        with gateway.open(target) as response, path.open("wb") as out:
            lines = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                lines += chunk.count(b"\n")
    except (urllib.error.URLError, OSError) as exc:
        return _failed(target, exc)
    print(f"{lines} records in {path}", file=sys.stderr)
    return 0


def _failed(target: str, exc: urllib.error.URLError | OSError) -> int:
    """Say why a call failed: the gateway's error body, or why it could not be reached."""
    if isinstance(exc, urllib.error.HTTPError):
        print(f"HTTP {exc.code}: {exc.read().decode('utf-8', 'replace')}", file=sys.stderr)
    else:
        print(f"cannot reach {target}: {exc}", file=sys.stderr)
    return 1


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
