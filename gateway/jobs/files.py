"""A job's files under ``JOBS_DIR``: ``<id>/input/`` (the upload, until the job ends) and
``<id>/result`` (its answer, until retention removes the job).

The order of writes is what makes a kill harmless (:mod:`gateway.jobs.store`): the input folder
is complete before the job's row exists, and the result is written to a hidden file, flushed,
and renamed into place before the row says the job succeeded. A folder whose job has no row is
what a kill between those steps leaves; the upkeep removes those among
:meth:`JobFiles.old_folders`, old enough that no submission can still be writing them.

Blocking file work: callers run it on a thread, except the removals that must also run while a
task is being cancelled (a few unlinks).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.jobs.ids import is_job_id

INPUT = "input"
RESULT = "result"
_PARTIAL = ".result.partial"
ORPHAN_AGE_S = 24 * 3600.0
"""A folder without a row this old belongs to a process killed while submitting (an upload can
take hours on a slow link, so the age is generous)."""


class JobFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def inputs(self, job_id: str) -> Path:
        return self.root / job_id / INPUT

    def result(self, job_id: str) -> Path:
        return self.root / job_id / RESULT

    @contextmanager
    def receiving(self, job_id: str) -> Iterator[Path]:
        """The input folder of a job being submitted; removed, with the job's folder, unless
        the block ends normally (the job's row is then written)."""
        folder = self.inputs(job_id)
        folder.mkdir(parents=True)
        try:
            yield folder
        except BaseException:
            self.remove(job_id)
            raise

    def write_result(self, job_id: str, content: bytes) -> int:
        """The result, in place only once complete and on disk; its size."""
        partial = self.folder(job_id) / _PARTIAL
        with partial.open("wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        partial.replace(self.result(job_id))
        return len(content)

    def remove_inputs(self, job_id: str) -> None:
        shutil.rmtree(self.inputs(job_id), ignore_errors=True)

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def old_folders(self, now: float | None = None) -> list[str]:
        """Job folders older than :data:`ORPHAN_AGE_S`: the only ones that may be orphans, so
        the store is asked about these few rather than every job kept."""
        now = time.time() if now is None else now
        found = []
        for entry in self.root.iterdir():
            if not is_job_id(entry.name):
                continue
            try:
                age = now - entry.stat().st_mtime
            except FileNotFoundError:
                continue
            if age > ORPHAN_AGE_S:
                found.append(entry.name)
        return found
