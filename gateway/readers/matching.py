"""Uploaded files paired with ``images`` entries, by exact file name.

FLaVor pairs by suffix, so an entry for ``1.dcm`` also takes ``11.dcm``; here a name
matches only itself. Every file needs an entry and every entry a file: anything left over is a
422 ``file_mismatch`` that lists the names, never a silent drop. An empty file is refused here
too, for every pipeline, before anything reads it. Several entries may name one
file (a volume: one entry per slice, or one for the whole volume).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from aicoco import AiImage
from gateway.errors import FileMismatch, InvalidInput, UnreadableFile
from gateway.inference import Upload

_LISTED = 20
"""Names quoted in a message; the details carry them all."""


@dataclass(frozen=True)
class FileEntries:
    upload: Upload
    entries: list[AiImage]
    """The entries that name this file, in ``index`` order."""


def match(images: Sequence[AiImage], uploads: Mapping[str, Upload]) -> list[FileEntries]:
    """The files with their entries, in the order of each file's lowest ``index``."""
    if not images:
        raise InvalidInput("the request has no images entries; send one per file (or per slice)")
    repeated = sorted(index for index, n in Counter(i.index for i in images).items() if n > 1)
    if repeated:
        raise InvalidInput(
            f"images entries repeat index {_quote(repeated)}: each entry needs its own index, "
            "which orders the slices",
            details={"duplicate_indices": repeated},
        )
    by_file: dict[str, list[AiImage]] = defaultdict(list)
    for image in images:
        by_file[image.file_name].append(image)
    check_uploads(by_file, uploads)
    paired = [
        FileEntries(uploads[name], sorted(entries, key=lambda e: e.index))
        for name, entries in by_file.items()
    ]
    return sorted(paired, key=lambda pair: pair.entries[0].index)


def _quote(values: Sequence[object]) -> str:
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values[:_LISTED])
    more = len(values) - _LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def check_uploads(named: Iterable[str], uploads: Mapping[str, Upload]) -> None:
    """Every file named by an entry was uploaded, every upload is named, and none is empty: run
    before any file is read, so that a mismatch costs nothing."""
    wanted = set(named)
    missing = sorted(name for name in wanted if name not in uploads)
    unreferenced = sorted(name for name in uploads if name not in wanted)
    if missing or unreferenced:
        problems = []
        if missing:
            problems.append(f"no file was uploaded for the images entries naming {_quote(missing)}")
        if unreferenced:
            problems.append(f"no images entry names the uploaded file(s) {_quote(unreferenced)}")
        raise FileMismatch(
            "; ".join(problems) + " (file names must match exactly)",
            details={"missing_files": missing, "unmatched_files": unreferenced},
        )
    for upload in uploads.values():
        if upload.size == 0:
            raise UnreadableFile(
                f"the file {upload.file_name!r} is empty (0 bytes)",
                details={"file_name": upload.file_name},
            )
