"""The HTTP layer around the pipeline: routes, errors, limits, request ids, metrics, cleanup.

The catalog, pipeline and Triton health here are test doubles: these tests are about what
happens around a pipeline (parsing, limits, errors, bookkeeping). tests/e2e runs the same
paths against a real Triton and the real pipelines.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

import gateway.errors
from aicoco import AiCOCOOutput
from gateway import doctables
from gateway.app import create_app
from gateway.errors import (
    ApiError,
    InvalidInput,
    ModelNotFound,
    TritonUnavailable,
    error_classes,
)
from gateway.inference import InferenceRequest, Pipeline
from gateway.openapi import errors_markdown
from gateway.schemas import ModelInfo
from gateway.settings import Settings

pytestmark = pytest.mark.anyio


@dataclass
class EchoPipeline:
    """Answers the request's own images and records each request; can block or fail."""

    calls: list[InferenceRequest] = field(default_factory=list)
    gate: asyncio.Event | None = None
    entered: asyncio.Event | None = None
    error: Exception | None = None

    async def __call__(self, request: InferenceRequest) -> AiCOCOOutput:
        self.calls.append(request)
        assert all(upload.path.is_file() for upload in request.uploads.values())
        if self.entered is not None:
            self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        with request.stage("read"):
            pass
        return AiCOCOOutput(images=request.images)


@dataclass
class Catalog:
    pipelines: dict[str, EchoPipeline]

    async def pipeline(self, name: str) -> Pipeline:
        if name not in self.pipelines:
            raise ModelNotFound(f"no model named {name!r}")
        return self.pipelines[name]

    async def describe(self) -> list[ModelInfo]:
        return [ModelInfo(name=name, task="classification", ready=True) for name in self.pipelines]


@dataclass
class TritonHealth:
    up: bool = True
    model_up: bool = True

    async def server_ready(self) -> bool:
        return self.up

    async def model_ready(self, name: str) -> bool:
        return self.model_up


@pytest.fixture
def upload_dir(tmp_path: Path) -> Path:
    path = tmp_path / "uploads"
    path.mkdir()
    return path


@pytest.fixture
def settings(upload_dir: Path) -> Settings:
    return Settings(
        upload_dir=upload_dir,
        max_request_bytes=1024 * 1024,
        max_files=3,
        max_in_flight=1,
        max_queue=1,
        queue_timeout_s=10,
        cpu_workers=1,
    )


@pytest.fixture
def pipeline() -> EchoPipeline:
    return EchoPipeline()


@pytest.fixture
def health() -> TritonHealth:
    return TritonHealth()


