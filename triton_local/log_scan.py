"""Model load failures as Triton logs them.

The repository index only knows failures of models Triton got as far as loading: a folder whose
``config.pbtxt`` does not parse, or that has no version folder, shows up there without any reason
(or not at all). Triton does log every failure with its reason, and in poll mode retries a failed
folder at every poll, so the log is the one complete source. The scanner reads it incrementally.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# Triton's log line: severity+date, time, thread, source:line] then the message, quoted in
# recent versions (with JSON-style escapes, so multi-line reasons stay on one line).
_LINE = re.compile(r"^[IWE]\d{4} [\d:.]+\s+\d+ [^\]]+\] (?P<message>.*)$")
_FAILURES = (
    re.compile(r"^Poll failed for model directory '(?P<name>[^']+)': (?P<reason>.*)$", re.S),
    re.compile(r"^failed to load model '(?P<name>[^']+)': (?P<reason>.*)$", re.S),
    re.compile(r"^failed to load '(?P<name>[^']+)' version \d+: (?P<reason>.*)$", re.S),
)
_LOADED = re.compile(r"^successfully loaded '(?P<name>[^']+)'")


def _message(line: str) -> str | None:
    match = _LINE.match(line)
    if match is None:
        return None
    message = match["message"]
    if len(message) >= 2 and message.startswith('"') and message.endswith('"'):
        try:
            return str(json.loads(message))
        except ValueError:
            return message[1:-1]
    return message


class LogScanner:
    """Follows one Triton log file and keeps the latest load failure of each model.

    A later successful load of the model clears its failure.
    """

    def __init__(self, path: Path, *, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self.failures: dict[str, str] = {}
        self._partial = b""

    def update(self) -> dict[str, str]:
        """Read what was appended since the last call; return the current failures."""
        try:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                chunk = log.read()
        except FileNotFoundError:
            return self.failures
        self.offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            self._feed(raw.decode("utf-8", errors="replace"))
        return self.failures

    def _feed(self, line: str) -> None:
        message = _message(line)
        if message is None:
            return
        loaded = _LOADED.match(message)
        if loaded is not None:
            self.failures.pop(loaded["name"], None)
            return
        for pattern in _FAILURES:
            failure = pattern.match(message)
            if failure is not None:
                self.failures[failure["name"]] = failure["reason"].strip()
                return
