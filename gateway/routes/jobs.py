"""Jobs over HTTP: submit what ``/invocations`` (or ``/dicomweb/invocations``) takes, answered
202 at once; poll ``GET /jobs/{id}``; fetch ``GET /jobs/{id}/result``; ``DELETE`` to cancel.

A submission is validated as the synchronous call is, before the 202 (the model, the output for
its task, the form, the pairing of files, a DICOM answer's sources, the callback's host), so a
bad request is still its 4xx at once and only work that can run is queued. The files go
straight into the job's folder under ``JOBS_DIR``; the row is written last
(:mod:`gateway.jobs.store`). Every route needs the API key when keys are on, and a job is
visible only to the key that submitted it (404 otherwise, as for no job at all).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from gateway import intake, invocation
from gateway.auth import NO_KEY, audit
from gateway.dicomweb import round_trip
from gateway.errors import (
    ApiError,
    CallbackNotAllowed,
    InvalidInput,
    JobNotFound,
    JobResultUnavailable,
    JobStoreUnavailable,
    MalformedJSON,
    PayloadTooLarge,
    RouteNotFound,
    ServerBusy,
    UploadTimeout,
)
from gateway.intake import check_headers, receive_form
from gateway.jobs.callbacks import checked_callback
from gateway.jobs.ids import new_job_id
from gateway.jobs.requests import dicomweb_request, files_request
from gateway.jobs.status import href
from gateway.jobs.store import Job, Kind, State
from gateway.outputs import choice
from gateway.outputs.choice import requested
from gateway.pipelines.catalog import LOOKUP_RAISES
from gateway.routes.endpoint import (
    MODEL_PARAMETER,
    OUTPUT_PARAMETER,
    Endpoint,
    Operation,
    fixed,
    json_response,
    ref,
)
from gateway.runner import Run
from gateway.service import Service, service_of
from gateway.settings import Settings


def _owner(request: Request) -> str:
    key: str = audit(request).get("key", NO_KEY)
    return key


def _callback(request: Request, service: Service) -> str | None:
    """The ``callback`` query parameter, checked (before any upload); None when absent."""
    url = request.query_params.get("callback")
    return checked_callback(url, service.settings) if url else None


def _queued(
    request: Request, job_id: str, model: str, kind: Kind, saved: str, callback: str | None
) -> Job:
    """The job as submitted, its owner the request's key."""
    return Job(
        id=job_id,
        owner=_owner(request),
        model=model,
        kind=kind,
        request=saved,
        state=State.QUEUED,
        created_at=time.time(),
        callback=callback,
    )


async def _accepted(service: Service, job: Job) -> Response:
    await service.jobs.submit(job)
    status = await service.jobs.status(job)
    return JSONResponse(
        status.model_dump(mode="json"), status_code=202, headers={"Location": href(job.id)}
    )


async def submit(request: Request) -> Response:
    service = service_of(request)
    model_name: str = request.path_params.get("name", service.settings.default_model)
    boundary = check_headers(request)
    wanted = requested(request.query_params.get("output"), None)
    callback = _callback(request, service)  # refused before the upload, not after
    decision = await invocation.decide(service, model_name, wanted)
    job_id = new_job_id()
    record = audit(request)
    record.update(model=model_name, job=job_id)
    with service.jobs.files.receiving(job_id) as folder:
        form = await receive_form(request, boundary, folder)
        record.update(files=len(form.uploads), bytes=form.upload_bytes)
        run = Run(service, model_name)
        await invocation.prepare(service, decision, form, request.state.request_id, run)
        saved = files_request(form, wanted)
        job = _queued(request, job_id, model_name, Kind.FILES, saved, callback)
        return await _accepted(service, job)


async def submit_from_pacs(request: Request) -> Response:
    service = service_of(request)
    round_trip.pacs_of(service)
    model_name: str = request.path_params.get("name", service.settings.default_model)
    asked = await round_trip.read_invocation(request, service)
    callback = _callback(request, service)
    await round_trip.plan(service, model_name, asked)
    job_id = new_job_id()
    audit(request).update(model=model_name, job=job_id)
    with service.jobs.files.receiving(job_id):
        saved = dicomweb_request(asked)
        job = _queued(request, job_id, model_name, Kind.DICOMWEB, saved, callback)
        return await _accepted(service, job)


async def show(request: Request) -> Response:
    service = service_of(request)
    job = await service.jobs.find(request.path_params["id"], _owner(request))
    status = await service.jobs.status(job)
    return JSONResponse(status.model_dump(mode="json"))


async def result(request: Request) -> Response:
    service = service_of(request)
    job = await service.jobs.find(request.path_params["id"], _owner(request))
    if job.state is not State.SUCCEEDED:
        raise JobResultUnavailable(
            f"job {job.id} is {job.state.value}: "
            + (
                "poll GET /jobs/{id} until it succeeds"
                if not job.ended
                else "it has no result (GET /jobs/{id} shows why)"
            ),
            details={"job": job.id, "state": job.state.value},
        )
    path = service.jobs.files.result(job.id)
    if not path.is_file():
        # Retention removed it between the row's read and now.
        raise JobNotFound(f"job {job.id}'s result was just removed by retention")
    # Streamed from disk (a SEG of a long series is tens of MB), never read whole into memory.
    return FileResponse(
        path,
        media_type=job.result_type or invocation.JSON_MEDIA_TYPE,
        filename=job.result_name,
    )


async def cancel(request: Request) -> Response:
    service = service_of(request)
    job = await service.jobs.find(request.path_params["id"], _owner(request))
    left = await service.jobs.cancel(job)
    status = await service.jobs.status(left)
    return JSONResponse(status.model_dump(mode="json"))


# OpenAPI.

