"""The browser viewer: a page that runs a model and draws its AiCOCO answer on the images.

Everything the page needs ships in this package (no CDN, no build step): ``static/`` holds the
page, its script and its style sheet. The page calls only the service's ordinary routes:
``GET /models``, ``POST /models/{name}/invocations`` and ``POST /viewer/render``, which reads
the files under the same upload, queue and reading limits as an invocation. ``VIEWER=false``
removes all three viewer routes.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.auth import audit, protected
from gateway.errors import RouteNotFound
from gateway.inference import Document, InferenceRequest
from gateway.intake import check_headers, parse_entries, receive_form, upload_folder
from gateway.readers import ReadLimits
from gateway.runner import Run
from gateway.service import service_of
from gateway.viewer.render import RenderPipeline, parse_window

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
}
_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'"
)
"""The page talks to its own origin only: nothing a result holds can load or send elsewhere."""
RENDER_LABEL = "viewer/render"
"""The render's ``model`` label in the stage histograms: a slash, so no Triton model's name."""


def routes() -> list[BaseRoute]:
    return [
        Route("/viewer", page, methods=["GET"]),
        Route("/viewer/render", protected(render_slices), methods=["POST"]),
        Route("/viewer/{asset}", asset, methods=["GET"]),
    ]


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
    content = resources.files(__package__).joinpath("static", name).read_bytes()
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
