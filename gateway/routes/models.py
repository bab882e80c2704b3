"""``GET /models`` and ``GET /models/{name}``: what the catalog serves, with each model's task,
categories and readiness. Open without an API key: a model list holds no patient data."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import ModelNotFound
from gateway.pipelines.catalog import DESCRIBE_RAISES
from gateway.routes.endpoint import MODEL_PARAMETER, Endpoint, fixed, json_response, ref
from gateway.schemas import ModelList
from gateway.service import service_of


async def list_models(request: Request) -> Response:
    service = service_of(request)
    models = await service.catalog.describe()
    listed = ModelList(default_model=service.settings.default_model, models=list(models))
    return JSONResponse(listed.model_dump(mode="json"))


async def describe_model(request: Request) -> Response:
    service = service_of(request)
    name = request.path_params["name"]
    for model in await service.catalog.describe():
        if model.name == name:
            return JSONResponse(model.model_dump(mode="json"))
    raise ModelNotFound(
        f"no model named {name!r}; GET /models lists the models", details={"model": name}
    )


ENDPOINTS = [
    Endpoint(
        "GET",
        "/models",
        list_models,
        fixed(
            {
                "summary": "List the models with task, categories and readiness",
                "responses": {"200": json_response("The models.", ref("ModelList"))},
            }
        ),
        raises=DESCRIBE_RAISES,
    ),
    Endpoint(
        "GET",
        "/models/{name}",
        describe_model,
        fixed(
            {
                "summary": "Describe one model",
                "parameters": [MODEL_PARAMETER],
                "responses": {"200": json_response("The model.", ref("ModelInfo"))},
            }
        ),
        raises=(ModelNotFound, *DESCRIBE_RAISES),
    ),
]
