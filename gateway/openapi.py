"""The OpenAPI document and the ``/docs`` page.

Written by hand rather than generated from the routes: the interesting part of this API is a
multipart body (repeated ``files``, JSON text fields, the ``data`` variant) and a catalogue of
error codes, which no route introspection can describe. The AiCOCO output schema is the one the
aicoco package ships, embedded so the document is complete offline.

``/docs`` is rendered on the server from the same dictionary: plain HTML with no scripts and
nothing fetched from elsewhere, because the gateway often runs on networks with no internet.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from aicoco import AiImage
from aicoco.tables import AiCOCOHybridOutput, AiCOCOTabularOutput, AiRecord, AiTable
from gateway import __version__, errors
from gateway.outputs.choice import Output
from gateway.readers.formats import FileKind
from gateway.records import NAME
from gateway.schemas import (
    ErrorBody,
    Liveness,
    ModelList,
    PacsInvocation,
    PacsResult,
    Readiness,
    Rendering,
)
from gateway.settings import Settings
from gateway.viewer.render import PRESETS

_STATUS_TEXT = {
    200: "AiCOCO output",
    204: "No content",
    400: "Malformed request",
    401: "An API key is needed (API_KEYS)",
    404: "Not found",
    408: "The upload stalled or was too slow",
    405: "Method not allowed",
    413: "Over a limit",
    415: "Unsupported media or file type",
    422: "Well-formed but invalid input",
    500: "Gateway or model output bug",
    502: "The model failed",
    503: "Unavailable; see Retry-After",
    504: "Triton timed out",
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


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error_responses(statuses: list[int]) -> dict[str, Any]:
    table = error_table()
    responses = {}
    for status in statuses:
        codes = ", ".join(f"`{row['code']}`" for row in table if row["status"] == status)
        description = f"{_STATUS_TEXT[status]}: {codes}"
        response = _json_response(description, _ref("Error"))
        if status == 503:
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer"},
                }
            }
        responses[str(status)] = response
    return responses


def _invocation_operation(settings: Settings, *, named: bool) -> dict[str, Any]:
    target = (
        "the model named in the path"
        if named
        else f"the default model (`{settings.default_model}`)"
    )
    operation: dict[str, Any] = {
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
                    "schema": _ref("InvocationForm"),
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
                                _ref("AiCOCOOutput"),
                                _ref("AiCOCOTabularOutput"),
                                _ref("AiCOCOHybridOutput"),
                            ]
                        }
                    },
                    "application/dicom": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            **_error_responses([400, 404, 413, 415, 422, 500, 502, 503, 504]),
        },
        "parameters": [*([_model_parameter()] if named else []), _output_parameter()],
    }
    return operation


def _artifact_operation() -> dict[str, Any]:
    return {
        "summary": "A tabular answer's records, one JSON object a line",
        "description": (
            "The `records.href` of a tabular answer. Each line is "
            '`{"id", "table_id", "row_indexes", "category_ids", "regressions"}`. Artifacts are '
            "removed after RECORDS_RETENTION_S, and the oldest first past RECORDS_MAX_BYTES."
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
                    "application/x-ndjson": {
                        "schema": {"type": "string"},
                        "itemSchema": _ref("AiRecord"),
                    }
                },
            },
            **_error_responses([401, 404]),
        },
    }


def _output_parameter() -> dict[str, Any]:
    return {
        "name": "output",
        "in": "query",
        "required": False,
        "description": (
            "`aicoco` (the default), `seg` (a DICOM Segmentation: segmentation models), `sr` "
            "(a Comprehensive 3D SR with a TID 1500 Measurement Report: any model) or `dicom` "
            "(SEG for segmentation models, SR for the others). DICOM outputs need DICOM inputs "
            "(422 `dicom_input_required`)."
        ),
        "schema": {"type": "string", "enum": [o.value for o in Output], "default": "aicoco"},
    }


def _pacs_operation(*, named: bool) -> dict[str, Any]:
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
            "content": {"application/json": {"schema": _ref("PacsInvocation")}},
        },
        "responses": {
            "200": _json_response("What was run and stored.", _ref("PacsResult")),
            **_error_responses([400, 404, 413, 422, 500, 502, 503, 504]),
        },
        **({"parameters": [_model_parameter()]} if named else {}),
    }


def _viewer_paths() -> dict[str, Any]:
    return {
        "/viewer": {
            "get": {
                "summary": "The browser viewer: run a model or open a saved result",
                "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
            }
        },
        "/viewer/render": {
            "post": {
                "summary": "The images of a request as the pipelines read them, as PNG slices",
                "description": (
                    "Takes the same multipart form as an invocation (files and `images` "
                    "entries) under the same limits, reads it with the same readers (rescale, "
                    "MONOCHROME1, series order, NIfTI orientation) and answers every slice as "
                    "an 8-bit PNG with the `images` entry it belongs to. `window` is a preset "
                    f"({', '.join(PRESETS)}), `auto` (the default: 8-bit images as they are, "
                    "others from their 0.5th to 99.5th percentile) or `center,width`."
                ),
                "parameters": [
                    {
                        "name": "window",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "default": "auto"},
                        "example": "lung",
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": _ref("InvocationForm")}},
                },
                "responses": {
                    "200": _json_response("The slices.", _ref("Rendering")),
                    **_error_responses([400, 413, 415, 422, 500, 503]),
                },
            }
        },
    }


def _model_parameter() -> dict[str, Any]:
    return {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "A model name from GET /models.",
        "schema": {"type": "string"},
    }


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
                    "contentSchema": {"type": "array", "items": _ref("AiImage")},
                    "description": "JSON list of AiCOCO image entries "
                    "(id, file_name, index, category_ids, regressions, extra keys; "
                    "`table_ids` for hybrid models).",
                },
                "tables": {
                    **json_text,
                    "contentSchema": {"type": "array", "items": _ref("AiTable")},
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
                            "images": {"type": "array", "items": _ref("AiImage")},
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
    }
    schemas["ErrorContent"]["properties"]["code"]["enum"] = [row["code"] for row in error_table()]
    return schemas


def _model_components(name: str, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
    """A pydantic model's schema as OpenAPI components: its ``$defs`` beside it, referenced there
    (validation mode for what clients send, serialization mode for what they get)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
    return {**schema.pop("$defs", {}), name: schema}


