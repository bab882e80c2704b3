"""Running jobs: ``JOB_WORKERS`` loops per gateway process, each taking an inference slot in the
same fair queue as synchronous requests, then the oldest queued job of the store, and running it
through the same code as the synchronous routes (:mod:`gateway.invocation`,
:mod:`gateway.dicomweb.round_trip`) with its answer written to a file instead of sent.

Why the slot before the job: a job claimed while no slot is free would sit "running" here while
another gateway with free slots could have run it. Claiming only with a slot in hand also keeps
a job's place in line honest: queued jobs wait in the store, in submission order, over all
gateways.

While a job runs, a reporter writes its stage and progress to the store every
:data:`REPORT_S` (renewing the lease) and stops the job when the store says it is no longer this
gateway's (cancelled by a ``DELETE`` to another gateway, or taken over after a lease ran out).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from gateway import invocation
from gateway.dicomweb import round_trip
from gateway.errors import ApiError, InternalError
from gateway.jobs.board import JobBoard
from gateway.jobs.requests import form_of, invocation_of
from gateway.jobs.store import Job, Kind, State
from gateway.jobs.wakeup import nap
from gateway.logs import request_id_var
from gateway.progress import Progress
from gateway.runner import Run
from gateway.service import Service

logger = logging.getLogger("gateway.jobs")

REPORT_S = 0.5
"""Progress and lease renewal; also how soon a job cancelled on another gateway stops here."""
POLL_S = 0.5
"""How often an idle worker asks the store for a job submitted to another gateway."""


@dataclass(frozen=True)
class Outcome:
    content: bytes
    media_type: str
    filename: str | None


def error_object(error: ApiError, job_id: str | None) -> dict[str, object]:
    """The error as a synchronous call would have answered it, with its status."""
    return {"status": error.status, **error.body(job_id)["error"]}


class JobWorkers:
    def __init__(self, service: Service, board: JobBoard) -> None:
        self._service = service
        self._board = board
        self._lease_s = service.settings.job_lease_s

    async def run(self) -> None:
        """One worker: until cancelled (the gateway stops), take and run jobs."""
        store, board = self._board.store, self._board
        while True:
            try:
                if not await store.any_queued():
                    board.submitted.clear()
                    await nap(board.submitted, POLL_S)
                    continue
                async with self._service.queue.slot(patient=True):
                    job = await store.claim(board.runner, self._lease_s)
                    if job is not None:
                        await self._run(job)
            except ApiError as exc:  # the store is down: wait, then try again
                logger.warning("jobs: %s", exc.message)
                await asyncio.sleep(POLL_S)

    async def _run(self, job: Job) -> None:
        self._service.metrics.job_runs.labels(model=job.model).inc()
        progress = Progress(stage="starting")
        task = asyncio.create_task(self._execute(job, progress))
        self._board.running[job.id] = task
        reporter = asyncio.create_task(self._report(job, progress, task))
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            # The gateway is stopping: stop the job, keep its inputs, and let any gateway queue
            # it again now rather than after its lease.
            task.cancel()
            await asyncio.wait({task})
            await asyncio.shield(self._board.store.release(job.id, self._board.runner))
            raise
        finally:
            reporter.cancel()
            self._board.running.pop(job.id, None)
        if task.cancelled():
            # Cancelled by a DELETE, which removes the inputs itself; or taken over by another
            # gateway after this one lost its lease, which needs them.
            return
        failure = task.exception()
        if failure is not None:
            logger.warning(
                "job %s: its end could not be recorded (%s); it runs again after its lease",
                job.id,
                failure,
            )
            return
        await asyncio.to_thread(self._board.files.remove_inputs, job.id)

    async def _report(self, job: Job, progress: Progress, task: asyncio.Task[None]) -> None:
        store, runner = self._board.store, self._board.runner
        while True:
            await asyncio.sleep(REPORT_S)
            try:
                mine = await store.report(
                    job.id,
                    runner,
                    self._lease_s,
                    progress.stage,
                    progress.unit,
                    progress.done,
                    progress.total,
                )
            except ApiError:
                continue  # the store is down; the lease runs on, the job too
            if not mine:
                logger.info(
                    "job %s is no longer this gateway's (cancelled, or taken over); stopping",
                    job.id,
                )
                task.cancel()
                return

    async def _execute(self, job: Job, progress: Progress) -> None:
        """Run the job, then record how it ended; a store that fails at that point raises, and
        the job runs again after its lease."""
        board = self._board
        request_id_var.set(job.id)  # this task's log lines, the pipeline's included
        logger.info("job %s started (attempt %d)", job.id, job.attempts)
        ending: dict[str, Any]
        try:
            outcome = await self._answer(job, progress)
            progress.stage = "save"
            size = await self._service.cpu.run(board.files.write_result, job.id, outcome.content)
            state = State.SUCCEEDED
            ending = {
                "result_type": outcome.media_type,
                "result_name": outcome.filename,
                "result_bytes": size,
            }
        except asyncio.CancelledError:
            raise
        except ApiError as exc:
            state, ending = State.FAILED, {"error": error_object(exc, job.id)}
            logger.info("job %s failed: %s: %s", job.id, exc.code, exc.message)
        except Exception:
            logger.exception("job %s failed", job.id)
            error = InternalError("the job failed; the gateway's log says why")
            state, ending = State.FAILED, {"error": error_object(error, job.id)}
        if await board.store.finish(job.id, board.runner, state, **ending):
            board.metrics.jobs_ended.labels(state=state.value).inc()
            logger.info("job %s ended: %s", job.id, state.value)
            board.on_end()
        else:
            board.files.result(job.id).unlink(missing_ok=True)

    async def _answer(self, job: Job, progress: Progress) -> Outcome:
        service, folder = self._service, self._board.files.inputs(job.id)
        run = Run(service, job.model)
        if job.kind is Kind.DICOMWEB:
            # Scratch for the retrieval, emptied of an earlier run's.
            await asyncio.to_thread(self._board.files.remove_inputs, job.id)
            folder.mkdir(parents=True)
            asked = invocation_of(job.request)
            chosen = await round_trip.plan(service, job.model, asked)
            result = await round_trip.round_trip(
                service,
                round_trip.pacs_of(service),
                run,
                chosen,
                asked,
                folder,
                request_id=job.id,
                receive=None,
                slot=nullcontext(),
                progress=progress,
            )
            return Outcome(result.model_dump_json().encode(), invocation.JSON_MEDIA_TYPE, None)
        if not folder.is_dir():
            raise InternalError(
                f"job {job.id}'s files are not in JOBS_DIR on this gateway: with several "
                "gateways, JOBS_DIR must be a volume they all mount"
            )
        form, wanted = form_of(job.request, folder)
        progress.stage = "parse"
        decision = await invocation.decide(service, job.model, wanted)
        prepared = await invocation.prepare(service, decision, form, job.id, run)
        prepared.inference.progress = progress
        run.parsed()
        answer = await invocation.answer(service, run, decision, prepared, None, nullcontext())
        return Outcome(answer.content, answer.media_type, answer.filename)
