"""``POST /dicomweb/invocations``: a study in the PACS in, the model's result stored next to it.

One request does the whole round trip of :mod:`gateway.dicomweb.round_trip`: find the series,
retrieve it into the request's folder under the upload limits, run the model as
``POST /invocations`` would (same queue, same pipeline), and, when asked, store the SEG or SR
back with STOW-RS. The answer is the AiCOCO document plus the UIDs stored. Nothing of the study
outlives the request.
"""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway import pipelines
from gateway.auth import audit
from gateway.dicomweb import client, round_trip
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
from gateway.intake import upload_folder
from gateway.outputs import choice
from gateway.pipelines.catalog import LOOKUP_RAISES
from gateway.routes.endpoint import MODEL_PARAMETER, Endpoint, Operation, json_response, ref
from gateway.runner import Run
from gateway.service import service_of
from gateway.settings import Settings


async def invoke_from_pacs(request: Request) -> Response:
    service = service_of(request)
    pacs = round_trip.pacs_of(service)
    model_name: str = request.path_params.get("name", service.settings.default_model)
    run = Run(service, model_name)
    asked = await round_trip.read_invocation(request, service)
    chosen = await round_trip.plan(service, model_name, asked)
    with upload_folder(service.settings.upload_dir) as folder:
        answer = await round_trip.round_trip(
            service,
            pacs,
            run,
            chosen,
            asked,
            folder,
            request_id=request.state.request_id,
            receive=request.receive,
            record=audit(request),
            gate=service.uploads.slot(),
        )
    return JSONResponse(answer.model_dump(mode="json"))


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
