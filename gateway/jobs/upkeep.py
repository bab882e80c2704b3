"""What every gateway does for all jobs, on a timer: queue again (or fail) the running jobs
whose gateway stopped renewing their lease, and remove what retention no longer keeps.

Several gateways run it at once on the same store; each step is a statement on the store or a
removal that tolerates another gateway having done it first.

- **Leases.** Every ``JOB_LEASE_S / 3`` (:meth:`~gateway.jobs.store.JobStore.expire_leases`):
  a job started once is queued again; a job started twice fails with ``job_interrupted``.
- **Retention.** Every minute (sooner for a short retention), and when a job ends: ended jobs
  older than ``JOB_RETENTION_S`` are removed, then those that ended first until the results
  left fit in ``JOB_MAX_BYTES``; the row first, then the files. On the timer only, what a kill
  left behind: the inputs of a job that ended since the last look, and a folder whose job has
  no row among :meth:`JobFiles.old_folders`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.errors import ApiError, JobInterrupted
from gateway.jobs.board import JobBoard
from gateway.jobs.files import JobFiles
from gateway.jobs.wakeup import nap
from gateway.jobs.worker import error_object

logger = logging.getLogger("gateway.jobs")

CLOCK_SKEW_S = 300.0
"""How far the gateways' clocks (which stamp a job's end) may disagree."""


class Upkeep:
    def __init__(self, board: JobBoard) -> None:
        self._board = board
        settings = board.settings
        self._lease_period_s = settings.job_lease_s / 3
        self._sweep_period_s = min(60.0, max(1.0, settings.job_retention_s / 10))
        self._ended = asyncio.Event()
        self._leftovers_since = 0.0
        """Jobs that ended before this (less :data:`CLOCK_SKEW_S`) had their inputs checked:
        0 at start, so a restarted gateway looks at all of them once."""

    def wake(self) -> None:
        self._ended.set()

    async def run(self) -> None:
        swept = 0.0
        while True:
            try:
                await self.expire_leases()
                due = time.monotonic() - swept >= self._sweep_period_s
                if due or self._ended.is_set():
                    self._ended.clear()
                    # A job that ends wakes the retention (JOB_MAX_BYTES); what a kill left
                    # behind is looked for on the timer only.
                    await self.sweep(leftovers=due)
                    if due:
                        swept = time.monotonic()
            except ApiError as exc:  # the store is down: the next round tries again
                logger.warning("jobs upkeep: %s", exc.message)
            except OSError as exc:
                logger.warning("jobs upkeep: %s", exc)
            await nap(self._ended, self._lease_period_s)

    async def expire_leases(self) -> None:
        board = self._board
        interrupted = JobInterrupted(
            "the job's gateway stopped while it ran, twice (a restart or a crash); submit it again"
        )
        queued, failed = await board.store.expire_leases(error_object(interrupted, None))
        for job_id in queued:
            logger.warning("job %s: its gateway stopped while it ran; queued again", job_id)
        for job_id in failed:
            logger.warning("job %s: its gateway stopped while it ran, again; failed", job_id)
            await asyncio.to_thread(board.files.remove_inputs, job_id)
        if queued:
            board.submitted.set()
        if failed:
            board.on_end()

    async def sweep(self, now: float | None = None, *, leftovers: bool = True) -> int:
        """Remove what retention does not keep, and with ``leftovers`` what a kill left behind;
        how many jobs were removed."""
        board, settings = self._board, self._board.settings
        now = time.time() if now is None else now
        ended = await board.store.ended()
        kept = [job for job in ended if now - job[1] <= settings.job_retention_s]
        removed = [job[0] for job in ended if now - job[1] > settings.job_retention_s]
        total = sum(size for _, _, size in kept)
        while kept and total > settings.job_max_bytes:
            job_id, _, size = kept.pop(0)
            removed.append(job_id)
            total -= size
        for job_id in removed:
            if await board.store.delete(job_id):
                await asyncio.to_thread(board.files.remove, job_id)
        if leftovers:
            # Inputs a gateway killed just after a job ended did not remove: only jobs that
            # ended since the last look, so a sweep does not stat every job kept.
            since = self._leftovers_since - CLOCK_SKEW_S
            recent = [job_id for job_id, finished_at, _ in kept if finished_at >= since]
            await asyncio.to_thread(_remove_inputs_left, board.files, recent)
            self._leftovers_since = now
            old = await asyncio.to_thread(board.files.old_folders, now)
            known = await board.store.existing(old)
            for job_id in set(old) - known:
                await asyncio.to_thread(board.files.remove, job_id)
        if removed:
            logger.info(
                "removed %d ended job(s); %d kept (%d bytes)", len(removed), len(kept), total
            )
        return len(removed)


def _remove_inputs_left(files: JobFiles, job_ids: list[str]) -> None:
    for job_id in job_ids:
        if files.inputs(job_id).exists():
            files.remove_inputs(job_id)
