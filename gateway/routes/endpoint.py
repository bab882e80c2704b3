"""One route as the gateway declares it: method, path, handler, OpenAPI operation and the errors
it can raise, side by side, so the document cannot drift from the app.

A route family module lists its :class:`Endpoint` values in ``ENDPOINTS``, beside its
handlers. The app makes its Starlette routes from them (:meth:`Endpoint.route`) and
:mod:`gateway.openapi` its paths, adding to each operation one response per error status,
generated from :attr:`Endpoint.errors` (the codes the route can answer, also the
``x-error-codes`` of that response). The helpers below are OpenAPI fragments several families
share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.routing import Route

from gateway.auth import Handler, protected
from gateway.errors import ApiError, InternalError, Unauthorized
from gateway.outputs.choice import Output
from gateway.settings import Settings

Operation = dict[str, Any]
"""An OpenAPI Operation Object without its error responses (those come from ``raises``)."""


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    operation: Callable[[Settings], Operation]
    """The operation, from the settings its text quotes (limits, the default model, the port)."""
    raises: tuple[type[ApiError], ...] = ()
    """Each error class the handler, or what it calls, can raise: the leaf classes, since a
    parent's code is not its children's."""
    protected: bool = False
    """Takes or returns patient data: needs an API key when keys are configured
    (:func:`gateway.auth.protected`), and so can answer 401."""
    viewer: bool = False
    """Part of the browser viewer, which ``VIEWER=false`` removes."""
    probe: bool = False
    """Polled every few seconds (health checks, Prometheus): its successful access lines are
    logged at DEBUG, not INFO."""

    @property
    def errors(self) -> tuple[type[ApiError], ...]:
        """Every error class this route can answer. Any route may answer ``internal_error``:
        the request middleware's last resort for an exception nothing else handled."""
        declared = ((Unauthorized,) if self.protected else ()) + self.raises + (InternalError,)
        return tuple(dict.fromkeys(declared))

    def route(self) -> Route:
        handler = protected(self.handler) if self.protected else self.handler
        return Route(self.path, handler, methods=[self.method])


def fixed(operation: Operation) -> Callable[[Settings], Operation]:
    """An operation whose text quotes no setting."""
    return lambda settings: operation


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def html_response() -> dict[str, Any]:
    return {"description": "HTML", "content": {"text/html": {}}}


MODEL_PARAMETER: dict[str, Any] = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "A model name from GET /models.",
    "schema": {"type": "string"},
}


OUTPUT_PARAMETER: dict[str, Any] = {
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
