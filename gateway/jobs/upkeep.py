"""What every gateway does for all jobs, on a timer: queue again (or fail) the running jobs
whose gateway stopped renewing their lease, and remove what retention no longer keeps.

Several gateways run it at once on the same store; each step is a statement on the store or a
removal that tolerates another gateway having done it first.

- **Leases.** Every ``JOB_LEASE_S / 3`` (:meth:`~gateway.jobs.store.JobStore.expire_leases`):
  a job started once is queued again; a job started twice fails with ``job_interrupted``.
- **Retention.** Every minute (sooner for a short retention), and when a job ends: ended jobs
  older than ``JOB_RETENTION_S`` are removed, then those that ended first until the results
  left fit in ``JOB_MAX_BYTES``; the row first, then the files. Then what a kill left behind: an
  ended job's inputs, and a folder whose job has no row among :meth:`JobFiles.old_folders`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.errors import ApiError, JobInterrupted
from gateway.jobs.board import JobBoard
from gateway.jobs.wakeup import nap
from gateway.jobs.worker import error_object

logger = logging.getLogger("gateway.jobs")


class Upkeep:
    def __init__(self, board: JobBoard) -> None:
        self._board = board
        settings = board.settings
        self._lease_period_s = settings.job_lease_s / 3
        self._sweep_period_s = min(60.0, max(1.0, settings.job_retention_s / 10))
        self._ended = asyncio.Event()

    def wake(self) -> None:
        self._ended.set()

    async def run(self) -> None:
        swept = 0.0
        while True:
            try:
                await self.expire_leases()
                if self._ended.is_set() or time.monotonic() - swept >= self._sweep_period_s:
                    self._ended.clear()
                    swept = time.monotonic()
                    await self.sweep()
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

    async def sweep(self, now: float | None = None) -> int:
        """Remove what retention does not keep; how many jobs were removed."""
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
        for job_id, _, _ in kept:
            if board.files.inputs(job_id).exists():
                # Its gateway was killed before removing them.
                await asyncio.to_thread(board.files.remove_inputs, job_id)
        old = await asyncio.to_thread(board.files.old_folders, now)
        known = await board.store.existing(old)
        for job_id in set(old) - known:
            await asyncio.to_thread(board.files.remove, job_id)
        if removed:
            logger.info(
                "removed %d ended job(s); %d kept (%d bytes)", len(removed), len(kept), total
            )
        return len(removed)
