"""``read_images``: a request's files and entries into one :class:`ImageSet`.

A request is one stack of slices, sent either as

- one file with one or more slices (a PNG, a DICOM file of any number of frames, a NIfTI
  volume), with one ``images`` entry per slice (in ``index`` order) or a single entry for the
  whole stack; or
- several single-slice files, one entry each: a DICOM series (ordered in space, see
  :mod:`gateway.readers.series`), or PNG/JPEG images or 2-D NIfTI files (ordered by ``index``).
  DICOM files of several series are a study: the series rules of
  :mod:`gateway.readers.selection` choose one, and the others' files are left out (the answer
  lists only the chosen series' entries).

Every header is read and checked against the limits before any pixel is decoded, so a bomb or an
inconsistent series is refused at the cost of reading headers only. DICOM files are not mixed with
other kinds in one request; PNG and JPEG may be mixed (both are 8-bit pictures). What each
format reads is its module's (:mod:`gateway.readers.formats` registers them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aicoco import AiImage
from gateway.errors import InconsistentSeries, InvalidInput
from gateway.inference import Upload
from gateway.readers.base import ImageSet, ReadLimits
from gateway.readers.detect import detect
from gateway.readers.limits import VoxelBudget
from gateway.readers.matching import match


def read_images(
    images: Sequence[AiImage], uploads: Mapping[str, Upload], limits: ReadLimits
) -> ImageSet:
    """Read, check and stack the request's files (CPU-bound: call it off the event loop)."""
    pairs = match(images, uploads)
    budget = VoxelBudget(limits)
    kinds = [detect(pair.upload) for pair in pairs]
    if len(pairs) == 1:
        return kinds[0].format.read_file(pairs[0], budget)
    for pair in pairs:
        if len(pair.entries) > 1:
            raise InvalidInput(
                f"{len(pair.entries)} images entries name '{pair.upload.file_name}', but the "
                f"request has {len(pairs)} files: several entries may share a file only when it "
                "is the request's one file (a volume)",
                details={"file_name": pair.upload.file_name},
            )
    if len({kind.format.stacks_with for kind in kinds}) > 1:
        examples = {
            kind.format.name: pair.upload.file_name for pair, kind in zip(pairs, kinds, strict=True)
        }
        raise InconsistentSeries(
            "the files of one request form one stack and must be of one kind; got "
            + ", ".join(f"{kind} ('{name}')" for kind, name in examples.items()),
            details={"kinds": examples},
        )
    return kinds[0].format.read_stack(pairs, budget)