ID_PARAMETER: dict[str, Any] = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The job's id, from the submission's answer (or its `Location`).",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"},
}
CALLBACK_PARAMETER: dict[str, Any] = {
    "name": "callback",
    "in": "query",
    "required": False,
    "description": (
        "A URL POSTed the job's final status (a `JobStatus`) when it ends, signed "
        "(`X-Gateway-Signature: sha256=<hex>`, the HMAC-SHA256 of `<X-Gateway-Timestamp>.<body>` "
        "under `JOB_CALLBACK_SECRET`) and retried with backoff. Its host must be in "
        "`JOB_CALLBACK_HOSTS` (none by default): 422 `callback_not_allowed` otherwise."
    ),
    "schema": {"type": "string", "format": "uri"},
}
ACCEPTED = {
    "description": "Accepted: the job is queued. `Location` is its status.",
    "headers": {"Location": {"schema": {"type": "string"}, "description": "`/jobs/{id}`"}},
    "content": {"application/json": {"schema": ref("JobStatus")}},
}


def submit_operation(settings: Settings, *, named: bool, pacs: bool) -> Operation:
    same = "/dicomweb/invocations" if pacs else "/invocations"
    model = (
        "the model named in the path"
        if named
        else f"the default model (`{settings.default_model}`)"
    )
    body: dict[str, Any] = (
        {"required": True, "content": {"application/json": {"schema": ref("PacsInvocation")}}}
        if pacs
        else {
            "required": True,
            "content": {"multipart/form-data": {"schema": ref("InvocationForm")}},
        }
    )
    return {
        "summary": f"Submit a job: {same}'s work for {model}, answered later",
        "description": (
            f"Takes exactly what `POST {same}` takes and validates it the same way before "
            "answering 202, so a bad request is still its 4xx at once. The job then waits in "
            "the same fair queue as synchronous requests, runs once on whichever gateway takes "
            "it, and keeps its result for `JOB_RETENTION_S`. Poll `GET /jobs/{id}`, fetch "
            "`GET /jobs/{id}/result`, cancel with `DELETE /jobs/{id}`; or give a `callback`."
        ),
        "requestBody": body,
        "responses": {"202": ACCEPTED},
        "parameters": [
            *([MODEL_PARAMETER] if named else []),
            *([] if pacs else [OUTPUT_PARAMETER]),
            CALLBACK_PARAMETER,
        ],
    }


SHOW = {
    "summary": "A job's state, queue position, stage and progress",
    "description": (
        "`queued` (with its `queue_position`), `running` (with its `stage` and, where the "
        "pipeline reports it, `progress`: slices read, patches done of total), then "
        "`succeeded` (with its `result`), `failed` (with the `error` the synchronous call "
        "would have answered, and its status) or `cancelled`. Another key's job is a 404."
    ),
    "parameters": [ID_PARAMETER],
    "responses": {"200": json_response("The job.", ref("JobStatus"))},
}
RESULT = {
    "summary": "A succeeded job's answer",
    "description": (
        "The answer as the synchronous call would have sent it: AiCOCO JSON, a DICOM SEG or SR "
        "(`output=`), or the DICOMweb round trip's `PacsResult`. 409 "
        "`job_result_unavailable` before the job succeeds, or when it did not."
    ),
    "parameters": [ID_PARAMETER],
    "responses": {
        "200": {
            "description": "The answer.",
            "content": {
                "application/json": {"schema": {}},
                "application/dicom": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
}
CANCEL = {
    "summary": "Cancel a job, or remove an ended one",
    "description": (
        "A queued or running job is cancelled: its slot, its Triton requests and its files are "
        "released at once (a job running on another gateway stops at that gateway's next "
        "progress report, within a second). An ended job is removed with its result. The "
        "answer is the job as it was left."
    ),
    "parameters": [ID_PARAMETER],
    "responses": {"200": json_response("The job.", ref("JobStatus"))},
}

STORE_RAISES: tuple[type[ApiError], ...] = (JobStoreUnavailable,)
FIND_RAISES: tuple[type[ApiError], ...] = (JobNotFound, *STORE_RAISES)
SUBMIT_RAISES: tuple[type[ApiError], ...] = (
    *intake.RAISES,
    *intake.TABLE_RAISES,
    *LOOKUP_RAISES,
    *choice.RAISES,
    CallbackNotAllowed,
    *STORE_RAISES,
)
PACS_SUBMIT_RAISES: tuple[type[ApiError], ...] = (
    RouteNotFound,
    UploadTimeout,
    PayloadTooLarge,
    MalformedJSON,
    InvalidInput,
    *LOOKUP_RAISES,
    *choice.RAISES,
    CallbackNotAllowed,
    ServerBusy,
    *STORE_RAISES,
)


def _endpoints() -> list[Endpoint]:
    submissions = [
        Endpoint(
            "POST",
            ("/models/{name}" if named else "") + prefix + "/jobs",
            handler,
            partial(submit_operation, named=named, pacs=pacs),
            raises=raises,
            protected=True,
        )
        for pacs, prefix, handler, raises in (
            (False, "", submit, SUBMIT_RAISES),
            (True, "/dicomweb", submit_from_pacs, PACS_SUBMIT_RAISES),
        )
        for named in (False, True)
    ]
    return [
        *submissions,
        Endpoint("GET", "/jobs/{id}", show, fixed(SHOW), raises=FIND_RAISES, protected=True),
        Endpoint(
            "GET",
            "/jobs/{id}/result",
            result,
            fixed(RESULT),
            raises=(*FIND_RAISES, JobResultUnavailable),
            protected=True,
        ),
        Endpoint("DELETE", "/jobs/{id}", cancel, fixed(CANCEL), raises=FIND_RAISES, protected=True),
    ]


ENDPOINTS = _endpoints()
