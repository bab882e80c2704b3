"""The form -> InferenceRequest step: the AiCOCO and pairing rules, without HTTP."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message

from gateway.errors import (
    ApiError,
    FileMismatch,
    InvalidAiCOCO,
    InvalidInput,
    MalformedJSON,
    UnreadableFile,
)
from gateway.inference import InferenceRequest, Upload
from gateway.intake import build_request
from gateway.runner import unless_disconnected
from gateway.uploads import Form


def entry(file_name: str, index: int | str = 0, **extra: Any) -> dict[str, Any]:
    return {"id": f"{file_name}-{index}", "file_name": file_name, "index": index, **extra}


def form(fields: dict[str, Any], files: dict[str, int] | None = None) -> Form:
    """Fields given as Python values are sent as JSON text, strings as they are."""
    text = {
        name: value if isinstance(value, str) else json.dumps(value)
        for name, value in fields.items()
    }
    uploads = {
        name: Upload(name, Path("/nonexistent") / name, size)
        for name, size in (files or {}).items()
    }
    return Form(fields=text, uploads=uploads)


def build(fields: dict[str, Any], files: dict[str, int] | None = None) -> InferenceRequest:
    return build_request(form(fields, files), request_id="rid", model_name="m", observe=None)


def test_flavor_fields() -> None:
    request = build(
        {
            "images": [entry("a.dcm", "1", category_ids=None, extra_key="kept"), entry("b.dcm", 0)],
            "meta": {"task_type": "x"},
            "threshold": 0.3,
        },
        {"a.dcm": 3, "b.dcm": 4},
    )
    assert [image.file_name for image in request.images] == ["a.dcm", "b.dcm"]
    assert request.images[0].index == 1
    assert request.images[0].model_dump()["extra_key"] == "kept"
    assert request.fields == {"meta": {"task_type": "x"}, "threshold": 0.3}
    assert set(request.uploads) == {"a.dcm", "b.dcm"}
    assert request.request_id == "rid"
    assert request.model_name == "m"


def test_many_entries_may_share_one_file() -> None:
    images = [entry("vol.nii.gz", z) for z in range(3)]
    assert len(build({"images": images}, {"vol.nii.gz": 10}).images) == 3


def test_the_data_variant_with_metadata() -> None:
    request = build(
        {"data": {"images": [entry("a.png")], "meta": {"x": 1}}, "metadata": {"site": "A"}},
        {"a.png": 1},
    )
    assert [image.file_name for image in request.images] == ["a.png"]
    assert request.fields == {"meta": {"x": 1}, "metadata": {"site": "A"}}


def test_images_wins_over_data() -> None:
    request = build({"images": [entry("a.png")], "data": {"other": 1}}, {"a.png": 1})
    assert request.fields == {"data": {"other": 1}}


Case = tuple[dict[str, Any], dict[str, int], type[ApiError], str]

CASES: dict[str, Case] = {
    "malformed images": (
        {"images": "[{"},
        {"a.png": 1},
        MalformedJSON,
        "'images' is not valid JSON",
    ),
    "malformed meta": (
        {"images": [entry("a.png")], "meta": "{'single': 'quotes'}"},
        {"a.png": 1},
        MalformedJSON,
        "'meta'",
    ),
    "plain text field": (
        {"images": [entry("a.png")], "note": "hello"},
        {"a.png": 1},
        MalformedJSON,
        "'note'",
    ),
    "no images": ({"meta": {}}, {"a.png": 1}, InvalidAiCOCO, "no images entries"),
    "images not a list": ({"images": entry("a.png")}, {"a.png": 1}, InvalidAiCOCO, "got an object"),
    "images empty": ({"images": []}, {}, InvalidAiCOCO, "empty"),
    "entry not an object": ({"images": ["a.png"]}, {"a.png": 1}, InvalidAiCOCO, r"images\[0\]"),
    "missing id": (
        {"images": [{"file_name": "a.png", "index": 0}]},
        {"a.png": 1},
        InvalidAiCOCO,
        r"images\[0\]\.id",
    ),
    "missing file_name": ({"images": [{"id": "x", "index": 0}]}, {}, InvalidAiCOCO, "file_name"),
    "missing index": (
        {"images": [{"id": "x", "file_name": "a.png"}]},
        {"a.png": 1},
        InvalidAiCOCO,
        r"images\[0\]\.index",
    ),
    "index not a number": (
        {"images": [entry("a.png", "first")]},
        {"a.png": 1},
        InvalidAiCOCO,
        "index",
    ),
    "wrong type of category_ids": (
        {"images": [entry("a.png", category_ids="c1")]},
        {"a.png": 1},
        InvalidAiCOCO,
        "category_ids",
    ),
    "duplicate ids": (
        {"images": [entry("a.png"), entry("a.png")]},
        {"a.png": 1},
        InvalidAiCOCO,
        "ids must be unique",
    ),
    "data not an object": ({"data": [entry("a.png")]}, {"a.png": 1}, InvalidAiCOCO, "'data'"),
    "data without images": ({"data": {"meta": {}}}, {"a.png": 1}, InvalidAiCOCO, "no 'images'"),
    "key in data and field": (
        {"data": {"images": [entry("a.png")], "meta": {}}, "meta": {}},
        {"a.png": 1},
        InvalidInput,
        "'meta' is sent both",
    ),
    "entry without file": (
        {"images": [entry("a.png"), entry("b.png", 1)]},
        {"a.png": 1},
        FileMismatch,
        "no file was uploaded for the images entries naming 'b.png'",
    ),
    "file without entry": (
        {"images": [entry("a.png")]},
        {"a.png": 1, "b.png": 1},
        FileMismatch,
        r"no images entry names the uploaded file\(s\) 'b.png'",
    ),
    "suffix is not a match": (
        {"images": [entry("1.dcm")]},
        {"11.dcm": 1},
        FileMismatch,
        "file names must match exactly",
    ),
    "empty file": ({"images": [entry("a.png")]}, {"a.png": 0}, UnreadableFile, "empty"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_requests(case: Case) -> None:
    fields, files, error, message = case
    with pytest.raises(error, match=message):
        build(fields, files)


def test_validation_errors_list_every_problem() -> None:
    images = [{"id": "x", "file_name": "a.png", "index": "one"}, {"file_name": "a.png"}]
    with pytest.raises(InvalidAiCOCO) as caught:
        build({"images": images}, {"a.png": 1})
    locations = [error["location"] for error in caught.value.details["errors"]]
    assert locations == ["images[0].index", "images[1].id", "images[1].index"]
    assert "and 2 more" in caught.value.message


class _Connection:
    """An ASGI ``receive`` whose ``http.disconnect`` comes when the test says so."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def receive(self) -> Message:
        await self.closed.wait()
        return {"type": "http.disconnect"}


@pytest.mark.anyio
async def test_work_that_finishes_returns_its_result() -> None:
    connection = _Connection()

    async def work() -> str:
        return "answer"

    assert await unless_disconnected(connection.receive, work()) == "answer"


@pytest.mark.anyio
async def test_work_that_fails_raises_its_error() -> None:
    async def work() -> str:
        raise UnreadableFile("broken")

    with pytest.raises(UnreadableFile, match="broken"):
        await unless_disconnected(_Connection().receive, work())


@pytest.mark.anyio
async def test_a_client_that_hangs_up_cancels_the_work() -> None:
    connection = _Connection()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def work() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    async def hang_up() -> None:
        await started.wait()
        connection.closed.set()

    hanging_up = asyncio.ensure_future(hang_up())
    with pytest.raises(ClientDisconnect):
        await unless_disconnected(connection.receive, work())
    await hanging_up
    assert cancelled.is_set()
