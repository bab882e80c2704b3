"""The one way through the service, once a request's inputs are in: admission, pipeline, format.

Every route that runs a model (``/invocations``, the DICOMweb route, the viewer's render, and
whatever comes next) takes its request through a :class:`Run`, so each gets the same things in
the same order:

- **Admission.** The request waits for one of ``MAX_IN_FLIGHT`` slots in the fair queue of
  :mod:`gateway.admission` only now, after its upload (:mod:`gateway.intake`).
- **The pipeline** is looked up again inside the slot: the model may have been reloaded while
  the body arrived.
- **Format** runs inside the slot too: the pipeline's own formatter and the route's
  serialisation (JSON, a DICOM object) add up to one ``format`` observation.
- **Stage timings** reach ``gateway_stage_duration_seconds``: ``parse`` from the moment the
  :class:`Run` is made (the route's intake) until :meth:`Run.parsed`, then the pipeline's
  stages, then ``format``.
- **A client that hangs up** cancels the work (:func:`unless_disconnected`), freeing its slot
  and the Triton batches not yet sent at once; a job's cancellation does the same to its task.
  The route's upload folder is removed by the route's ``with upload_folder(...)`` around the
  run, on every exit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from gateway.inference import Document, InferenceRequest, Pipeline
from gateway.service import Service

T = TypeVar("T")


class Run:
    """One request's way through, for one model (its label in the stage histograms)."""

    def __init__(self, service: Service, model_name: str) -> None:
        self._service = service
        self.model_name = model_name
        self._started = time.perf_counter()
        self._format_s = 0.0

    def observe(self, stage: str, seconds: float) -> None:
        """The :class:`~gateway.inference.StageObserver` of the run's inference request."""
        if stage == "format":
            self._format_s += seconds
        else:
            self._service.metrics.observe_stage(self.model_name, stage, seconds)

    def _progressed(self, unit: str, units: int) -> None:
        self._service.metrics.progressed(self.model_name, unit, units)

    def parsed(self) -> None:
        """The route's intake is done: its time so far is the ``parse`` stage."""
        self.observe("parse", time.perf_counter() - self._started)

    async def __call__(
        self,
        receive: Receive | None,
        inference: InferenceRequest,
        answer: Callable[[Document], Awaitable[T]],
        pipeline: Pipeline | None = None,
        slot: AbstractAsyncContextManager[None] | None = None,
    ) -> T:
        """``answer(pipeline(inference))`` under an inference slot, unless the client hangs up.

        ``receive`` is the client's connection, watched for a hang-up; a job has none (it is
        cancelled as a task). ``pipeline`` defaults to the catalog's pipeline of the run's
        model. ``slot`` is the inference slot, a fresh wait in the queue unless the caller
        already holds one (a job's worker takes its slot before it takes a job).
        """

        inference.progress.observer = self._progressed

        async def work() -> T:
            async with slot or self._service.queue.slot():
                chosen = pipeline or await self._service.catalog.pipeline(self.model_name)
                document = await chosen(inference)
                with inference.stage("format"):
                    return await answer(document)

        if receive is None:
            result = await work()
        else:
            result = await unless_disconnected(receive, work())
        self._service.metrics.observe_stage(self.model_name, "format", self._format_s)
        return result


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """``await work``, unless the client hangs up first (its own timeout, a closed browser tab):
    then the work is cancelled and :class:`ClientDisconnect` raised, so that the request's slot,
    its Triton batches not yet sent and its folder are freed at once instead of after computing
    an answer nobody will read. A stage already running on a thread finishes, and is dropped.

    Once the body has been read, the server's next ASGI message for this request is
    ``http.disconnect``, sent when the connection closes.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task not in done:
        watcher.result()  # a failing receive() is a bug to report, not a disconnect
        raise ClientDisconnect()
    return task.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
