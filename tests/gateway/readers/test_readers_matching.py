"""Pairing files with entries by exact name, and telling file types apart by content."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gateway.errors import (
    FileMismatch,
    InconsistentSeries,
    InvalidInput,
    UnreadableFile,
    UnsupportedFileType,
)
from gateway.readers import ReadLimits, read_images
from gateway.readers.detect import FileKind, detect
from tests.factories import RequestFiles, image_entry, pydicom_file

LIMITS = ReadLimits(max_pixels_per_image=100_000_000, max_total_voxels=1_500_000_000)


def png(value: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (4, 4), value).save(buffer, format="PNG")
    return buffer.getvalue()


def test_names_match_exactly_not_by_suffix(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path)
    files.add("11.png", png())
    with pytest.raises(FileMismatch) as caught:
        read_images([image_entry("1.png", 0)], files.uploads, LIMITS)
    assert caught.value.details == {"missing_files": ["1.png"], "unmatched_files": ["11.png"]}
    assert "'1.png'" in caught.value.message and "'11.png'" in caught.value.message
    assert caught.value.status == 422


def test_file_without_an_entry(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path)
    files.add("a.png", png())
    files.add("b.png", png())
    with pytest.raises(FileMismatch, match=r"no images entry names the uploaded file\(s\) 'b.png'"):
        read_images([image_entry("a.png", 0)], files.uploads, LIMITS)


def test_entry_without_a_file(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path)
    files.add("a.png", png())
    entries = [image_entry("a.png", 0), image_entry("c.png", 1)]
    with pytest.raises(FileMismatch, match="no file was uploaded for the images entries naming"):
        read_images(entries, files.uploads, LIMITS)


def test_names_are_case_sensitive(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path)
    files.add("Scan.PNG", png())
    with pytest.raises(FileMismatch):
        read_images([image_entry("scan.png", 0)], files.uploads, LIMITS)


def test_duplicate_indices(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path)
    files.add("a.png", png())
    files.add("b.png", png())
    entries = [image_entry("a.png", 3), image_entry("b.png", 3)]
    with pytest.raises(InvalidInput, match="repeat index 3") as caught:
        read_images(entries, files.uploads, LIMITS)
    assert caught.value.code == "invalid_input"


def test_no_entries(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no images entries"):
        read_images([], {}, LIMITS)


def test_several_entries_for_one_of_several_files(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path)
    files.add("a.png", png())
    files.add("b.png", png())
    entries = [image_entry("a.png", 0), image_entry("a.png", 1), image_entry("b.png", 2)]
    with pytest.raises(InvalidInput, match=r"2 images entries name 'a\.png'"):
        read_images(entries, files.uploads, LIMITS)


def test_one_png_with_two_entries(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path)
    files.add("a.png", png())
    with pytest.raises(InvalidInput, match=r"holds 1 slice\(s\) but 2 images entries"):
        read_images([image_entry("a.png", 0), image_entry("a.png", 1)], files.uploads, LIMITS)


def test_dicom_and_png_in_one_request(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path)
    files.add("a.dcm", pydicom_file("CT_small.dcm"))
    files.add("b.png", png())
    with pytest.raises(InconsistentSeries, match=r"one kind; got DICOM \('a.dcm'\), PNG"):
        read_images(files.entries(), files.uploads, LIMITS)


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (png(), FileKind.PNG),
        (pydicom_file("CT_small.dcm").read_bytes(), FileKind.DICOM),
        (gzip.compress(png()), None),
    ],
)
def test_detection_ignores_names(tmp_path: Path, content: bytes, kind: FileKind | None) -> None:
    files = RequestFiles(tmp_path)
    upload = files.add("misleading.nii.gz", content)
    if kind is None:
        with pytest.raises(UnsupportedFileType):
            detect(upload)
    else:
        assert detect(upload) is kind


def test_text_file_is_unsupported(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path)
    files.add("notes.dcm", b"patient notes, not an image\n" * 20)
    with pytest.raises(UnsupportedFileType, match=r"'notes\.dcm' is not a file type") as caught:
        read_images(files.entries(), files.uploads, LIMITS)
    assert caught.value.status == 415
    assert caught.value.code == "unsupported_file_type"


def test_random_bytes_named_dcm_are_unsupported(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path)
    files.add("noise.dcm", np.random.default_rng(0).bytes(4096))
    with pytest.raises(UnsupportedFileType):
        read_images(files.entries(), files.uploads, LIMITS)


def test_empty_file(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path)
    files.add("empty.png", b"")
    with pytest.raises(UnreadableFile, match=r"'empty.png' is empty \(0 bytes\)") as caught:
        read_images(files.entries(), files.uploads, LIMITS)
    assert caught.value.status == 422


def test_corrupt_gzip_header(tmp_path: Path) -> None:
    files = RequestFiles(tmp_path)
    files.add("v.nii.gz", b"\x1f\x8b" + bytes(30))
    with pytest.raises(UnreadableFile, match="corrupt gzip stream"):
        read_images(files.entries(), files.uploads, LIMITS)
