"""``POST /invocations`` and ``POST /models/{name}/invocations``: files in, the model's answer out.

The model is looked up first, so that a large upload to a wrong name is refused before its body
is read. Then the intake of :mod:`gateway.intake` (body, fields, pairing), the sources of a DICOM
answer (checked before the request waits for a slot), and the run of :mod:`gateway.runner`.
"""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import Response

from gateway import intake, invocation, pipelines
from gateway.auth import audit
from gateway.errors import ApiError
from gateway.intake import check_headers, receive_form, upload_folder
from gateway.outputs import choice
from gateway.outputs.choice import requested
from gateway.pipelines.catalog import LOOKUP_RAISES
from gateway.readers.formats import FileKind
from gateway.routes.endpoint import MODEL_PARAMETER, OUTPUT_PARAMETER, Endpoint, Operation, ref
from gateway.runner import Run
from gateway.service import service_of
from gateway.settings import Settings


async def invoke(request: Request) -> Response:
    service = service_of(request)
    settings = service.settings
    model_name: str = request.path_params.get("name", settings.default_model)
    boundary = check_headers(request)
    wanted = requested(request.query_params.get("output"), request.headers.get("accept"))
    decision = await invocation.decide(service, model_name, wanted)
    run = Run(service, model_name)
    record = audit(request)
    record["model"] = model_name
    with upload_folder(settings.upload_dir) as folder:
        form = await receive_form(request, boundary, folder)
        record.update(files=len(form.uploads), bytes=form.upload_bytes)
        prepared = await invocation.prepare(service, decision, form, request.state.request_id, run)
        run.parsed()
        answer = await invocation.answer(service, run, decision, prepared, request.receive)
    return Response(answer.content, media_type=answer.media_type, headers=answer.headers())


def operation(settings: Settings, *, named: bool) -> Operation:
    target = (
        "the model named in the path"
        if named
        else f"the default model (`{settings.default_model}`)"
    )
    return {
        "summary": "Run " + ("a model" if named else "the default model") + " on images or tables",
        "description": (
            f"Runs {target} on the uploaded images (or tables) and answers one AiCOCO "
            "document.\n\n"
            "FLaVor's wire format: one `files` part per image (the part's filename is the AiCOCO "
            "`file_name`), an `images` field holding the JSON list of AiCOCO image entries, and "
            "every other top-level key of the AiCOCO input (e.g. `meta`) as its own JSON field; "
            "unknown fields reach the pipeline. Alternatively a `data` part (text or JSON file) "
            'holding `{"images": [...], ...}` plus an optional `metadata` part.\n\n'
            "Every field besides `files` is JSON text (a string is sent in quotes); if both "
            "`images` and `data` are sent, `images` wins and `data` is passed on as a field.\n\n"
            "Tabular models take a `tables` field instead of `images` (JSON list of "
            '`{"id", "file_name"}`, paired with the table files by the same rule) and `meta` '
            "with `window_size`; the answer points at its records (`records.href`, JSON Lines, "
            "`GET /invocations/artifacts/{name}`). Hybrid models take both, each image naming "
            "its table in `table_ids`. Tables are UTF-8 CSV or TSV.\n\n"
            "Files pair with entries by exact file name (`11.dcm` never matches `1.dcm`); "
            "several entries may share one file (one entry per slice of a NIfTI volume, ordered "
            "by `index`). File names must be plain base names (no `/`, `\\`, `..` or control "
            "characters): they are never used as paths, uploads are stored as numbered files in "
            "a per-request folder that is always removed. Files are recognised by content "
            f"({', '.join(kind.format.name for kind in FileKind)}), not by extension.\n\n"
            f"Limits: body at most {settings.max_request_bytes} bytes, at most "
            f"{settings.max_files} files, {settings.max_pixels_per_image} pixels per frame, "
            f"{settings.max_total_voxels} pixels per request, {settings.max_in_flight} "
            "requests in flight (then 503 `server_busy`). A client that hangs up cancels its "
            "request and frees its slot.\n\n"
            "Example:\n\n"
            "    curl -F files=@chest.png \\\n"
            '      -F \'images=[{"id": "img1", "file_name": "chest.png", "index": 0, '
            '"category_ids": null, "regressions": null}]\' \\\n'
            f"      http://localhost:{settings.port}/invocations"
        ),
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": ref("InvocationForm"),
                    "encoding": {
                        "files": {
                            "contentType": "application/dicom, application/octet-stream, "
                            "image/png, image/jpeg, application/gzip"
                        },
                        "images": {"contentType": "application/json"},
                        "data": {"contentType": "application/json"},
                        "metadata": {"contentType": "application/json"},
                        "meta": {"contentType": "application/json"},
                    },
                }
            },
        },
        "responses": {
            "200": {
                "description": (
                    "The AiCOCO output document (image, tabular or hybrid, by the model's "
                    "task); with `output=seg|sr|dicom` (or `Accept: application/dicom`) a DICOM "
                    "SEG or TID 1500 SR file instead."
                ),
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                ref("AiCOCOOutput"),
                                ref("AiCOCOTabularOutput"),
                                ref("AiCOCOHybridOutput"),
                            ]
                        }
                    },
                    "application/dicom": {"schema": {"type": "string", "format": "binary"}},
                },
            },
        },
        "parameters": [*([MODEL_PARAMETER] if named else []), OUTPUT_PARAMETER],
    }


RAISES: tuple[type[ApiError], ...] = (
    *intake.RAISES,
    *intake.TABLE_RAISES,
    *LOOKUP_RAISES,
    *choice.RAISES,
    *pipelines.RAISES,
)

ENDPOINTS = [
    Endpoint(
        "POST",
        "/invocations",
        invoke,
        partial(operation, named=False),
        raises=RAISES,
        protected=True,
    ),
    Endpoint(
        "POST",
        "/models/{name}/invocations",
        invoke,
        partial(operation, named=True),
        raises=RAISES,
        protected=True,
    ),
]