@pytest.fixture
def app(settings: Settings, pipeline: EchoPipeline, health: TritonHealth) -> Starlette:
    catalog = Catalog({"lesion_classifier": pipeline, "lung_segmenter": EchoPipeline()})
    return create_app(settings, triton=health, catalog=catalog)


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, called in-process; each request gets a copy of the lifespan's
    state, as a server that runs the lifespan protocol gives it."""
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
            await app({**scope, "state": dict(state or {})}, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app) as client:
        yield client


def entry(file_name: str, index: int = 0) -> dict[str, Any]:
    return {"id": f"id-{index}", "file_name": file_name, "index": index}


def flavor_request(*names: str) -> dict[str, Any]:
    """httpx keyword arguments for a FLaVor-style request."""
    return {
        "files": [("files", (name, b"pixels of " + name.encode())) for name in names],
        "data": {
            "images": json.dumps([entry(name, i) for i, name in enumerate(names)]),
            "meta": json.dumps({"task_type": "demo"}),
        },
    }


def _streamed(request: dict[str, Any], padding: int = 1024 * 1024) -> dict[str, Any]:
    """The request as a chunked body (no Content-Length), a file padded past the limit."""
    files = request["files"] + [("files", ("pad.png", b"x" * padding))]
    built = httpx.Request("POST", "http://gateway/", files=files, data=request["data"])
    body = built.read()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    return {"content": chunks(), "headers": {"Content-Type": built.headers["content-type"]}}


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    assert error["message"]
    assert "Traceback" not in response.text
    return error


async def test_ping_live_and_request_ids(client: httpx.AsyncClient) -> None:
    response = await client.get("/ping")
    assert response.status_code == 204
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert (await client.get("/health/live")).json() == {"status": "alive"}
    given = await client.get("/ping", headers={"X-Request-ID": "client-chosen id 42"})
    assert given.headers["x-request-id"] == "client-chosen id 42"
    for bad in ["x" * 129, "tab\there"]:
        replaced = await client.get("/ping", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])


async def test_readiness_follows_triton_and_the_default_model(
    client: httpx.AsyncClient, health: TritonHealth
) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "triton": True,
        "default_model": "lesion_classifier",
        "default_model_ready": True,
    }
    health.model_up = False
    assert (await client.get("/health/ready")).status_code == 503
    health.up = False
    assert (await client.get("/health/ready")).json()["triton"] is False


async def test_models(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/models")).json()
    assert listed["default_model"] == "lesion_classifier"
    assert [model["name"] for model in listed["models"]] == ["lesion_classifier", "lung_segmenter"]
    assert (await client.get("/models/lung_segmenter")).json()["task"] == "classification"
    assert_error(await client.get("/models/nope"), 404, "model_not_found")


async def test_unknown_routes_and_methods_are_json(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/nowhere"), 404, "not_found")
    response = await client.get("/invocations")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


async def test_invocation_reaches_the_pipeline_and_cleans_up(
    client: httpx.AsyncClient, pipeline: EchoPipeline, upload_dir: Path
) -> None:
    response = await client.post(
        "/invocations", headers={"X-Request-ID": "abc"}, **flavor_request("a.png", "b.png")
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert [image["file_name"] for image in response.json()["images"]] == ["a.png", "b.png"]
    (request,) = pipeline.calls
    assert request.request_id == "abc"
    assert request.model_name == "lesion_classifier"
    assert request.fields == {"meta": {"task_type": "demo"}}
    assert request.uploads["b.png"].size == len(b"pixels of b.png")
    assert leftovers(upload_dir) == []


async def test_the_named_model_route(client: httpx.AsyncClient, pipeline: EchoPipeline) -> None:
    response = await client.post("/models/lung_segmenter/invocations", **flavor_request("a.png"))
    assert response.status_code == 200
    assert pipeline.calls == []
    response = await client.post("/models/nope/invocations", **flavor_request("a.png"))
    assert_error(response, 404, "model_not_found")


BadRequest = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]

BAD_REQUESTS: dict[str, tuple[BadRequest, int, str]] = {
    "not multipart": (
        lambda c: c.post("/invocations", json={"images": []}),
        415,
        "unsupported_media_type",
    ),
    "declared too large": (
        lambda c: c.post(
            "/invocations",
            content=b"x",
            headers={
                "Content-Type": "multipart/form-data; boundary=b",
                "Content-Length": str(2 * 1024 * 1024),
            },
        ),
        413,
        "payload_too_large",
    ),
    "counted too large": (
        lambda c: c.post("/invocations", **_streamed(flavor_request("a.png"))),
        413,
        "payload_too_large",
    ),
    "too many files": (
        lambda c: c.post("/invocations", **flavor_request("1.png", "2.png", "3.png", "4.png")),
        413,
        "too_many_files",
    ),
    "malformed multipart": (
        lambda c: c.post(
            "/invocations",
            content=b"--b\r\nnonsense",
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        ),
        400,
        "malformed_multipart",
    ),
    "malformed json": (
        lambda c: c.post(
            "/invocations", files=[("files", ("a.png", b"x"))], data={"images": "[{oops"}
        ),
        400,
        "malformed_json",
    ),
    "path-like name": (
        lambda c: c.post(
            "/invocations",
            files=[("files", ("../a.png", b"x"))],
            data={"images": json.dumps([entry("../a.png")])},
        ),
        422,
        "invalid_input",
    ),
    "invalid entry": (
        lambda c: c.post(
            "/invocations",
            files=[("files", ("a.png", b"x"))],
            data={"images": json.dumps([{"id": "x", "file_name": "a.png", "index": "first"}])},
        ),
        422,
        "invalid_aicoco",
    ),
    "mismatch": (
        lambda c: c.post(
            "/invocations",
            files=[("files", ("a.png", b"x"))],
            data={"images": json.dumps([entry("b.png")])},
        ),
        422,
        "file_mismatch",
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
async def test_bad_requests_are_refused_and_leave_nothing(
    client: httpx.AsyncClient,
    pipeline: EchoPipeline,
    upload_dir: Path,
    case: tuple[BadRequest, int, str],
) -> None:
    send, status, code = case
    assert_error(await send(client), status, code)
    assert pipeline.calls == []
    assert leftovers(upload_dir) == []
    assert (await client.post("/invocations", **flavor_request("ok.png"))).status_code == 200


async def test_pipeline_errors_are_rendered(
    client: httpx.AsyncClient, pipeline: EchoPipeline
) -> None:
    pipeline.error = TritonUnavailable("Triton is unavailable: connection refused")
    response = await client.post("/invocations", **flavor_request("a.png"))
    assert_error(response, 503, "triton_unavailable")
    assert response.headers["retry-after"] == "5"


async def test_a_bug_is_a_500_without_traceback(
    client: httpx.AsyncClient,
    pipeline: EchoPipeline,
    upload_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline.error = RuntimeError("secret internals")
    response = await client.post("/invocations", **flavor_request("a.png"))
    error = assert_error(response, 500, "internal_error")
    assert "secret internals" not in response.text
    assert "request_id" in error["message"]
    assert leftovers(upload_dir) == []
    (logged,) = [record for record in caplog.records if record.exc_info]
    assert logged.exc_info is not None
    assert str(logged.exc_info[1]) == "secret internals"


async def test_metrics_after_a_request(client: httpx.AsyncClient) -> None:
    assert (await client.post("/invocations", **flavor_request("a.png"))).status_code == 200
    assert (await client.post("/invocations", json={})).status_code == 415
    text = (await client.get("/metrics")).text
    for stage in ("parse", "read", "format"):
        assert (
            f'gateway_stage_duration_seconds_count{{model="lesion_classifier",stage="{stage}"}} 1.0'
            in text
        )
    assert 'gateway_requests_total{method="POST",route="/invocations",status="200"} 1.0' in text
    assert 'gateway_requests_total{method="POST",route="/invocations",status="415"} 1.0' in text
    assert 'gateway_errors_total{code="unsupported_media_type"} 1.0' in text
    assert "gateway_in_flight_requests 0.0" in text
    assert "gateway_upload_bytes_total" in text


async def test_apps_have_their_own_registries(settings: Settings) -> None:
    for _ in range(2):
        app = create_app(settings, triton=TritonHealth(), catalog=Catalog({}))
        async with serving(app) as client:
            assert (await client.get("/ping")).status_code == 204
            assert 'route="/ping",status="204"} 1.0' in (await client.get("/metrics")).text


async def test_a_burst_waits_its_turn_and_past_the_queue_is_refused(
    client: httpx.AsyncClient, pipeline: EchoPipeline, upload_dir: Path
) -> None:
    pipeline.gate = asyncio.Event()
    pipeline.entered = asyncio.Event()
    first = asyncio.ensure_future(client.post("/invocations", **flavor_request("a.png")))
    await pipeline.entered.wait()
    second = asyncio.ensure_future(client.post("/invocations", **flavor_request("b.png")))
    for _ in range(200):
        if "gateway_queue_depth 1.0" in (await client.get("/metrics")).text:
            break
        await asyncio.sleep(0.01)
    busy = await client.post("/invocations", **flavor_request("c.png"))
    assert_error(busy, 503, "server_busy")
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["details"]["stage"] == "queue"
    assert (await client.get("/ping")).status_code == 204
    assert "gateway_in_flight_requests 1.0" in (await client.get("/metrics")).text
    assert not first.done() and not second.done()
    pipeline.gate.set()
    assert (await first).status_code == 200
    assert (await second).status_code == 200
    text = (await client.get("/metrics")).text
    assert "gateway_in_flight_requests 0.0" in text
    assert "gateway_queue_depth 0.0" in text
    assert "gateway_queue_wait_seconds_count 2.0" in text
    pipeline.gate = None
    assert (await client.post("/invocations", **flavor_request("d.png"))).status_code == 200
    assert leftovers(upload_dir) == []


async def test_a_wait_longer_than_the_queue_timeout_is_refused(
    upload_dir: Path, pipeline: EchoPipeline, health: TritonHealth
) -> None:
    settings = Settings(
        upload_dir=upload_dir, max_in_flight=1, max_queue=4, queue_timeout_s=0.2, cpu_workers=1
    )
    catalog = Catalog({"lesion_classifier": pipeline})
    async with serving(create_app(settings, triton=health, catalog=catalog)) as client:
        pipeline.gate = asyncio.Event()
        pipeline.entered = asyncio.Event()
        first = asyncio.ensure_future(client.post("/invocations", **flavor_request("a.png")))
        await pipeline.entered.wait()
        late = await client.post("/invocations", **flavor_request("b.png"))
        assert_error(late, 503, "server_busy")
        assert "QUEUE_TIMEOUT_S" in late.json()["error"]["message"]
        pipeline.gate.set()
        assert (await first).status_code == 200
        assert "gateway_queue_depth 0.0" in (await client.get("/metrics")).text
    assert leftovers(upload_dir) == []


def _half_a_request() -> tuple[bytes, list[tuple[bytes, bytes]]]:
    request = httpx.Request("POST", "http://gateway/invocations", **flavor_request("a.png"))
    body = request.read()
    headers = [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]
    return body[: len(body) // 2], headers


def _scope(headers: list[tuple[bytes, bytes]], state: Any) -> dict[str, Any]:
    """An HTTP scope as a server makes it, with a copy of the lifespan's state."""
    return {
        "state": dict(state or {}),
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/invocations",
        "raw_path": b"/invocations",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("gateway", 80),
    }


