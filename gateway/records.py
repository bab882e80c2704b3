"""The records artifacts of tabular answers: written atomically, served by name, cleaned up.

A tabular answer's records live in ``RECORDS_DIR/records_<21-character id>.jsonl``, served at
``GET /invocations/artifacts/<name>`` as FLaVor serves them. FLaVor never deletes them; here
:meth:`RecordsStore.sweep` removes every artifact older than ``RECORDS_RETENTION_S`` and then the
oldest ones until the folder holds at most ``RECORDS_MAX_BYTES``. It runs after every write and
on a timer, so a disk fills with neither old results nor a burst of large ones.

A writer appends to a hidden temporary file (``.records_<id>.jsonl.partial``) and renames it
into place only when the answer is complete, so a reader never sees half an artifact and a
failed request leaves nothing behind (the temporary file is removed). Only names matching the
pattern are ever served: a path, a dot file or any other name is a 404 without touching disk.

Several gateway replicas: each serves the artifacts in its own ``RECORDS_DIR``. Put the folder
on a volume every replica mounts (compose's ``records`` volume; a ReadWriteMany claim on
Kubernetes) so that any replica answers any href; sweeps from several replicas agree, because
they read the same files and a file another replica removed first is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from aicoco import IdGenerator
from aicoco.tables import AiRecords
from gateway.settings import Settings

logger = logging.getLogger("gateway.records")

HREF_PREFIX = "/invocations/artifacts/"
NAME = re.compile(r"^records_[A-Za-z0-9_-]{21}\.jsonl$")
_PARTIAL = ".partial"
_STALE_PARTIAL_S = 24 * 3600.0
"""A temporary file this old belongs to a process that died while writing: removed."""


@dataclass(frozen=True)
class Sweep:
    removed: int
    kept: int
    kept_bytes: int


class RecordsWriter:
    """One artifact being written: :meth:`write` appends JSON Lines, :meth:`commit` puts it in
    place, :meth:`discard` removes it. Each is blocking file work: run it off the event loop."""

    def __init__(self, store: RecordsStore, final: Path) -> None:
        self.store = store
        self.final = final
        self.name = final.name
        self.partial = final.with_name("." + final.name + _PARTIAL)
        self._file: IO[bytes] = self.partial.open("wb")
        self.rows = 0
        self.bytes = 0

    def write(self, lines: bytes, records: int) -> None:
        self._file.write(lines)
        self.rows += records
        self.bytes += len(lines)

    def commit(self) -> None:
        """Flush to disk, rename into place, then sweep the store."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self.partial.replace(self.final)
        self.store.sweep(keep=self.name)

    def reference(self) -> AiRecords:
        """The answer's ``records``."""
        return AiRecords(href=HREF_PREFIX + self.name, rows=self.rows, bytes=self.bytes)

    def discard(self) -> None:
        self._file.close()
        self.partial.unlink(missing_ok=True)


class RecordsStore:
    def __init__(self, folder: Path, *, retention_s: float, max_bytes: int) -> None:
        self.folder = folder
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self._ids = IdGenerator()
        folder.mkdir(parents=True, exist_ok=True)

    @classmethod
    def of(cls, settings: Settings) -> RecordsStore:
        return cls(
            settings.records_dir,
            retention_s=settings.records_retention_s,
            max_bytes=settings.records_max_bytes,
        )

    def open(self) -> RecordsWriter:
        """A new artifact, hidden until :meth:`RecordsWriter.commit`."""
        return RecordsWriter(self, self.folder / f"records_{self._ids()}.jsonl")

    @contextlib.contextmanager
    def writer(self) -> Iterator[RecordsWriter]:
        """:meth:`open` for code on a worker thread: committed when the block ends normally,
        discarded when it raises."""
        writer = self.open()
        try:
            yield writer
        except BaseException:
            writer.discard()
            raise
        writer.commit()

    def path(self, name: str) -> Path | None:
        """The artifact called ``name``, if the name is one this store makes and it exists."""
        if not NAME.match(name):
            return None
        path = self.folder / name
        return path if path.is_file() else None

    def sweep(self, now: float | None = None, *, keep: str | None = None) -> Sweep:
        """Remove what is past retention, then the oldest until under the size cap; ``keep``
        (the artifact just written, whose href is about to be answered) stays even when it
        alone is over the cap."""
        now = time.time() if now is None else now
        artifacts: list[tuple[float, int, Path]] = []
        removed = 0
        for entry in self._entries():
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue  # another replica's sweep was first
            age = now - stat.st_mtime
            if entry.name.endswith(_PARTIAL):
                if age > _STALE_PARTIAL_S:
                    removed += _remove(entry)
                continue
            if age > self.retention_s:
                removed += _remove(entry)
            else:
                artifacts.append((stat.st_mtime, stat.st_size, entry))
        total = sum(size for _, size, _ in artifacts)
        artifacts.sort()
        kept: list[tuple[float, int, Path]] = []
        while artifacts and total > self.max_bytes:
            oldest = artifacts.pop(0)
            if oldest[2].name == keep:
                kept.append(oldest)
                continue
            removed += _remove(oldest[2])
            total -= oldest[1]
        artifacts += kept
        if removed:
            logger.info(
                "removed %d records artifact(s); %d kept (%d bytes)",
                removed,
                len(artifacts),
                total,
            )
        return Sweep(removed, len(artifacts), total)

    def _entries(self) -> Iterator[Path]:
        for entry in self.folder.iterdir():
            name = entry.name
            if NAME.match(name) or (
                name.startswith(".records_") and name.endswith(".jsonl" + _PARTIAL)
            ):
                yield entry


def _remove(path: Path) -> int:
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1
