"""The OpenAPI document, assembled from the routes' declarations.

Each route declares its operation and the errors it can raise beside its handler
(:mod:`gateway.routes`), written by hand rather than introspected: the interesting part of this
API is a multipart body (repeated ``files``, JSON text fields, the ``data`` variant) and a
catalogue of error codes, which no signature describes. This module only assembles: the paths
from the declarations, each error response generated from the declared ``raises``, and the
schemas the operations refer to. The AiCOCO output schema is the one the aicoco package ships,
embedded so the document is complete offline.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from aicoco import AiImage
from aicoco.tables import AiCOCOHybridOutput, AiCOCOTabularOutput, AiRecord, AiTable
from gateway import __version__, errors
from gateway.routes.endpoint import Endpoint, json_response, ref
from gateway.schemas import (
    ErrorBody,
    JobStatus,
    Liveness,
    ModelList,
    PacsInvocation,
    PacsResult,
    Readiness,
    Rendering,
)
from gateway.settings import Settings

_STATUS_TEXT = {
    400: "Malformed request",
    401: "An API key is needed (API_KEYS)",
    404: "Not found",
    408: "The upload stalled or was too slow",
    409: "Not in a state that allows it",
    413: "Over a limit",
    415: "Unsupported media or file type",
    422: "Well-formed but invalid input",
    500: "Gateway or model output bug",
    502: "The model or the PACS failed",
    503: "Unavailable; see Retry-After",
    504: "Triton or the PACS timed out",
}


def error_table() -> list[dict[str, Any]]:
    """The error classes as rows, by status then code: ``x-error-codes`` and the docs table."""
    rows = [
        {"status": cls.status, "code": cls.code, "when": cls.when, "fix": cls.fix}
        for cls in errors.error_classes()
    ]
    return sorted(rows, key=lambda row: (row["status"], row["code"]))


def errors_markdown() -> str:
    """The error table of docs/errors.md, from the same source as the OpenAPI document."""
    lines = ["| Status | Code | When | What to change |", "|---|---|---|---|"]
    for row in error_table():
        lines.append(f"| {row['status']} | `{row['code']}` | {row['when']} | {row['fix']} |")
    return "\n".join(lines) + "\n"


def aicoco_output_schema() -> dict[str, Any]:
    path = resources.files("aicoco") / "schema" / "aicoco_output.schema.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def _components(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """Move a JSON Schema's ``$defs`` into OpenAPI components, rewriting its references."""
    text = json.dumps(schema).replace('"#/$defs/', '"#/components/schemas/')
    text = text.replace('"#"', f'"#/components/schemas/{name}"')
    moved: dict[str, Any] = json.loads(text)
    defs: dict[str, Any] = moved.pop("$defs", {})
    moved.pop("$schema", None)
    moved.pop("$id", None)
    return {**defs, name: moved}


def _error_responses(raised: tuple[type[errors.ApiError], ...]) -> dict[str, Any]:
    """One response per status the route can answer with an error, listing its codes (in the
    description, and as ``x-error-codes`` for programs)."""
    responses: dict[str, Any] = {}
    for status in sorted({cls.status for cls in raised}):
        codes = sorted(cls.code for cls in raised if cls.status == status)
        listed = ", ".join(f"`{code}`" for code in codes)
        response = json_response(f"{_STATUS_TEXT[status]}: {listed}", ref("Error"))
        response["x-error-codes"] = codes
        if status == 503:
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer"},
                }
            }
        responses[str(status)] = response
    return responses


def operation_of(endpoint: Endpoint, settings: Settings) -> dict[str, Any]:
    """The endpoint's declared operation with its error responses added."""
    declared = endpoint.operation(settings)
    responses = {**declared["responses"], **_error_responses(endpoint.errors)}
    return {**declared, "responses": responses}


def _schemas() -> dict[str, Any]:
    json_text = {"type": "string", "contentMediaType": "application/json"}
    schemas = {
        **_components(aicoco_output_schema(), "AiCOCOOutput"),
        **_model_components("AiImage", AiImage, "validation"),
        **_model_components("AiTable", AiTable, "validation"),
        **_model_components("AiCOCOTabularOutput", AiCOCOTabularOutput, "serialization"),
        **_model_components("AiCOCOHybridOutput", AiCOCOHybridOutput, "serialization"),
        **_model_components("AiRecord", AiRecord, "serialization"),
        "InvocationForm": {
            "type": "object",
            "description": (
                "Either `images` (FLaVor's format) or `data` (the whole input in one part) "
                "carries the entries."
            ),
            "properties": {
                "files": {
                    "type": "array",
                    "items": {"type": "string", "format": "binary"},
                    "description": "The images, one part each, the field name repeated.",
                },
                "images": {
                    **json_text,
                    "contentSchema": {"type": "array", "items": ref("AiImage")},
                    "description": "JSON list of AiCOCO image entries "
                    "(id, file_name, index, category_ids, regressions, extra keys; "
                    "`table_ids` for hybrid models).",
                },
                "tables": {
                    **json_text,
                    "contentSchema": {"type": "array", "items": ref("AiTable")},
                    "description": "Tabular and hybrid models: JSON list of table entries "
                    "(id, file_name, extra keys), one per table file.",
                },
                "meta": {**json_text, "description": "JSON: the AiCOCO input's meta."},
                "data": {
                    **json_text,
                    "contentSchema": {
                        "type": "object",
                        "required": ["images"],
                        "properties": {
                            "images": {"type": "array", "items": ref("AiImage")},
                        },
                        "additionalProperties": True,
                    },
                    "description": 'Variant: {"images": [...], ...} as text or a JSON file.',
                },
                "metadata": {**json_text, "description": "Variant: optional JSON metadata."},
            },
            "additionalProperties": {
                **json_text,
                "description": "Any other field: JSON, passed to the pipeline.",
            },
        },
        # The answers' schemas, under the names the document has always used.
        **_model_components("Error", ErrorBody, "serialization"),
        **_model_components("ModelList", ModelList, "serialization"),
        **_model_components("Readiness", Readiness, "serialization"),
        **_model_components("Liveness", Liveness, "serialization"),
        **_model_components("Rendering", Rendering, "serialization"),
        **_model_components("PacsInvocation", PacsInvocation, "validation"),
        **_model_components("PacsResult", PacsResult, "serialization"),
        **_model_components("JobStatus", JobStatus, "serialization"),
    }
    schemas["ErrorContent"]["properties"]["code"]["enum"] = [row["code"] for row in error_table()]
    return schemas


def _model_components(name: str, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
    """A pydantic model's schema as OpenAPI components: its ``$defs`` beside it, referenced there
    (validation mode for what clients send, serialization mode for what they get)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
    return {**schema.pop("$defs", {}), name: schema}


def openapi_document(settings: Settings, endpoints: list[Endpoint]) -> dict[str, Any]:
    """The document of the app's ``endpoints``, each path's operations in the order declared."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation_of(
            endpoint, settings
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AiCOCO inference gateway",
            "version": __version__,
            "description": (
                "Runs medical-imaging models served by Triton Inference Server and answers "
                "AiCOCO JSON. Compatible with FLaVor clients (`POST /invocations`, `GET /ping`). "
                'Every error is JSON: `{"error": {"code", "message", "request_id", '
                '"details"}}`; the codes are listed in `x-error-codes`. Every response carries '
                "`X-Request-ID` (the client's, when it sends a valid one)."
            ),
        },
        "paths": paths,
        "components": {"schemas": _schemas()},
        "x-error-codes": error_table(),
    }
