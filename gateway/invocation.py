"""An invocation with files, from its form to the bytes of its answer: what ``POST /invocations``
answers at once and a job answers later, so both run the same code.

Three steps, each where its route needs it:

1. :func:`decide` before the body is read: the model exists (a large upload to a wrong name is
   refused before it is read) and the output asked for suits its task.
2. :func:`prepare` once the form is in: the entries are validated and paired with the files,
   and a DICOM answer's sources are checked, all before the request waits for a slot; a job is
   accepted only when this passes, so a bad request is its 4xx at once, not a failed job.
3. :func:`answer` runs it through a :class:`~gateway.runner.Run` and serialises the document:
   AiCOCO JSON, or a DICOM SEG or SR file.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aicoco import AiCOCOOutput
from gateway import __version__
from gateway.inference import Document, InferenceRequest
from gateway.intake import build_request
from gateway.outputs.choice import DICOM_MEDIA_TYPE, Output, producer_of, resolve
from gateway.outputs.sources import Sources, load_sources
from gateway.readers.tables import TableLimits
from gateway.runner import Run
from gateway.service import Service, model_info
from gateway.uploads import Form

if TYPE_CHECKING:
    from starlette.types import Receive

    from gateway.outputs.producer import Producer

JSON_MEDIA_TYPE = "application/json"


@dataclass(frozen=True)
class Decision:
    """What the answer will be, decided before the body is read."""

    model_name: str
    output: Output
    """``AICOCO``, or the DICOM object (SEG or SR) that answers it."""
    producer: Producer | None
    """Who made a DICOM answer (the model, its version, this service); None for AiCOCO."""


@dataclass(frozen=True)
class Prepared:
    inference: InferenceRequest
    sources: Sources | None
    """The DICOM headers a SEG or SR references; None for an AiCOCO answer."""


@dataclass(frozen=True)
class Answer:
    content: bytes
    media_type: str
    filename: str | None = None
    """A DICOM answer's download name; None for JSON."""

    def headers(self) -> dict[str, str]:
        if self.filename is None:
            return {}
        return {"Content-Disposition": f'attachment; filename="{self.filename}"'}


async def decide(service: Service, model_name: str, wanted: Output) -> Decision:
    """The model (404 ``model_not_found`` when there is none), then the output for its task."""
    catalog = service.catalog
    await catalog.pipeline(model_name)
    if wanted is Output.AICOCO:
        return Decision(model_name, Output.AICOCO, None)
    info = await model_info(catalog, model_name)
    return Decision(
        model_name, resolve(wanted, model_name, info.task), producer_of(info, __version__)
    )


async def prepare(
    service: Service, decision: Decision, form: Form, request_id: str, run: Run
) -> Prepared:
    """The validated request; a DICOM answer's sources are read and checked here too."""
    inference = build_request(
        form,
        request_id=request_id,
        model_name=decision.model_name,
        observe=run.observe,
        table_limits=TableLimits.of(service.settings),
    )
    sources = None
    if decision.producer is not None:
        sources = await service.cpu.run(
            load_sources, inference.images, inference.uploads, decision.output.value
        )
    return Prepared(inference, sources)


async def answer(
    service: Service,
    run: Run,
    decision: Decision,
    prepared: Prepared,
    receive: Receive | None,
    slot: AbstractAsyncContextManager[None] | None = None,
) -> Answer:
    """The model's answer, serialised; ``receive`` and ``slot`` as :meth:`Run.__call__` takes
    them."""
    sources, producer = prepared.sources, decision.producer

    async def respond(output: Document) -> bytes:
        if sources is None or producer is None:
            return await service.cpu.run(output.to_json_bytes)
        assert isinstance(output, AiCOCOOutput), "resolve() refused other tasks"
        from gateway.outputs.writer import dicom_file  # see gateway.outputs.choice

        result = await service.cpu.run(dicom_file, decision.output, output, sources, producer)
        return result.content

    body = await run(receive, prepared.inference, respond, slot=slot)
    if producer is None:
        return Answer(body, JSON_MEDIA_TYPE)
    return Answer(body, DICOM_MEDIA_TYPE, f"{decision.model_name}-{decision.output.value}.dcm")
