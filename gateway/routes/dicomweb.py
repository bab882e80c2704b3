"""``POST /dicomweb/invocations``: a study in the PACS in, the model's result stored next to it.

One request does the whole round trip: find the series (the one named, or the one the series
rules of :mod:`gateway.readers.selection` choose), retrieve it into the request's folder under
the upload limits, run the model as ``POST /invocations`` would (same queue, same pipeline),
and, when asked, store the SEG or SR back with STOW-RS. The answer is the AiCOCO document plus
the UIDs stored. Nothing of the study outlives the request. The retrieval is the run's
``parse`` stage.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aicoco import AiCOCOOutput, AiImage, IdGenerator
from gateway import __version__, pipelines
from gateway.auth import audit
from gateway.dicomweb import client
from gateway.dicomweb.client import DicomwebClient
from gateway.errors import (
    ApiError,
    InvalidInput,
    MalformedJSON,
    NoSuitableSeries,
    PayloadTooLarge,
    RouteNotFound,
    ServerBusy,
    UploadTimeout,
)
from gateway.inference import Document, InferenceRequest, Upload
from gateway.intake import upload_folder
from gateway.outputs import choice
from gateway.outputs.choice import Output, producer_of, resolve
from gateway.outputs.sources import load_sources
from gateway.pipelines.catalog import LOOKUP_RAISES
from gateway.readers.selection import NOT_IMAGES, Candidate, choose, json_getter
from gateway.routes.endpoint import MODEL_PARAMETER, Endpoint, Operation, json_response, ref
from gateway.runner import Run, unless_disconnected
from gateway.schemas import PacsInvocation, PacsResult, StoredInstance
from gateway.service import Service, model_info, service_of
from gateway.settings import Settings
from gateway.upload_pace import receive_body

if TYPE_CHECKING:
    from gateway.outputs.writer import DicomResult

MAX_BODY_BYTES = 64 * 1024


async def invoke_from_pacs(request: Request) -> Response:
    service = service_of(request)
    pacs = service.pacs
    if pacs is None:
        raise RouteNotFound(
            "the DICOMweb routes are off: set DICOMWEB_URL to the PACS's DICOMweb root"
        )
    model_name: str = request.path_params.get("name", service.settings.default_model)
    run = Run(service, model_name)
    asked = await _read_invocation(request, service)
    await service.catalog.pipeline(model_name)
    info = await model_info(service.catalog, model_name)
    output = resolve(Output(asked.output), model_name, info.task) if asked.store else None
    study = asked.study_instance_uid
    series = asked.series_instance_uid or await _choose_series(pacs, study, asked.min_slices)
    with upload_folder(service.settings.upload_dir) as folder:
        with service.uploads.slot():
            # A client that hangs up stops the retrieval too, not only the inference.
            retrieval = pacs.retrieve(
                study,
                series,
                folder,
                max_bytes=service.settings.max_request_bytes,
                max_files=service.settings.max_files,
            )
            paths = await unless_disconnected(request.receive, retrieval)
        fetched = sum(path.stat().st_size for path in paths)
        service.metrics.upload_bytes.inc(fetched)
        audit(request).update(model=model_name, files=len(paths), bytes=fetched)
        images, uploads = await service.cpu.run(_entries, paths)
        inference = InferenceRequest(
            request_id=request.state.request_id,
            model_name=model_name,
            images=images,
            uploads=uploads,
            ids=IdGenerator(),
            observe=run.observe,
        )
        sources = None
        if output is not None:
            sources = await service.cpu.run(load_sources, images, uploads, output.value)
        run.parsed()

        async def respond(document: Document) -> tuple[bytes, DicomResult | None]:
            body = await service.cpu.run(document.to_json_bytes)
            if output is None or sources is None:
                return body, None
            producer = producer_of(info, __version__)
            # Tabular and hybrid pipelines refuse a request without tables, as this one is.
            assert isinstance(document, AiCOCOOutput)
            from gateway.outputs.writer import dicom_file  # see gateway.outputs.choice

            return body, await service.cpu.run(dicom_file, output, document, sources, producer)

        document_json, result = await run(request.receive, inference, respond)
    stored = []
    if result is not None:
        for instance in await pacs.store(study, [result.content]):
            stored.append(
                StoredInstance(
                    sop_instance_uid=instance.sop_instance_uid,
                    sop_class_uid=instance.sop_class_uid,
                    series_instance_uid=result.series_instance_uid,
                )
            )
    answer = PacsResult(
        study_instance_uid=study,
        series_instance_uid=series,
        aicoco=json.loads(document_json),
        stored=stored,
    )
    return JSONResponse(answer.model_dump(mode="json"))


async def _read_invocation(request: Request, service: Service) -> PacsInvocation:
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


def operation(settings: Settings, *, named: bool) -> Operation:
    return {
        "summary": "Run "
        + ("a model" if named else "the default model")
        + " on a study in the PACS and store the result there",
        "description": (
            "Needs `DICOMWEB_URL`. Finds the series (the one named, or the one the series rules "
            "choose: an image modality, not a localizer or secondary capture, one orientation, "
            "at least `min_slices`; then axial, most slices, lowest SeriesNumber), retrieves "
            "it with WADO-RS under the upload limits, runs the model, and with `store` sends "
            "the SEG or SR to the study with STOW-RS. A PACS that cannot be reached is a 503 "
            "`pacs_unavailable`, a slow one a 504 `pacs_timeout`."
        ),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ref("PacsInvocation")}},
        },
        "responses": {"200": json_response("What was run and stored.", ref("PacsResult"))},
        **({"parameters": [MODEL_PARAMETER]} if named else {}),
    }


RAISES: tuple[type[ApiError], ...] = (
    RouteNotFound,
    # The request's JSON.
    UploadTimeout,
    PayloadTooLarge,
    MalformedJSON,
    InvalidInput,
    # The model, the study, its retrieval under an upload slot, the answer.
    *LOOKUP_RAISES,
    *client.RAISES,
    NoSuitableSeries,
    ServerBusy,
    *choice.RAISES,
    *pipelines.IMAGE_RAISES,
)

ENDPOINTS = [
    Endpoint(
        "POST",
        "/dicomweb/invocations",
        invoke_from_pacs,
        partial(operation, named=False),
        raises=RAISES,
        protected=True,
    ),
    Endpoint(
        "POST",
        "/models/{name}/dicomweb/invocations",
        invoke_from_pacs,
        partial(operation, named=True),
        raises=RAISES,
        protected=True,
    ),
]
