"""The throughput bench's baseline: the model run in-process, inside the HTTP handler.

This is how a hand-rolled server (or FLaVor's ``flavor.serve``) serves a model: one process,
Starlette on uvicorn (httptools and uvloop), the multipart form parsed by Starlette, the PNG
decoded in memory by Pillow, and one ONNX Runtime call on a worker thread with the session
options of the local Triton backend (:func:`triton_local.ort_runner.create_session`). The
preprocessing, the postprocessing and the AiCOCO document are the gateway's own functions with
the model's own ``aicoco.*`` parameters, so both sides answer the same document and differ only
in what surrounds the model: the gateway's admission, limits and upload folder, a gRPC hop to a
second process, Triton's scheduler and dynamic batcher.

``python -m benchmarks.baseline --port N`` serves ``POST /invocations`` (and ``GET /ping``) for
one model of the repository (the classifier by default) until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
import uvicorn
from google.protobuf import json_format, text_format  # type: ignore[import-untyped]
from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tritonclient.grpc import model_config_pb2

from aicoco import AiImage, ClassificationStrategy, IdGenerator
from gateway.pipelines import postprocessing as post
from gateway.pipelines.params import ClassificationOutput
from gateway.pipelines.preprocessing import to_model_input
from gateway.pipelines.tasks import parse_params
from triton_local.ort_runner import create_session, parse_model_config

ROOT = Path(__file__).resolve().parent.parent
MODEL = "lesion_classifier"


def model_parameters(folder: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The model's configuration as Triton hands it to a backend (JSON) and its parameters."""
    config = model_config_pb2.ModelConfig()
    text_format.Parse((folder / "config.pbtxt").read_text(encoding="utf-8"), config)
    as_json: dict[str, Any] = json_format.MessageToDict(config, preserving_proto_field_name=True)
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    return as_json, parameters


def create_baseline_app(folder: Path) -> Starlette:
    """``POST /invocations`` for the classifier in ``folder``, in the gateway's wire format."""
    config, parameters = model_parameters(folder)
    spec = parse_model_config(config)
    session = create_session(folder / "1" / spec.model_filename, spec.settings)
    params = parse_params(folder.name, parameters)
    output = params.output
    if params.task != "classification" or not isinstance(output, ClassificationOutput):
        raise SystemExit(f"the baseline serves classifiers; {folder.name} is a {params.task}")
    strategy = ClassificationStrategy()

    def answer(png: bytes, entries: list[dict[str, Any]]) -> bytes:
        pixels = np.asarray(Image.open(io.BytesIO(png)))
        x = to_model_input(pixels[None], hounsfield=False, spec=params.input)
        (probabilities,) = session.run(["probabilities"], {"image": x})
        positive = post.classify(probabilities, output.threshold, output.aggregate)
        images = [AiImage.model_validate(entry) for entry in entries]
        document = strategy(
            positive, images=images, categories=params.categories, ids=IdGenerator()
        )
        return document.to_json_bytes()

    async def invocations(request: Request) -> Response:
        async with request.form() as form:
            upload, images = form.get("files"), form.get("images")
            if not isinstance(upload, UploadFile) or not isinstance(images, str):
                return Response(b'{"error": "files and images are required"}', status_code=422)
            png = await upload.read()
            body = await anyio.to_thread.run_sync(answer, png, json.loads(images))
        return Response(body, media_type="application/json")

    async def ping(request: Request) -> Response:
        return Response(status_code=204)

    return Starlette(
        routes=[
            Route("/invocations", invocations, methods=["POST"]),
            Route("/ping", ping, methods=["GET"]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default=MODEL, help="a classifier of model_repository/")
    args = parser.parse_args(argv)
    app = create_baseline_app(ROOT / "model_repository" / args.model)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
