"""The HTTP routes, one module per family, each declaring its routes beside their handlers with
their OpenAPI operation and the errors they raise (:class:`~gateway.routes.endpoint.Endpoint`).

- :mod:`~gateway.routes.invocations`: ``POST /invocations`` and ``/models/{name}/invocations``.
- :mod:`~gateway.routes.artifacts`: a tabular answer's records.
- :mod:`~gateway.routes.dicomweb`: a study in the PACS in, the result stored back.
- :mod:`~gateway.routes.jobs`: the same work as jobs: submit, poll, fetch, cancel.
- :mod:`~gateway.routes.models`: the model list and one model.
- :mod:`~gateway.routes.health`: probes and Prometheus metrics.
- :mod:`~gateway.routes.docs`: ``/openapi.json`` and ``/docs``.
- :mod:`~gateway.routes.viewer`: the browser viewer's page, files and render.

What the routes share is not in a route: the intake of files (:mod:`gateway.intake`) and the
run through admission, pipeline and format (:mod:`gateway.runner`). No route module imports
another; this table is the one place that lists them all.
"""

from __future__ import annotations

from gateway.routes import artifacts, dicomweb, docs, health, invocations, jobs, models, viewer
from gateway.routes.endpoint import Endpoint
from gateway.settings import Settings

ENDPOINTS: tuple[Endpoint, ...] = (
    *invocations.ENDPOINTS,
    *artifacts.ENDPOINTS,
    *dicomweb.ENDPOINTS,
    *jobs.ENDPOINTS,
    *models.ENDPOINTS,
    *health.ENDPOINTS,
    *docs.ENDPOINTS,
    *viewer.ENDPOINTS,
)
"""Every route, in the order the router tries them."""


def endpoints(settings: Settings) -> list[Endpoint]:
    """The routes these settings serve: all, less the viewer's with ``VIEWER=false``."""
    return [e for e in ENDPOINTS if settings.viewer or not e.viewer]
