"""``GET /invocations/artifacts/{name}``: a tabular answer's records, as JSON Lines.

The file is opened before the answer starts, so an artifact that the store's sweep removes while
it streams is still sent whole (an open file outlives its name); one removed before is a 404.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.errors import ArtifactNotFound
from gateway.records import NAME
from gateway.routes.endpoint import Endpoint, fixed, ref
from gateway.service import service_of

MEDIA_TYPE = "application/x-ndjson"
_CHUNK = 256 * 1024


async def artifact(request: Request) -> Response:
    name: str = request.path_params["name"]
    store = service_of(request).records
    path = store.path(name)
    try:
        if path is None:
            raise FileNotFoundError(name)
        file = path.open("rb")
    except FileNotFoundError:
        raise ArtifactNotFound(
            f"no records artifact {name!r}: it never existed, or it was removed after "
            f"{store.retention_s:g} s (RECORDS_RETENTION_S) or to stay under RECORDS_MAX_BYTES",
            details={"name": name},
        ) from None
    size = os.fstat(file.fileno()).st_size

    def chunks() -> Iterator[bytes]:
        with file:
            while block := file.read(_CHUNK):
                yield block

    return StreamingResponse(
        chunks(),
        media_type=MEDIA_TYPE,
        headers={"Content-Length": str(size), "Cache-Control": "no-store"},
    )


ENDPOINTS = [
    Endpoint(
        "GET",
        "/invocations/artifacts/{name}",
        artifact,
        fixed(
            {
                "summary": "A tabular answer's records, one JSON object a line",
                "description": (
                    "The `records.href` of a tabular answer. Each line is "
                    '`{"id", "table_id", "row_indexes", "category_ids", "regressions"}`. '
                    "Artifacts are removed after RECORDS_RETENTION_S, and the oldest first past "
                    "RECORDS_MAX_BYTES."
                ),
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "description": "records_<21 characters of A-Za-z0-9_->.jsonl",
                        "schema": {"type": "string", "pattern": NAME.pattern},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The records.",
                        "content": {
                            MEDIA_TYPE: {
                                "schema": {"type": "string"},
                                "itemSchema": ref("AiRecord"),
                            }
                        },
                    },
                },
            }
        ),
        raises=(ArtifactNotFound,),
        protected=True,
    )
]
