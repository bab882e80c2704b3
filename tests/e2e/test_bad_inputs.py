"""The bad-input matrix, over real HTTP against a real Triton.

Every case gets its documented status and error code (docs: /docs, notes in the README), the
upload folder is empty once the answer arrives, and the gateway keeps serving: a good request
succeeds after each case.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.factories import chest_png as png
from triton_local import LocalTriton

pytestmark = pytest.mark.e2e

StartGateway = Callable[[str, Mapping[str, str]], tuple[str, Path]]
"""The ``start_gateway`` fixture of tests/e2e/conftest.py."""
StartTriton = Callable[..., LocalTriton]
"""The ``start_triton`` fixture of tests/conftest.py."""

MAX_FILES = 8
MAX_REQUEST_BYTES = 8 * 1024 * 1024
SETTINGS = {"MAX_FILES": str(MAX_FILES), "MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES)}
BOUNDARY = "matrixboundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def dicom(name: str = "CT_small.dcm") -> bytes:
    return Path(str(get_testdata_file(name))).read_bytes()


def nifti_gz() -> bytes:
    volume = np.arange(64 * 64 * 8, dtype=np.int16).reshape(64, 64, 8)
    image = nib.Nifti1Image(volume, np.eye(4))
    data: bytes = image.to_bytes()
    return gzip.compress(data)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares a huge image; its data is a few bytes (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


def entry(file_name: str, index: int | str = 0, **fields: Any) -> dict[str, Any]:
    return {"id": f"id-{file_name}-{index}", "file_name": file_name, "index": index, **fields}


def raw_part(name: str, content: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    )


def raw_body(*parts: bytes, closed: bool = True) -> bytes:
    return b"".join(parts) + (f"--{BOUNDARY}--\r\n".encode() if closed else b"")


@dataclass
class Case:
    """One bad request; ``request`` returns httpx keyword arguments for it."""

    status: int
    code: str
    request: Callable[[], dict[str, Any]]
    path: str = "/invocations"
    method: str = "POST"
    expect_headers: dict[str, str] = field(default_factory=dict)


def flavor(
    files: list[tuple[str, bytes]], images: Any, **fields: Any
) -> Callable[[], dict[str, Any]]:
    """A FLaVor-style request: repeated ``files`` parts, ``images`` (JSON unless already text)."""

    def build() -> dict[str, Any]:
        data = {"images": images if isinstance(images, str) else json.dumps(images)}
        data.update(
            {
                key: value if isinstance(value, str) else json.dumps(value)
                for key, value in fields.items()
            }
        )
        return {"files": [("files", (name, content)) for name, content in files], "data": data}

    return build


def raw(body: Callable[[], bytes], content_type: str = MULTIPART) -> Callable[[], dict[str, Any]]:
    return lambda: {"content": body(), "headers": {"Content-Type": content_type}}


def _in_series_of(data: bytes, other: bytes) -> bytes:
    """``data`` moved into ``other``'s series: one series of two sizes, not two series."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.SeriesInstanceUID = pydicom.dcmread(io.BytesIO(other)).SeriesInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def _truncated(data: bytes, fraction: float = 0.6) -> bytes:
    return data[: int(len(data) * fraction)]