def openapi_document(settings: Settings) -> dict[str, Any]:
    plain = {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
    viewer = _viewer_paths() if settings.viewer else {}
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
        "paths": {
            "/invocations": {"post": _invocation_operation(settings, named=False)},
            "/models/{name}/invocations": {"post": _invocation_operation(settings, named=True)},
            "/dicomweb/invocations": {"post": _pacs_operation(named=False)},
            "/models/{name}/dicomweb/invocations": {"post": _pacs_operation(named=True)},
            "/invocations/artifacts/{name}": {"get": _artifact_operation()},
            "/models": {
                "get": {
                    "summary": "List the models with task, categories and readiness",
                    "responses": {
                        "200": _json_response("The models.", _ref("ModelList")),
                        **_error_responses([503]),
                    },
                }
            },
            "/models/{name}": {
                "get": {
                    "summary": "Describe one model",
                    "parameters": [_model_parameter()],
                    "responses": {
                        "200": _json_response("The model.", _ref("ModelInfo")),
                        **_error_responses([404, 503]),
                    },
                }
            },
            "/ping": {
                "get": {
                    "summary": "FLaVor's health check: 204 while the process serves",
                    "responses": {"204": {"description": _STATUS_TEXT[204]}},
                }
            },
            "/health/live": {
                "get": {
                    "summary": "Liveness: the process answers",
                    "responses": {"200": _json_response("Alive.", _ref("Liveness"))},
                }
            },
            "/health/ready": {
                "get": {
                    "summary": "Readiness: Triton and the default model are ready",
                    "responses": {
                        "200": _json_response("Ready.", _ref("Readiness")),
                        "503": _json_response("Not ready.", _ref("Readiness")),
                    },
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": plain}}},
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json_response("OpenAPI 3.1.", {"type": "object"})},
                }
            },
            "/docs": {
                "get": {
                    "summary": "This document as a web page",
                    "responses": {
                        "200": {"description": "HTML", "content": {"text/html": {}}},
                    },
                }
            },
            **viewer,
        },
        "components": {"schemas": _schemas()},
        "x-error-codes": error_table(),
    }


