from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest

from gateway.errors import (
    ApiError,
    FileMismatch,
    InvalidInput,
    MalformedMultipart,
    MalformedRequest,
    PayloadTooLarge,
    TooManyFiles,
    UnsupportedMediaType,
)
from gateway.uploads import (
    FLUSH_BYTES,
    Form,
    FormLimits,
    check_content_length,
    check_content_type,
    parse_form,
)

LIMITS = FormLimits(max_request_bytes=8 * 1024 * 1024, max_files=4)

pytestmark = pytest.mark.anyio


def encode(
    files: Sequence[tuple[str, bytes]] = (), data: dict[str, str] | None = None
) -> tuple[bytes, str]:
    """A body exactly as a client library (httpx) builds it."""
    request = httpx.Request(
        "POST",
        "http://gateway/invocations",
        files=[("files", (name, content)) for name, content in files],
        data=data or {},
    )
    return request.read(), request.headers["content-type"]


def raw_body(*parts: str, boundary: str = "b0undary") -> tuple[bytes, str]:
    body = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts) + f"--{boundary}--\r\n"
    return body.encode(), f"multipart/form-data; boundary={boundary}"


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def count_entries(folder: Path) -> int:
    return len(list(folder.iterdir()))


async def parse(
    body: bytes,
    content_type: str,
    folder: Path,
    limits: FormLimits = LIMITS,
    chunk_size: int = 65536,
) -> Form:
    boundary = check_content_type(content_type)
    return await parse_form(_chunks(body, chunk_size), boundary, folder, limits)


@pytest.mark.parametrize("chunk_size", [1, 7, 65536])
async def test_files_and_fields_whatever_the_chunking(tmp_path: Path, chunk_size: int) -> None:
    body, content_type = encode(
        files=[("a.png", b"\x89PNG first"), ("brain.nii.gz", b"second")],
        data={"images": '[{"id": "x"}]', "meta": "{}"},
    )
    form = await parse(body, content_type, tmp_path, chunk_size=chunk_size)
    assert form.fields == {"images": '[{"id": "x"}]', "meta": "{}"}
    assert list(form.uploads) == ["a.png", "brain.nii.gz"]
    first, second = form.uploads.values()
    assert first.path.read_bytes() == b"\x89PNG first"
    assert first.size == len(b"\x89PNG first")
    assert second.path.read_bytes() == b"second"
    assert form.upload_bytes == len(b"\x89PNG first") + len(b"second")


async def test_files_are_stored_under_numbered_names_keeping_the_extension(tmp_path: Path) -> None:
    body, content_type = encode(files=[("scan 1.DCM", b"x"), ("vol.nii.gz", b"y"), ("noext", b"z")])
    form = await parse(body, content_type, tmp_path)
    assert [upload.path.name for upload in form.uploads.values()] == [
        "00001.dcm",
        "00002.nii.gz",
        "00003",
    ]
    assert all(upload.path.parent == tmp_path for upload in form.uploads.values())


