"""What the job routes ask of one gateway process: submit, find, cancel, remove.

The board holds the store and the files, and the jobs this process is running now (their
tasks), so that a ``DELETE`` answered here stops its own job at once; a job running on another
gateway stops there at that gateway's next progress report, which finds it cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.errors import JobNotFound, ServerBusy
from gateway.jobs.files import JobFiles
from gateway.jobs.ids import is_job_id, runner_id
from gateway.jobs.status import status_of
from gateway.jobs.store import Job, JobStore, State
from gateway.metrics import Metrics
from gateway.schemas import JobStatus
from gateway.settings import Settings

logger = logging.getLogger("gateway.jobs")

CANCEL_WAIT_S = 1.0
"""How long a DELETE waits for its running job's task to unwind (its slot, its Triton calls)."""


class JobBoard:
    def __init__(
        self, settings: Settings, store: JobStore, files: JobFiles, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.store = store
        self.files = files
        self.metrics = metrics
        self.runner = runner_id()
        self.running: dict[str, asyncio.Task[None]] = {}
        """This process's running jobs, by id."""
        self.submitted = asyncio.Event()
        """Set when a job is queued here, so that an idle worker need not wait for its poll."""
        self.on_end: Callable[[], None] = lambda: None
        """Called when a job ends here (the callback sender's and the upkeep's wake-up)."""

    async def submit(self, job: Job) -> None:
        if not await self.store.add(job, self.settings.job_max_queued):
            raise ServerBusy(
                f"{self.settings.job_max_queued} jobs are already queued (JOB_MAX_QUEUED); "
                "retry later",
                details={"limit": self.settings.job_max_queued, "stage": "jobs"},
            )
        self.metrics.jobs_submitted.labels(kind=job.kind.value).inc()
        logger.info("job %s queued for model %r", job.id, job.model)
        self.submitted.set()

    async def find(self, job_id: str, owner: str) -> Job:
        """The job, if ``owner`` (the API key's id) submitted it; else 404, as for no job at all,
        so that a key learns nothing of another's jobs."""
        job = await self.store.get(job_id) if is_job_id(job_id) else None
        if job is None or job.owner != owner:
            raise JobNotFound(
                f"no job {job_id!r}: unknown, removed after JOB_RETENTION_S (or by "
                "JOB_MAX_BYTES, or a DELETE), or submitted with another API key",
                details={"job": job_id},
            )
        return job

    async def status(self, job: Job) -> JobStatus:
        position = await self.store.position(job) if job.state is State.QUEUED else None
        return status_of(job, position)

    async def cancel(self, job: Job) -> Job:
        """Cancel a queued or running job (its inputs removed at once), or remove an ended one
        with its result. The job as it was left."""
        if not job.ended:
            cancelled = await self.store.cancel(job.id, time.time())
            if cancelled is not None:
                await self._stop_here(job.id)
                await asyncio.to_thread(self.files.remove_inputs, job.id)
                self.metrics.jobs_ended.labels(state=State.CANCELLED.value).inc()
                logger.info("job %s cancelled (%s)", job.id, job.state.value)
                self.on_end()
                return cancelled
            job = await self.store.get(job.id) or job  # it ended meanwhile
        if await self.store.delete(job.id):
            await asyncio.to_thread(self.files.remove, job.id)
            logger.info("job %s removed with its result", job.id)
        return job

    async def _stop_here(self, job_id: str) -> None:
        task = self.running.get(job_id)
        if task is None:
            return  # queued, or running on another gateway: it stops at its next report
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=CANCEL_WAIT_S)
        if not done:
            logger.warning(
                "job %s: still unwinding %g s after its cancellation", job_id, CANCEL_WAIT_S
            )