def render_docs(document: dict[str, Any]) -> str:
    """A self-contained HTML page of the document: routes, multipart fields, error codes."""
    esc = html.escape
    info = document["info"]
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(info['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(info['title'])} <small>{esc(info['version'])}</small></h1>",
        f"<p>{_inline(info['description'])}</p>",
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a> (OpenAPI 3.1).</p>",
        "<h2>Routes</h2><table><tr><th>Method</th><th>Path</th><th>Summary</th></tr>",
    ]
    operations = [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    for method, path, operation in operations:
        anchor = _anchor(method, path)
        out.append(
            f"<tr><td><code>{method.upper()}</code></td>"
            f"<td><a href='#{anchor}'><code>{esc(path)}</code></a></td>"
            f"<td>{esc(operation.get('summary', ''))}</td></tr>"
        )
    out.append("</table>")
    schemas = document["components"]["schemas"]
    for method, path, operation in operations:
        out.append(
            f"<h2 id='{_anchor(method, path)}'><code>{method.upper()} {esc(path)}</code></h2>"
        )
        out.append(f"<p><b>{esc(operation.get('summary', ''))}</b></p>")
        for paragraph in operation.get("description", "").split("\n\n"):
            if paragraph.startswith("    "):
                out.append(f"<pre>{esc(paragraph)}</pre>")
            else:
                out.append(f"<p>{_inline(paragraph)}</p>")
        body = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
        if body is not None:
            form = schemas[body["schema"]["$ref"].rsplit("/", 1)[1]]
            out.append("<h3>Multipart fields</h3><table><tr><th>Field</th><th>Meaning</th></tr>")
            for name, field in form["properties"].items():
                out.append(
                    f"<tr><td><code>{esc(name)}</code></td>"
                    f"<td>{_inline(field.get('description', ''))}</td></tr>"
                )
            out.append("</table>")
        out.append("<h3>Responses</h3><table><tr><th>Status</th><th>Meaning</th></tr>")
        for status, response in operation["responses"].items():
            out.append(
                f"<tr><td>{esc(status)}</td><td>{_inline(response['description'])}</td></tr>"
            )
        out.append("</table>")
    out.append(
        "<h2 id='errors'>Error codes</h2><table><tr><th>Status</th><th>Code</th>"
        "<th>When</th><th>What to change</th></tr>"
    )
    for row in document["x-error-codes"]:
        out.append(
            f"<tr><td>{row['status']}</td><td><code>{esc(row['code'])}</code></td>"
            f"<td>{esc(row['when'])}</td><td>{esc(row['fix'])}</td></tr>"
        )
    out.append("</table>")
    out.append("<h2>Schemas</h2>")
    for name, schema in schemas.items():
        out.append(f"<h3 id='schema-{esc(name)}'>{esc(name)}</h3>")
        out.append(f"<pre>{esc(json.dumps(schema, indent=2))}</pre>")
    out.append("</body></html>")
    return "\n".join(out)


def _anchor(method: str, path: str) -> str:
    return method + "-" + "".join(char if char.isalnum() else "-" for char in path).strip("-")


def _inline(text: str) -> str:
    """Escape, then show `code` spans as <code>."""
    parts = html.escape(text).split("`")
    return "".join(
        f"<code>{part}</code>" if index % 2 else part for index, part in enumerate(parts)
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;"
    "line-height:1.45;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}code{background:#f5f5f5;padding:0 .2em}"
    "pre{background:#f5f5f5;padding:.6em;overflow:auto;max-height:30em}h1 small{color:#888}"
)