async def test_a_client_that_hangs_up_leaves_nothing(
    app: Starlette, pipeline: EchoPipeline, upload_dir: Path
) -> None:
    half, headers = _half_a_request()
    messages: list[Message] = [
        {"type": "http.request", "body": half, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    async with app.router.lifespan_context(app) as state:
        await app(_scope(headers, state), receive, send)
    assert pipeline.calls == []
    assert leftovers(upload_dir) == []
    assert sent == []


async def test_a_cancelled_request_leaves_nothing(
    app: Starlette, pipeline: EchoPipeline, upload_dir: Path
) -> None:
    half, headers = _half_a_request()
    first_chunk_read = asyncio.Event()
    waiting_for_more = asyncio.Event()
    never = asyncio.Event()

    async def receive() -> Message:
        if first_chunk_read.is_set():
            waiting_for_more.set()
            await never.wait()
        first_chunk_read.set()
        return {"type": "http.request", "body": half, "more_body": True}

    async def send(message: Message) -> None:
        raise AssertionError(f"no response expected, got {message}")

    async with app.router.lifespan_context(app) as state:
        task = asyncio.ensure_future(app(_scope(headers, state), receive, send))
        await waiting_for_more.wait()
        assert len(leftovers(upload_dir)) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert pipeline.calls == []
    assert leftovers(upload_dir) == []


async def test_openapi_describes_the_contract(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    for path in ["/invocations", "/models/{name}/invocations", "/models", "/ping", "/health/ready"]:
        assert path in document["paths"]
    assert "/invocations/artifacts/{name}" in document["paths"]
    form = document["components"]["schemas"]["InvocationForm"]["properties"]
    assert {"files", "images", "tables", "data", "metadata", "meta"} <= set(form)
    assert form["files"]["type"] == "array"
    responses = document["paths"]["/invocations"]["post"]["responses"]
    assert {"200", "400", "413", "415", "422", "503", "504"} <= set(responses)
    codes = {row["code"] for row in document["x-error-codes"]}
    assert {"malformed_multipart", "too_many_files", "server_busy", "file_mismatch"} <= codes
    schemas = document["components"]["schemas"]
    assert {"AiCOCOOutput", "AiCOCOTabularOutput", "AiCOCOHybridOutput", "AiRecord"} <= set(schemas)
    for ref in re.findall(r'"\$ref": "([^"]+)"', json.dumps(document)):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in document["components"]["schemas"], ref


async def test_answers_fit_the_documented_schemas(
    client: httpx.AsyncClient, health: TritonHealth
) -> None:
    """The JSON answers validate against the schemas /openapi.json publishes for them."""
    document = (await client.get("/openapi.json")).json()
    described = document["components"]["schemas"]["ModelInfo"]
    assert set(described["properties"]) == set(ModelInfo.model_fields) == set(described["required"])

    def check(response: httpx.Response, schema: str) -> None:
        wrapped = {"$ref": f"#/components/schemas/{schema}", "components": document["components"]}
        jsonschema.validate(response.json(), wrapped)

    check(await client.get("/models"), "ModelList")
    check(await client.get("/models/lung_segmenter"), "ModelInfo")
    check(await client.get("/health/live"), "Liveness")
    check(await client.get("/health/ready"), "Readiness")
    health.up = False
    check(await client.get("/health/ready"), "Readiness")
    check(await client.get("/models/nope"), "Error")
    check(await client.post("/invocations", content=b"x"), "Error")


def test_every_error_class_has_a_documented_code() -> None:
    classes = list(error_classes())
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes)), "two error classes share a code"
    for cls in classes:
        assert cls.when.strip() and cls.fix.strip(), cls.__name__


def test_an_error_class_without_its_own_text_is_refused() -> None:
    with pytest.raises(TypeError, match="when"):

        class Undocumented(InvalidInput):  # pragma: no cover - refused at definition
            code = "undocumented"
            fix = "nothing"


def test_the_drawn_error_tree_is_the_class_tree() -> None:
    def tree(cls: type[ApiError], depth: int) -> list[tuple[int, str, int | None, str | None]]:
        rows = []
        for child in cls.__subclasses__():
            status = child.status if "status" in child.__dict__ else None
            rows.append((depth, child.__name__, status, child.__dict__.get("code")))
            rows.extend(tree(child, depth + 1))
        return rows

    doc = gateway.errors.__doc__ or ""
    drawing = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert drawing[0].strip() == "ApiError"
    drawn = []
    for line in drawing[1:]:
        match = re.match(r"^ {4}([│├└─ ]*)(\w+)\s+(?:(\d{3})\s*)?([a-z_]+)?", line)
        assert match, line
        status = int(match.group(3)) if match.group(3) else None
        drawn.append((len(match.group(1)) // 4 - 1, match.group(2), status, match.group(4)))
    assert drawn == tree(ApiError, 0)
    assert not any(cls.__dict__.get("parent") for cls in error_classes())


def test_the_error_table_in_the_docs_is_the_generated_one() -> None:
    assert doctables.current("errors") == errors_markdown(), "run make docs"


async def test_docs_page_is_self_contained(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    for text in ["/invocations", "/models/{name}/invocations", "too_many_files", "images"]:
        assert text in page
    assert "<script" not in page
    assert not re.search(r"(src|href)=['\"]https?://", page)


async def test_starting_without_triton_is_not_fatal(settings: Settings) -> None:
    class Down:
        async def pipeline(self, name: str) -> Pipeline:
            raise TritonUnavailable("Triton is unavailable")

        async def describe(self) -> list[ModelInfo]:
            raise TritonUnavailable("Triton is unavailable")

    app = create_app(settings, triton=TritonHealth(up=False), catalog=Down())
    async with serving(app) as client:
        assert (await client.get("/ping")).status_code == 204
        assert (await client.get("/health/ready")).status_code == 503
        assert_error(await client.get("/models"), 503, "triton_unavailable")