CASES: dict[str, Case] = {
    # 400: the body cannot be parsed.
    "multipart without boundary": Case(
        400, "malformed_multipart", raw(lambda: b"x", "multipart/form-data")
    ),
    "multipart cut short": Case(
        400,
        "malformed_multipart",
        raw(lambda: raw_body(raw_part("files", png(), "a.png"), closed=False)[:-10]),
    ),
    "garbage body": Case(400, "malformed_multipart", raw(lambda: b"\x00\x01 not multipart \xff")),
    "part without a name": Case(
        400,
        "malformed_multipart",
        raw(
            lambda: raw_body(
                f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n".encode()
            )
        ),
    ),
    "images is malformed JSON": Case(
        400,
        "malformed_json",
        flavor([("a.png", png())], '[{"id": "x", "file_name": "a.png",'),
    ),
    "meta is malformed JSON": Case(
        400, "malformed_json", flavor([("a.png", png())], [entry("a.png")], meta="{task: 1}")
    ),
    "data part is malformed JSON": Case(
        400,
        "malformed_json",
        raw(
            lambda: raw_body(
                raw_part("files", png(), "a.png"), raw_part("data", b"{images:", "d.json")
            )
        ),
    ),
    "images nested 100,000 deep": Case(
        400, "json_too_deep", flavor([("a.png", png())], "[" * 100_000 + "]" * 100_000)
    ),
    "meta nested 100,000 deep": Case(
        400,
        "json_too_deep",
        flavor([("a.png", png())], [entry("a.png")], meta='{"a":' * 100_000 + "1" + "}" * 100_000),
    ),
    "data nested 100,000 deep": Case(
        400,
        "json_too_deep",
        raw(
            lambda: raw_body(
                raw_part("files", png(), "a.png"),
                raw_part("data", b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
            )
        ),
    ),
    "an integer of 5,000 digits": Case(
        400,
        "json_number_too_large",
        flavor(
            [("a.png", png())], json.dumps([entry("a.png")])[:-2] + ', "n": ' + "9" * 5000 + "}]"
        ),
    ),
    "a lone surrogate in a file_name": Case(
        400,
        "invalid_json_text",
        flavor([("a.png", png())], '[{"id": "x", "file_name": "a\\ud800.png", "index": 0}]'),
    ),
    # 404 / 405
    "unknown model": Case(
        404,
        "model_not_found",
        flavor([("a.png", png())], [entry("a.png")]),
        path="/models/nope/invocations",
    ),
    "unknown route": Case(404, "not_found", lambda: {}, path="/invocation", method="GET"),
    "wrong method": Case(
        405, "method_not_allowed", lambda: {}, method="GET", expect_headers={"allow": "POST"}
    ),
    # 413: limits.
    "too many files": Case(
        413,
        "too_many_files",
        flavor(
            [(f"{i}.png", png()) for i in range(MAX_FILES + 1)],
            [entry(f"{i}.png", i) for i in range(MAX_FILES + 1)],
        ),
    ),
    "body too large": Case(
        413,
        "payload_too_large",
        flavor([("big.png", b"\x89PNG" + b"\x00" * MAX_REQUEST_BYTES)], [entry("big.png")]),
    ),
    "huge declared dimensions": Case(
        413,
        "image_too_large",
        flavor([("bomb.png", png_claiming(60000, 60000))], [entry("bomb.png")]),
    ),
    # 415: media and file types.
    "not multipart": Case(
        415,
        "unsupported_media_type",
        lambda: {"json": {"images": [entry("a.png")]}},
    ),
    "url-encoded form": Case(
        415, "unsupported_media_type", lambda: {"data": {"images": json.dumps([entry("a.png")])}}
    ),
    "text file": Case(
        415,
        "unsupported_file_type",
        flavor([("notes.txt", b"just some notes\n")], [entry("notes.txt")]),
    ),
    "pdf named .png": Case(
        415,
        "unsupported_file_type",
        flavor([("scan.png", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + b"0" * 2000)], [entry("scan.png")]),
    ),
    "truncated DICOM prefix named .dcm": Case(
        415, "unsupported_file_type", flavor([("ct.dcm", dicom()[:100])], [entry("ct.dcm")])
    ),
    # 422: invalid entries.
    "no images field": Case(
        422,
        "invalid_aicoco",
        lambda: {"files": [("files", ("a.png", png()))], "data": {"meta": "{}"}},
    ),
    "images is an object": Case(422, "invalid_aicoco", flavor([("a.png", png())], entry("a.png"))),
    "images is empty": Case(422, "invalid_aicoco", flavor([("a.png", png())], [])),
    "entry without id": Case(
        422,
        "invalid_aicoco",
        flavor([("a.png", png())], [{"file_name": "a.png", "index": 0}]),
    ),
    "entry without file_name": Case(
        422, "invalid_aicoco", flavor([("a.png", png())], [{"id": "x", "index": 0}])
    ),
    "entry without index": Case(
        422, "invalid_aicoco", flavor([("a.png", png())], [{"id": "x", "file_name": "a.png"}])
    ),
    "index is not a number": Case(
        422, "invalid_aicoco", flavor([("a.png", png())], [entry("a.png", "first")])
    ),
    "category_ids of the wrong type": Case(
        422, "invalid_aicoco", flavor([("a.png", png())], [entry("a.png", category_ids=7)])
    ),
    "duplicate entry ids": Case(
        422,
        "invalid_aicoco",
        flavor(
            [("a.png", png()), ("b.png", png())],
            [entry("a.png") | {"id": "same"}, entry("b.png", 1) | {"id": "same"}],
        ),
    ),
    "data is not an object": Case(
        422,
        "invalid_aicoco",
        lambda: {
            "files": [("files", ("a.png", png()))],
            "data": {"data": json.dumps([entry("a.png")])},
        },
    ),
    # 422: files and entries do not pair.
    "mismatched names": Case(422, "file_mismatch", flavor([("a.png", png())], [entry("b.png")])),
    "one entry for two files": Case(
        422,
        "file_mismatch",
        flavor([("a.png", png()), ("b.png", png())], [entry("a.png")]),
    ),
    "entry without its file": Case(
        422, "file_mismatch", flavor([("a.png", png())], [entry("a.png"), entry("b.png", 1)])
    ),
    "suffix is not a match": Case(
        422, "file_mismatch", flavor([("11.dcm", dicom())], [entry("1.dcm")])
    ),
    "duplicate file names": Case(
        422,
        "file_mismatch",
        flavor([("a.png", png()), ("a.png", png())], [entry("a.png"), entry("a.png", 1)]),
    ),
    "no files at all": Case(
        422,
        "file_mismatch",
        raw(lambda: raw_body(raw_part("images", json.dumps([entry("a.png")]).encode()))),
    ),
    # 422: names that are paths.
    "parent directory name": Case(
        422, "invalid_input", flavor([("../x.png", png())], [entry("../x.png")])
    ),
    "absolute path name": Case(
        422, "invalid_input", flavor([("/etc/passwd", png())], [entry("/etc/passwd")])
    ),
    "name with a folder": Case(
        422, "invalid_input", flavor([("a/b.png", png())], [entry("a/b.png")])
    ),
    "name with a backslash": Case(
        422,
        "invalid_input",
        raw(
            lambda: raw_body(
                raw_part("images", json.dumps([entry("a\\b.png")]).encode()),
                raw_part("files", png(), "a\\\\b.png"),
            )
        ),
    ),
    "file part without filename": Case(
        422,
        "invalid_input",
        raw(
            lambda: raw_body(
                raw_part("images", json.dumps([entry("a.png")]).encode()),
                raw_part("files", png()),
            )
        ),
    ),
    "a field sent twice": Case(
        422,
        "invalid_input",
        raw(
            lambda: raw_body(
                raw_part("images", json.dumps([entry("a.png")]).encode()),
                raw_part("images", json.dumps([entry("a.png")]).encode()),
                raw_part("files", png(), "a.png"),
            )
        ),
    ),
    # 422: files that do not make one image stack.
    "DICOM and PNG in one request": Case(
        422,
        "inconsistent_series",
        flavor([("ct.dcm", dicom()), ("a.png", png())], [entry("ct.dcm"), entry("a.png", 1)]),
    ),
    "DICOM series of mixed sizes": Case(
        422,
        "inconsistent_series",
        flavor(
            [("ct.dcm", dicom()), ("mr.dcm", _in_series_of(dicom("MR_small.dcm"), dicom()))],
            [entry("ct.dcm"), entry("mr.dcm", 1)],
        ),
    ),
    # 422: files that cannot be read.
    "empty file": Case(422, "unreadable_file", flavor([("a.png", b"")], [entry("a.png")])),
    "truncated DICOM": Case(
        422, "unreadable_file", flavor([("ct.dcm", _truncated(dicom()))], [entry("ct.dcm")])
    ),
    "truncated PNG": Case(
        422, "unreadable_file", flavor([("a.png", _truncated(png()))], [entry("a.png")])
    ),
    "truncated NIfTI": Case(
        422, "unreadable_file", flavor([("v.nii.gz", _truncated(nifti_gz()))], [entry("v.nii.gz")])
    ),
}

ACCEPTED_AS_SENT: dict[str, Callable[[], dict[str, Any]]] = {
    # Liberal where it is safe: files are recognised by content, not by extension.
    "PNG named .dcm": flavor([("scan.dcm", png())], [entry("scan.dcm")]),
    "DICOM without extension": flavor([("IM0001", dicom())], [entry("IM0001")]),
    "string index": flavor([("a.png", png())], [entry("a.png", "3")]),
    "unknown fields": flavor(
        [("a.png", png())], [entry("a.png")], threshold=0.3, note={"text": "x"}
    ),
}


@pytest.fixture(scope="module")
def gateway(triton: LocalTriton, start_gateway: StartGateway) -> tuple[str, Path]:
    return start_gateway(triton.grpc_url, SETTINGS)


@pytest.fixture(scope="module")
def http(gateway: tuple[str, Path]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway[0], timeout=120) as client:
        yield client


def good_request(http: httpx.Client) -> httpx.Response:
    return http.post("/invocations", **flavor([("ok.png", png())], [entry("ok.png")])())


def leftovers(upload_dir: Path) -> list[str]:
    return sorted(path.name for path in upload_dir.iterdir())


def test_the_matrix_is_large_enough() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input(http: httpx.Client, gateway: tuple[str, Path], case: Case) -> None:
    request = case.request()
    request["headers"] = {**request.get("headers", {}), "X-Request-ID": "matrix"}
    response = http.request(case.method, case.path, **request)
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == case.code, error
    assert error["request_id"] == "matrix"
    assert error["message"]
    assert "Traceback" not in response.text
    for name, value in case.expect_headers.items():
        assert response.headers[name] == value
    assert leftovers(gateway[1]) == []
    assert good_request(http).status_code == 200


@pytest.mark.parametrize("request_kwargs", ACCEPTED_AS_SENT.values(), ids=ACCEPTED_AS_SENT.keys())
def test_liberal_but_safe(
    http: httpx.Client, gateway: tuple[str, Path], request_kwargs: Callable[[], dict[str, Any]]
) -> None:
    response = http.post("/invocations", **request_kwargs())
    assert response.status_code == 200, response.text
    assert leftovers(gateway[1]) == []


def test_triton_stopped_mid_run(
    start_triton: StartTriton, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """A private Triton serving one model: stopped between requests, the gateway says 503."""
    repository = tmp_path / "repository"
    repository.mkdir()
    source = Path(__file__).resolve().parents[2] / "model_repository" / "lesion_classifier"
    shutil.copytree(source, repository / "lesion_classifier")
    private = start_triton(repository)
    url, upload_dir = start_gateway(private.grpc_url, {})
    with httpx.Client(base_url=url, timeout=120) as http:
        assert good_request(http).status_code == 200
        private.stop()
        response = good_request(http)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "triton_unavailable"
        assert int(response.headers["retry-after"]) >= 1
        assert http.get("/health/ready").status_code == 503
        assert http.get("/ping").status_code == 204
    assert leftovers(upload_dir) == []
