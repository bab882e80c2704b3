"""Mutation fuzzing of the readers: real files, damaged the ways transfers and writers damage
them, must each give a readable stack or a documented 4xx; never a 500, never a hang.

Seeds are real files: pydicom's test images (CT, MR, RLE, JPEG-LS, JPEG 2000, JPEG, a
multi-frame dose), nibabel's NIfTI-1 and NIfTI-2 samples, scikit-image's camera as PNG and
JPEG, and a generated CT series. Mutations:

- every top-level DICOM attribute deleted in turn (then re-encoded);
- numeric header values replaced by NaN, huge, negative or zero values (DICOM attributes and
  NIfTI header fields);
- truncation at any offset; bit flips anywhere, in the header, and inside compressed streams;
- a text-mode transfer (LF -> CRLF) of binary files.

``pytest`` runs a fixed, bounded selection (``test_readers_fuzz.py``); ``make fuzz`` runs
``python -m tests.gateway.readers.fuzzing --cases N`` and prints what each case answered.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import io
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset

from gateway.errors import ApiError
from gateway.readers import ReadLimits, read_images
from tests.factories import RequestFiles, make_ct_series, phantom_hu, pydicom_file

LIMITS = ReadLimits(max_pixels_per_image=50_000_000, max_total_voxels=200_000_000)
CASE_TIMEOUT_S = 20.0
"""A case still reading after this long is a hang: a failure like a 500."""

DICOM_SEEDS = (
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "JPEG2000.dcm",
    "rtdose.dcm",
)
NIFTI_SEEDS = ("anatomical.nii", "standard.nii.gz", "example_nifti2.nii.gz")
NUMERIC_ATTRIBUTES = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "NumberOfFrames",
    "RescaleSlope",
    "RescaleIntercept",
    "PixelSpacing",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SliceThickness",
    "InstanceNumber",
)
HOSTILE_VALUES = ("NaN", "-1", "0", "4294967295", "1e308", "-1e308", "inf", "65536")
NIFTI_VALUES = (float("nan"), -1.0, 0.0, 1e30, -1e30, float("inf"))
NIFTI_FIELDS = (
    "dim",
    "pixdim",
    "scl_slope",
    "scl_inter",
    "vox_offset",
    "datatype",
    "bitpix",
    "srow_x",
    "qform_code",
    "sform_code",
    "quatern_b",
    "xyzt_units",
)


@dataclass(frozen=True)
class Seed:
    name: str
    """The file name sent, which also says the kind (``.dcm``, ``.nii``, ``.png``...)."""
    files: tuple[tuple[str, bytes], ...]
    """One file, or the slices of a series (the first is the one mutated)."""


@dataclass(frozen=True)
class Case:
    seed: Seed
    mutation: str
    files: tuple[tuple[str, bytes], ...]


def seeds(workdir: Path) -> list[Seed]:
    found = [Seed(name, ((name, pydicom_file(name).read_bytes()),)) for name in DICOM_SEEDS]
    data = Path(nib.__file__).parent / "tests" / "data"
    found += [Seed(name, ((name, (data / name).read_bytes()),)) for name in NIFTI_SEEDS]
    camera = _camera()
    for kind in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.fromarray(camera).save(buffer, format=kind)
        name = f"camera.{kind.lower()}"
        found.append(Seed(name, ((name, buffer.getvalue()),)))
    paths = make_ct_series(workdir / "seed-series", phantom_hu((4, 64, 64)))
    found.append(Seed("series.dcm", tuple((p.name, p.read_bytes()) for p in paths)))
    return found


def _camera() -> np.ndarray:
    from skimage import data

    picture: np.ndarray = data.camera()[::4, ::4]
    return picture


def cases(all_seeds: Sequence[Seed], count: int, rng: np.random.Generator) -> Iterator[Case]:
    """First every deterministic mutation (each attribute deleted, each hostile value), then
    random ones, until ``count``."""
    produced = 0
    for seed in all_seeds:
        for case in _structured(seed):
            if produced >= count:
                return
            produced += 1
            yield case
    while produced < count:
        seed = all_seeds[int(rng.integers(len(all_seeds)))]
        yield _random(seed, rng)
        produced += 1


def _structured(seed: Seed) -> Iterator[Case]:
    name, content = seed.files[0]
    if name.endswith(".dcm"):
        dataset = pydicom.dcmread(io.BytesIO(content), force=True)
        for element in list(dataset):
            copy = pydicom.dcmread(io.BytesIO(content), force=True)
            del copy[element.tag]
            yield _replace(seed, f"delete {element.keyword or element.tag}", _encode(copy))
        for keyword in NUMERIC_ATTRIBUTES:
            for value in HOSTILE_VALUES:
                copy = pydicom.dcmread(io.BytesIO(content), force=True)
                if _set(copy, keyword, value):
                    yield _replace(seed, f"{keyword}={value}", _encode(copy))
    elif ".nii" in name:
        for field in NIFTI_FIELDS:
            for number in NIFTI_VALUES:
                mutated = _nifti_field(content, field, number)
                if mutated is not None:
                    yield _replace(seed, f"{field}={number}", mutated)
    yield _replace(seed, "LF -> CRLF", content.replace(b"\n", b"\r\n"))


def _random(seed: Seed, rng: np.random.Generator) -> Case:
    _, content = seed.files[0]
    data = bytearray(content)
    kind = int(rng.integers(4))
    if kind == 0:
        cut = int(rng.integers(len(data)))
        return _replace(seed, f"truncated at {cut}", bytes(data[:cut]))
    if kind == 1:
        flips = []
        for _ in range(int(rng.integers(1, 9))):
            at = int(rng.integers(len(data)))
            bit = int(rng.integers(8))
            data[at] ^= 1 << bit
            flips.append(at)
        return _replace(seed, f"bits flipped at {flips}", bytes(data))
    if kind == 2:
        header = min(len(data), 1024)
        at = int(rng.integers(header))
        data[at] = int(rng.integers(256))
        return _replace(seed, f"header byte {at} = {data[at]}", bytes(data))
    # Inside the compressed stream: the second half of a file is pixel or voxel data.
    at = int(rng.integers(len(data) // 2, len(data)))
    data[at] ^= 0xFF
    return _replace(seed, f"data byte {at} inverted", bytes(data))


def _replace(seed: Seed, mutation: str, content: bytes) -> Case:
    return Case(seed, mutation, ((seed.files[0][0], content), *seed.files[1:]))


def _encode(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    try:
        dataset.save_as(buffer, enforce_file_format=False)
    except Exception:  # a deletion pydicom itself cannot write: the case sends an empty file
        return b""
    return buffer.getvalue()


def _set(dataset: Dataset, keyword: str, value: str) -> bool:
    if keyword not in dataset:
        return False
    element = dataset.data_element(keyword)
    if element is None:
        return False
    count = len(element.value) if isinstance(element.value, Sequence) and element.VR != "SQ" else 1
    try:
        if element.VR in ("US", "UL", "SS", "SL"):
            number = int(float(value)) if value not in ("NaN", "inf") else 0
            element.value = number if count == 1 else [number] * count
        else:
            element.value = value if count == 1 else "\\".join([value] * count)
    except (ValueError, OverflowError, TypeError):
        return False
    return True


def _nifti_field(content: bytes, field: str, value: float) -> bytes | None:
    gzipped = content[:2] == b"\x1f\x8b"
    raw = gzip.decompress(content) if gzipped else content
    size = 540 if raw[:4] == (540).to_bytes(4, "little") else 348
    image_class = nib.Nifti2Header if size == 540 else nib.Nifti1Header
    header = image_class.from_fileobj(io.BytesIO(raw[:size]), check=False)
    try:
        current = np.asarray(header[field])
        header[field] = np.full(current.shape, value).astype(current.dtype)
    except (ValueError, OverflowError, TypeError):
        return None
    mutated = header.binaryblock + raw[size:]
    return gzip.compress(mutated, compresslevel=1) if gzipped else mutated


class _Hang(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Hang()


def run_case(case: Case, folder: Path) -> str:
    """What the readers answered: ``ok``, a 4xx code, or ``FAIL ...`` (500, exception, hang)."""
    files = RequestFiles(folder / f"case-{time.monotonic_ns()}")
    for name, content in case.files:
        files.add(name, content)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_TIMEOUT_S)
    try:
        image = read_images(files.entries(), files.uploads, LIMITS)
        assert image.pixels.shape[0] >= 1
        return "ok"
    except ApiError as exc:
        if exc.status >= 500:
            return f"FAIL {exc.status} {exc.code}: {exc.message}"
        return f"{exc.status} {exc.code}"
    except _Hang:
        return f"FAIL hang (over {CASE_TIMEOUT_S:g} s)"
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(exc)).strip()
        return f"FAIL {type(exc).__name__}: {detail[:300]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        for upload in files.uploads.values():
            upload.path.unlink(missing_ok=True)
        files.directory.rmdir()


def fuzz(
    count: int,
    seed: int,
    report: Callable[[str], None] = print,
    trace: Callable[[str], None] | None = None,
) -> tuple[collections.Counter[str], list[tuple[Case, str]]]:
    """Run ``count`` cases; the outcomes counted, and the failing cases with their outcome.
    ``trace`` is told each case before it runs: what was running when a run died."""
    outcomes: collections.Counter[str] = collections.Counter()
    failures: list[tuple[Case, str]] = []
    with tempfile.TemporaryDirectory(prefix="readers-fuzz-") as tmp:
        folder = Path(tmp)
        all_seeds = seeds(folder)
        for number, case in enumerate(cases(all_seeds, count, np.random.default_rng(seed))):
            if trace is not None:
                trace(f"{number}: {case.seed.name}: {case.mutation}")
            outcome = run_case(case, folder)
            outcomes[outcome.split(":")[0] if outcome.startswith("FAIL") else outcome] += 1
            if outcome.startswith("FAIL"):
                failures.append((case, outcome))
                report(f"{case.seed.name}: {case.mutation}: {outcome}")
    return outcomes, failures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.gateway.readers.fuzzing")
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trace", type=Path, help="write each case here before it runs")
    args = parser.parse_args(argv)
    started = time.monotonic()
    trace = None
    if args.trace is not None:
        log = args.trace.open("w", buffering=1)
        trace = log.write
    outcomes, failures = fuzz(
        args.cases, args.seed, trace=lambda line: trace and trace(line + "\n")
    )
    total = sum(outcomes.values())
    print(f"{total} mutated files in {time.monotonic() - started:.0f} s, seed {args.seed}:")
    for outcome, number in sorted(outcomes.items(), key=lambda item: -item[1]):
        print(f"  {number:6d}  {outcome}")
    print(f"{len(failures)} failures (500s, unexpected exceptions or hangs)")
    return 1 if failures else 0


def _quiet_warnings() -> None:
    """Mutated headers make pydicom warn and nibabel log on every other case: noise here."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger("nibabel").setLevel(logging.ERROR)


if __name__ == "__main__":
    _quiet_warnings()
    sys.exit(main(sys.argv[1:]))
