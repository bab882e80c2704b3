"""A job's row as its owner sees it (:class:`~gateway.schemas.JobStatus`): what
``GET /jobs/{id}`` answers and the callback carries."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.jobs.store import Job, State
from gateway.schemas import JobCallback, JobError, JobProgress, JobResult, JobStatus

PREFIX = "/jobs/"


def href(job_id: str) -> str:
    return PREFIX + job_id


def status_of(job: Job, queue_position: int | None = None) -> JobStatus:
    error = job.error_object()
    return JobStatus(
        id=job.id,
        href=href(job.id),
        model=job.model,
        kind=job.kind.value,
        state=job.state.value,
        queue_position=queue_position if job.state is State.QUEUED else None,
        stage=job.stage if job.state is State.RUNNING else None,
        progress=(
            JobProgress(unit=job.unit, done=job.done, total=job.total)
            if job.state is State.RUNNING and job.unit
            else None
        ),
        attempts=job.attempts,
        created_at=_time(job.created_at),
        started_at=_time(job.started_at),
        finished_at=_time(job.finished_at),
        error=JobError.model_validate(error) if error is not None else None,
        result=(
            JobResult(
                href=href(job.id) + "/result",
                media_type=job.result_type or "",
                bytes=job.result_bytes or 0,
            )
            if job.state is State.SUCCEEDED
            else None
        ),
        callback=(
            JobCallback(
                url=job.callback,
                state=job.callback_state.value if job.callback_state else "pending",
                attempts=job.callback_attempts,
            )
            if job.callback
            else None
        ),
    )


def _time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
