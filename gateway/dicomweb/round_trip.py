"""A study in the PACS through the model and, when asked, its result stored back: what
``POST /dicomweb/invocations`` answers at once and a DICOMweb job answers later.

:func:`plan` runs before anything is fetched (the model exists, the output suits its task);
:func:`round_trip` finds the series (the one named, or the one the series rules of
:mod:`gateway.readers.selection` choose), retrieves it into ``folder`` under the upload limits,
runs the model through the :class:`~gateway.runner.Run` as ``POST /invocations`` would (same
queue, same pipeline), and stores the SEG or SR with STOW-RS. The retrieval is the run's
``parse`` stage.
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import Receive

from aicoco import AiCOCOOutput, AiImage, IdGenerator
from gateway import __version__
from gateway.dicomweb.client import DicomwebClient
from gateway.errors import InvalidInput, MalformedJSON, PayloadTooLarge, RouteNotFound
from gateway.inference import Document, InferenceRequest, Upload
from gateway.outputs.choice import Output, producer_of, resolve
from gateway.outputs.sources import load_sources
from gateway.progress import Progress
from gateway.readers.selection import NOT_IMAGES, Candidate, choose, json_getter
from gateway.runner import Run, unless_disconnected
from gateway.schemas import ModelInfo, PacsInvocation, PacsResult, StoredInstance
from gateway.service import Service, model_info
from gateway.upload_pace import receive_body

if TYPE_CHECKING:
    from gateway.outputs.writer import DicomResult


MAX_BODY_BYTES = 64 * 1024
"""The invocation's JSON: a few UIDs and flags."""


def pacs_of(service: Service) -> DicomwebClient:
    """The PACS's client; 404 ``not_found`` when ``DICOMWEB_URL`` is not set."""
    if service.pacs is None:
        raise RouteNotFound(
            "the DICOMweb routes are off: set DICOMWEB_URL to the PACS's DICOMweb root"
        )
    return service.pacs


async def read_invocation(request: Request, service: Service) -> PacsInvocation:
    body = bytearray()
    chunks = receive_body(request.receive, service.pace)
    try:
        async for chunk in chunks:
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise PayloadTooLarge(
                    f"the request's JSON is larger than {MAX_BODY_BYTES} bytes",
                    details={"limit": MAX_BODY_BYTES},
                )
    finally:
        await chunks.aclose()
    try:
        return PacsInvocation.model_validate_json(bytes(body))
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise MalformedJSON(
                'the body must be JSON like {"study_instance_uid": "1.2.3", "store": true}'
            ) from None
        first = errors[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidInput(
            f"{where}: {first['msg']}",
            details={"errors": [{"location": str(e["loc"]), "message": e["msg"]} for e in errors]},
        ) from None


@dataclass(frozen=True)
class Plan:
    model_name: str
    info: ModelInfo
    output: Output | None
    """The DICOM object to store back; None when nothing is stored."""


async def plan(service: Service, model_name: str, asked: PacsInvocation) -> Plan:
    await service.catalog.pipeline(model_name)
    info = await model_info(service.catalog, model_name)
    output = resolve(Output(asked.output), model_name, info.task) if asked.store else None
    return Plan(model_name, info, output)


async def round_trip(
    service: Service,
    pacs: DicomwebClient,
    run: Run,
    chosen: Plan,
    asked: PacsInvocation,
    folder: Path,
    *,
    request_id: str,
    receive: Receive | None,
    record: dict[str, object] | None = None,
    gate: AbstractContextManager[None] | None = None,
    slot: AbstractAsyncContextManager[None] | None = None,
    progress: Progress | None = None,
) -> PacsResult:
    """The whole round trip, its study's files in ``folder``. ``gate`` bounds the retrieval
    with the uploads (``MAX_UPLOADS``; a job, already in its slot, passes none); ``receive``,
    ``slot`` as :meth:`Run.__call__` takes them; ``progress`` is what a job reports."""
    progress = progress or Progress()
    progress.stage = "retrieve"
    study = asked.study_instance_uid
    series = asked.series_instance_uid or await _choose_series(pacs, study, asked.min_slices)
    with gate or nullcontext():
        retrieval = pacs.retrieve(
            study,
            series,
            folder,
            max_bytes=service.settings.max_request_bytes,
            max_files=service.settings.max_files,
        )
        # A client that hangs up stops the retrieval too, not only the inference.
        paths = await (retrieval if receive is None else unless_disconnected(receive, retrieval))
    fetched = sum(path.stat().st_size for path in paths)
    service.metrics.upload_bytes.inc(fetched)
    if record is not None:
        record.update(model=chosen.model_name, files=len(paths), bytes=fetched)
    images, uploads = await service.cpu.run(_entries, paths)
    inference = InferenceRequest(
        request_id=request_id,
        model_name=chosen.model_name,
        images=images,
        uploads=uploads,
        ids=IdGenerator(),
        observe=run.observe,
        progress=progress,
    )
    output = chosen.output
    sources = None
    if output is not None:
        sources = await service.cpu.run(load_sources, images, uploads, output.value)
    run.parsed()

    async def respond(document: Document) -> tuple[bytes, DicomResult | None]:
        body = await service.cpu.run(document.to_json_bytes)
        if output is None or sources is None:
            return body, None
        producer = producer_of(chosen.info, __version__)
        # Tabular and hybrid pipelines refuse a request without tables, as this one is.
        assert isinstance(document, AiCOCOOutput)
        from gateway.outputs.writer import dicom_file  # see gateway.outputs.choice

        return body, await service.cpu.run(dicom_file, output, document, sources, producer)

    document_json, result = await run(receive, inference, respond, slot=slot)
    stored = []
    if result is not None:
        progress.stage = "store"
        for instance in await pacs.store(study, [result.content]):
            stored.append(
                StoredInstance(
                    sop_instance_uid=instance.sop_instance_uid,
                    sop_class_uid=instance.sop_class_uid,
                    series_instance_uid=result.series_instance_uid,
                )
            )
    return PacsResult(
        study_instance_uid=study,
        series_instance_uid=series,
        aicoco=json.loads(document_json),
        stored=stored,
    )


async def _choose_series(pacs: DicomwebClient, study: str, min_slices: int) -> str:
    """The series the rules choose, from the study's listing and each image series' metadata."""
    candidates = []
    for listed in await pacs.series(study):
        get = json_getter(listed)
        uid = str((get("SeriesInstanceUID") or [""])[0])
        modality = str((get("Modality") or [""])[0])
        if modality in NOT_IMAGES:
            # The listing says enough; its metadata (a SEG's can be large) is not fetched.
            candidates.append(Candidate.of(uid, [get]))
            continue
        instances = await pacs.metadata(study, uid)
        candidates.append(Candidate.of(uid, [json_getter(i) for i in instances]))
    return choose(candidates, min_slices).uid


def _entries(paths: list[Path]) -> tuple[list[AiImage], dict[str, Upload]]:
    """One images entry and upload per retrieved instance, named by its SOPInstanceUID."""
    images, uploads = [], {}
    for k, path in enumerate(paths):
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        name = f"{header.get('SOPInstanceUID', f'instance-{k}')}.dcm"
        uploads[name] = Upload(file_name=name, path=path, size=path.stat().st_size)
        images.append(AiImage(id=name.removesuffix(".dcm"), file_name=name, index=k))
    return images, uploads
