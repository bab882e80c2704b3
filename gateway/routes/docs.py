"""``/openapi.json`` and ``/docs``: the API's description, as data and as a page.

``/docs`` is rendered on the server from the document: plain HTML with no scripts and nothing
fetched from elsewhere, because the gateway often runs on networks with no internet.
"""

from __future__ import annotations

import html
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from gateway.routes.endpoint import Endpoint, fixed, html_response, json_response
from gateway.service import service_of


async def document(request: Request) -> Response:
    return JSONResponse(service_of(request).openapi)


async def page(request: Request) -> Response:
    return HTMLResponse(render_docs(service_of(request).openapi))


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


ENDPOINTS = [
    Endpoint(
        "GET",
        "/openapi.json",
        document,
        fixed(
            {
                "summary": "This document",
                "responses": {"200": json_response("OpenAPI 3.1.", {"type": "object"})},
            }
        ),
    ),
    Endpoint(
        "GET",
        "/docs",
        page,
        fixed({"summary": "This document as a web page", "responses": {"200": html_response()}}),
    ),
]
