"""The source instances of a document's images: what a SEG or an SR references.

Only headers are read (``stop_before_pixels``): the pixels were decoded once for the pipeline,
and the writers need identifiers, geometry and the patient and study modules. Each AiCOCO image
is one frame: a single-frame instance, or one frame of a multi-frame instance with one entry per
frame (``index`` is the frame, from 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from aicoco import AiImage
from gateway.errors import DicomInputRequired
from gateway.inference import Upload
from gateway.readers.base import unreadable
from gateway.readers.detect import FileKind, detect
from gateway.readers.selection import chosen_series

_TYPE_2 = {
    # Patient Module (PS3.3 C.7.1.1) and General Study Module (C.7.2.1): Type 2 attributes,
    # required but allowed empty. Files from the field sometimes lack them; the results carry
    # them over from the source, so a missing one is added empty rather than refused.
    "PatientName": "",
    "PatientID": "",
    "PatientBirthDate": "",
    "PatientSex": "",
    "StudyDate": "",
    "StudyTime": "",
    "ReferringPhysicianName": "",
    "StudyID": "",
    "AccessionNumber": "",
}


@dataclass(frozen=True)
class Frame:
    instance: Dataset
    number: int | None
    """1-based frame of a multi-frame instance; None for a single-frame one."""


@dataclass(frozen=True)
class Sources:
    instances: list[Dataset]
    """The distinct source instances, in the order of the document's images."""
    frames: dict[str, Frame]
    """Where each AiCOCO image (by id) is."""

    @property
    def modality(self) -> str:
        return str(self.instances[0].get("Modality", ""))


def load_sources(images: Sequence[AiImage], uploads: Mapping[str, Upload], output: str) -> Sources:
    """Headers of the DICOM files the images name; refuses anything a result cannot reference."""
    instances: dict[str, Dataset] = {}
    by_file: dict[str, list[AiImage]] = {}
    for image in images:
        by_file.setdefault(image.file_name, []).append(image)
    for name in by_file:
        upload = uploads[name]
        if detect(upload) is not FileKind.DICOM:
            raise DicomInputRequired(
                f"output={output} answers DICOM that references its source images, and "
                f"'{name}' is not DICOM: send DICOM files, or ask for output=aicoco",
                details={"file_name": name},
            )
        instances[name] = _header(upload)
    # A whole study uploaded: the result is of the series the reader runs the model on.
    names = list(instances)
    kept = [names[i] for i in chosen_series([instances[name] for name in names])]
    frames: dict[str, Frame] = {}
    for name in kept:
        instance, entries = instances[name], by_file[name]
        count = int(instance.get("NumberOfFrames", 1) or 1)
        if count == 1:
            frames.update((entry.id, Frame(instance, None)) for entry in entries)
            continue
        if len(entries) != count:
            raise DicomInputRequired(
                f"'{name}' holds {count} frames and {len(entries)} images entries name it: for "
                f"a DICOM result send one entry per frame ({count}, index 0 to {count - 1})",
                details={"file_name": name, "frames": count, "entries": len(entries)},
            )
        ordered = sorted(entries, key=lambda entry: entry.index)
        frames.update((entry.id, Frame(instance, z + 1)) for z, entry in enumerate(ordered))
    return Sources([instances[name] for name in kept], frames)


def _header(upload: Upload) -> Dataset:
    try:
        ds = pydicom.dcmread(upload.path, stop_before_pixels=True, force=True)
    except Exception as exc:  # the parser's boundary; the pipeline read it already
        raise unreadable(
            upload.file_name, "DICOM file", "its header cannot be parsed", exc
        ) from exc
    for keyword, empty in _TYPE_2.items():
        if keyword not in ds:
            setattr(ds, keyword, empty)
    return ds
