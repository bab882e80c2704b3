"""The DICOMweb client's contract without a PACS: multipart bodies, error mapping, STOW answers.

A real Orthanc is in tests/e2e/test_pacs_round_trip.py; here httpx's MockTransport plays the
PACS, to reach the failures a healthy Orthanc never shows.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dicomweb.client import DicomwebClient
from gateway.dicomweb.multipart import boundary_of, related_body, save_parts
from gateway.errors import (
    PacsError,
    PacsTimeout,
    PacsUnavailable,
    PayloadTooLarge,
    StudyNotFound,
    TooManyFiles,
)
from gateway.settings import Settings

pytestmark = pytest.mark.anyio

PACS = "http://pacs.test/dicom-web"


async def chunked(body: bytes, step: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), step):
        yield body[start : start + step]


@settings(max_examples=60, deadline=None)
@given(
    parts=st.lists(st.binary(max_size=3000), min_size=1, max_size=6),
    step=st.integers(min_value=1, max_value=5000),
)
async def test_parts_survive_any_chunking(parts: list[bytes], step: int) -> None:
    """Part bodies come back byte for byte whatever the chunk boundaries, a body that looks like
    a delimiter's start (CR LF - -) included."""
    parts = [part.replace(b"\r\n--", b"\r\n-") for part in parts] + [b"\r\n-", b"\r"]
    body, content_type = related_body(parts)
    with tempfile.TemporaryDirectory() as folder:
        paths = await save_parts(
            chunked(body, step),
            boundary_of(content_type),
            Path(folder),
            max_bytes=10**7,
            max_parts=10,
        )
        assert [path.read_bytes() for path in paths] == parts


async def test_a_part_without_headers_and_a_preamble(tmp_path: Path) -> None:
    body = b"ignored preamble\r\n--b\r\n\r\nfirst\r\n--b\r\nX-A: 1\r\n\r\nsecond\r\n--b--\r\n"
    paths = await save_parts(chunked(body, 3), b"b", tmp_path, max_bytes=1000, max_parts=5)
    assert [path.read_bytes() for path in paths] == [b"first", b"second"]


async def test_limits_and_truncation(tmp_path: Path) -> None:
    body, content_type = related_body([b"x" * 100] * 3)
    boundary = boundary_of(content_type)
    with pytest.raises(PayloadTooLarge):
        await save_parts(chunked(body, 50), boundary, tmp_path, max_bytes=200, max_parts=5)
    with pytest.raises(TooManyFiles):
        await save_parts(chunked(body, 50), boundary, tmp_path, max_bytes=10**6, max_parts=2)
    with pytest.raises(PacsError, match="cut short"):
        await save_parts(chunked(body[:-20], 50), boundary, tmp_path, max_bytes=10**6, max_parts=5)
    for bad in ["application/dicom", "multipart/related; type=application/dicom"]:
        with pytest.raises(PacsError):
            boundary_of(bad)
    assert boundary_of('multipart/related; type="application/dicom"; boundary="a b"') == b"a b"


def client_for(handler: Callable[[httpx.Request], httpx.Response], **extra: str) -> DicomwebClient:
    return DicomwebClient(
        Settings(dicomweb_url=PACS, **extra),  # type: ignore[arg-type]
        transport=httpx.MockTransport(handler),
    )


async def test_failures_become_the_pacs_errors(tmp_path: Path) -> None:
    def answer(status: int, text: str = "") -> Callable[[httpx.Request], httpx.Response]:
        return lambda request: httpx.Response(status, text=text)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    cases = [
        (answer(404), StudyNotFound, "has no study 1.2"),
        (answer(200, "[]"), StudyNotFound, "has no study 1.2"),
        (answer(401), PacsError, "refused the credentials"),
        (answer(500, "database locked"), PacsError, "500 .*database locked"),
        (answer(200, '{"not": "a list"}'), PacsError, "not a list"),
        (refuse, PacsUnavailable, "cannot be reached .*connection refused"),
        (stall, PacsTimeout, "DICOMWEB_TIMEOUT_S"),
    ]
    for handler, error, message in cases:
        client = client_for(handler)
        with pytest.raises(error, match=message) as raised:
            await client.series("1.2")
        assert PACS in str(raised.value)
        await client.close()


async def test_credentials_are_sent() -> None:
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization", ""))
        return httpx.Response(200, json=[{"0020000E": {"vr": "UI", "Value": ["1.2.3"]}}])

    for extra, expected in [
        ({"dicomweb_username": "u", "dicomweb_password": "p"}, "Basic dTpw"),
        ({"dicomweb_token": "t0k"}, "Bearer t0k"),
        ({}, ""),
    ]:
        client = client_for(record, **extra)
        await client.series("1.2")
        await client.close()
        assert seen.pop() == expected
    assert "t0k" not in repr(Settings(dicomweb_token="t0k", dicomweb_password="pw"))
    assert "pw" not in repr(Settings(dicomweb_password="pw"))


async def test_stow_answers() -> None:
    stored = {
        "00081199": {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.66.4"]},
                    "00081155": {"vr": "UI", "Value": ["1.2.3.4"]},
                }
            ],
        }
    }
    failed = {"00081198": {"vr": "SQ", "Value": [{"00081197": {"vr": "US", "Value": [272]}}]}}
    bodies: list[bytes] = []

    def accept(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        assert request.headers["content-type"].startswith(
            'multipart/related; type="application/dicom"'
        )
        return httpx.Response(200, content=json.dumps(stored).encode())

    client = client_for(accept)
    (instance,) = await client.store("1.2", [b"DICM-bytes"])
    assert (instance.sop_instance_uid, instance.sop_class_uid) == (
        "1.2.3.4",
        "1.2.840.10008.5.1.4.1.1.66.4",
    )
    assert b"DICM-bytes" in bodies[0]
    await client.close()
    client = client_for(lambda request: httpx.Response(409, content=json.dumps(failed).encode()))
    with pytest.raises(PacsError, match="409"):
        await client.store("1.2", [b"x"])
    await client.close()
    client = client_for(lambda request: httpx.Response(202, content=json.dumps(failed).encode()))
    with pytest.raises(PacsError, match=r"refused 1 of 1 .*272"):
        await client.store("1.2", [b"x"])
    await client.close()