async def test_large_files_stream_to_disk_intact(tmp_path: Path) -> None:
    content = bytes(range(256)) * (3 * FLUSH_BYTES // 256 + 17)
    body, content_type = encode(files=[("big.dcm", content), ("small.dcm", b"s")])
    form = await parse(body, content_type, tmp_path, chunk_size=50_000)
    assert form.uploads["big.dcm"].path.read_bytes() == content
    assert form.uploads["small.dcm"].path.read_bytes() == b"s"


async def test_an_empty_file_still_has_its_file(tmp_path: Path) -> None:
    body, content_type = encode(files=[("empty.png", b"")])
    upload = (await parse(body, content_type, tmp_path)).uploads["empty.png"]
    assert upload.size == 0
    assert upload.path.read_bytes() == b""


async def test_utf8_file_names_are_kept_exactly(tmp_path: Path) -> None:
    name = "胸部 X 光 (1).png"
    body, content_type = encode(files=[(name, b"x")])
    assert list((await parse(body, content_type, tmp_path)).uploads) == [name]


async def test_a_json_file_part_is_a_field(tmp_path: Path) -> None:
    body, content_type = raw_body(
        'Content-Disposition: form-data; name="data"; filename="data.json"\r\n'
        "Content-Type: application/json\r\n\r\n"
        '{"images": []}'
    )
    assert (await parse(body, content_type, tmp_path)).fields == {"data": '{"images": []}'}


@pytest.mark.parametrize(
    "name",
    ["../x.dcm", "/etc/passwd", "a/b.png", "a\\\\b.png", "C:\\\\scans\\\\x.dcm", ".", ".."],
)
async def test_path_like_file_names_are_refused(tmp_path: Path, name: str) -> None:
    body, content_type = raw_body(
        f'Content-Disposition: form-data; name="files"; filename="{name}"\r\n\r\nx'
    )
    with pytest.raises(InvalidInput, match="not a plain file name"):
        await parse(body, content_type, tmp_path)


@pytest.mark.parametrize("name", ["a\x00b.png", "a\x01b.png", "a\x7fb.png"])
async def test_control_characters_in_file_names_are_refused(tmp_path: Path, name: str) -> None:
    body, content_type = raw_body(
        f'Content-Disposition: form-data; name="files"; filename="{name}"\r\n\r\nx'
    )
    with pytest.raises(InvalidInput, match="not a plain file name"):
        await parse(body, content_type, tmp_path)


async def test_duplicate_file_names_are_refused(tmp_path: Path) -> None:
    body, content_type = encode(files=[("a.png", b"1"), ("a.png", b"2")])
    with pytest.raises(FileMismatch, match=re.escape("both named 'a.png'")):
        await parse(body, content_type, tmp_path)


async def test_a_file_part_without_filename_is_refused(tmp_path: Path) -> None:
    body, content_type = raw_body('Content-Disposition: form-data; name="files"\r\n\r\nx')
    with pytest.raises(InvalidInput, match="no filename"):
        await parse(body, content_type, tmp_path)


async def test_a_field_sent_twice_is_refused(tmp_path: Path) -> None:
    body, content_type = raw_body(
        'Content-Disposition: form-data; name="images"\r\n\r\n[]',
        'Content-Disposition: form-data; name="images"\r\n\r\n[]',
    )
    with pytest.raises(InvalidInput, match="sent twice"):
        await parse(body, content_type, tmp_path)


async def test_too_many_files_stop_at_the_first_extra_part(tmp_path: Path) -> None:
    body, content_type = encode(files=[(f"{i}.png", b"x") for i in range(5)])
    with pytest.raises(TooManyFiles) as caught:
        await parse(body, content_type, tmp_path)
    assert caught.value.details == {"limit": 4}
    assert count_entries(tmp_path) <= 4


async def test_the_body_size_is_counted_as_it_arrives(tmp_path: Path) -> None:
    body, content_type = encode(files=[("big.dcm", b"x" * 5000)])
    limits = FormLimits(max_request_bytes=4096, max_files=4)
    with pytest.raises(PayloadTooLarge, match="exceeds 4096 bytes"):
        await parse(body, content_type, tmp_path, limits=limits, chunk_size=1000)


async def test_fields_are_bounded(tmp_path: Path) -> None:
    body, content_type = encode(files=[("a.png", b"x")], data={"images": "[" + "0," * 600 + "0]"})
    limits = FormLimits(max_request_bytes=1 << 20, max_files=4, max_field_bytes=1000)
    with pytest.raises(PayloadTooLarge, match="more than 1000 bytes"):
        await parse(body, content_type, tmp_path, limits=limits)


async def test_the_number_of_fields_is_bounded(tmp_path: Path) -> None:
    body, content_type = encode(files=[("a.png", b"x")], data={f"f{i}": "1" for i in range(4)})
    limits = FormLimits(max_request_bytes=1 << 20, max_files=4, max_fields=3)
    with pytest.raises(PayloadTooLarge, match="more than 3 fields"):
        await parse(body, content_type, tmp_path, limits=limits)


async def test_a_field_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    body, content_type = raw_body('Content-Disposition: form-data; name="images"\r\n\r\n')
    body = body.replace(b"\r\n\r\n\r\n", b"\r\n\r\n\xff\xfe\r\n")
    with pytest.raises(InvalidInput, match="not UTF-8"):
        await parse(body, content_type, tmp_path)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"this is not multipart at all",
        b'--b0undary\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\nx',
        b"--b0undary\r\nContent-Type: text/plain\r\n\r\nx\r\n--b0undary--\r\n",
        b'--b0undary\r\nContent-Disposition: attachment; name="x"\r\n\r\nx\r\n--b0undary--\r\n',
        b"--b0undary\r\nBroken header line\r\n\r\nx\r\n--b0undary--\r\n",
    ],
    ids=["empty", "garbage", "truncated", "no-disposition", "not-form-data", "bad-header"],
)
async def test_malformed_multipart(tmp_path: Path, body: bytes) -> None:
    with pytest.raises(MalformedMultipart):
        await parse(body, "multipart/form-data; boundary=b0undary", tmp_path)


@pytest.mark.parametrize(
    ("content_type", "error"),
    [
        (None, UnsupportedMediaType),
        ("application/json", UnsupportedMediaType),
        ("application/x-www-form-urlencoded", UnsupportedMediaType),
        ("multipart/form-data", MalformedMultipart),
        ("multipart/form-data; boundary=" + "x" * 300, None),
    ],
)
async def test_content_type(
    tmp_path: Path, content_type: str | None, error: type[ApiError] | None
) -> None:
    if error is not None:
        with pytest.raises(error):
            check_content_type(content_type)
        return
    boundary = check_content_type(content_type)
    with pytest.raises(MalformedMultipart, match="boundary"):
        await parse_form(_chunks(b"", 1), boundary, tmp_path, LIMITS)


def test_content_length_is_checked_before_reading() -> None:
    check_content_length(None, 10)
    check_content_length("10", 10)
    with pytest.raises(PayloadTooLarge) as caught:
        check_content_length("11", 10)
    assert caught.value.details == {"limit": 10, "size": 11}
    with pytest.raises(MalformedRequest):
        check_content_length("ten", 10)
