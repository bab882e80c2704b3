"""``/viewer`` (the page), ``/viewer/{asset}`` (its script and style sheet) and
``POST /viewer/render`` (a request's images as the pipelines read them, as PNG slices).

The page and its files are open; the render takes patient images, so it needs an API key when
keys are configured. ``VIEWER=false`` removes the three.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from gateway import intake, readers
from gateway.auth import audit
from gateway.errors import InvalidParameter, RouteNotFound
from gateway.inference import Document, InferenceRequest
from gateway.intake import check_headers, parse_entries, receive_form, upload_folder
from gateway.readers import ReadLimits
from gateway.routes.endpoint import Endpoint, fixed, html_response, json_response, ref
from gateway.runner import Run
from gateway.service import service_of
from gateway.viewer import ASSETS
from gateway.viewer.render import PRESETS, RenderPipeline, parse_window

_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'"
)
"""The page talks to its own origin only: nothing a result holds can load or send elsewhere."""
RENDER_LABEL = "viewer/render"
"""The render's ``model`` label in the stage histograms: a slash, so no Triton model's name."""


async def page(request: Request) -> Response:
    """The page. Its URLs are relative (``viewer/viewer.js``, ``models``), so it also works
    behind a proxy that serves the gateway under a path prefix."""
    return _asset("index.html")


async def asset(request: Request) -> Response:
    name = request.path_params["asset"]
    if name not in ASSETS or name == "index.html":
        raise RouteNotFound(f"the viewer has no file {name!r}; open /viewer")
    return _asset(name)


def _asset(name: str) -> Response:
    content = resources.files("gateway.viewer").joinpath("static", name).read_bytes()
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": _POLICY}
    return Response(content, media_type=ASSETS[name], headers=headers)


async def render_slices(request: Request) -> Response:
    """The invocation's multipart form in, :class:`~gateway.schemas.Rendering` out, through the
    runner as an invocation goes (its stages are recorded under the model ``viewer/render``,
    a name no Triton model can have)."""
    service = service_of(request)
    boundary = check_headers(request)
    window = parse_window(request.query_params.get("window"))
    run = Run(service, RENDER_LABEL)
    with upload_folder(service.settings.upload_dir) as folder:
        form = await receive_form(request, boundary, folder)
        audit(request).update(files=len(form.uploads), bytes=form.upload_bytes)
        images, _ = parse_entries(form)
        inference = InferenceRequest(
            request_id=request.state.request_id,
            model_name=RENDER_LABEL,
            images=images,
            uploads=form.uploads,
            observe=run.observe,
        )
        run.parsed()
        pipeline = RenderPipeline(service.cpu, ReadLimits.of(service.settings), window)

        async def respond(pictures: Document) -> bytes:
            return await service.cpu.run(pictures.to_json_bytes)

        body = await run(request.receive, inference, respond, pipeline)
    return Response(body, media_type="application/json")


ENDPOINTS = [
    Endpoint(
        "GET",
        "/viewer",
        page,
        fixed(
            {
                "summary": "The browser viewer: run a model or open a saved result",
                "responses": {"200": html_response()},
            }
        ),
        viewer=True,
    ),
    Endpoint(
        "POST",
        "/viewer/render",
        render_slices,
        fixed(
            {
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
                    "content": {"multipart/form-data": {"schema": ref("InvocationForm")}},
                },
                "responses": {"200": json_response("The slices.", ref("Rendering"))},
            }
        ),
        raises=(InvalidParameter, *intake.RAISES, *readers.RAISES),
        protected=True,
        viewer=True,
    ),
    Endpoint(
        "GET",
        "/viewer/{asset}",
        asset,
        fixed(
            {
                "summary": "The viewer page's script and style sheet",
                "parameters": [
                    {
                        "name": "asset",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": sorted(set(ASSETS) - {"index.html"})},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {"text/javascript": {}, "text/css": {}},
                    }
                },
            }
        ),
        raises=(RouteNotFound,),
        viewer=True,
    ),
]
