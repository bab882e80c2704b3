"""The DICOM answer of one request: a SEG or an SR as a DICOM file (PS3.10), in memory."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pydicom

from aicoco import AiCOCOOutput
from gateway.outputs.choice import Output
from gateway.outputs.producer import Producer
from gateway.outputs.seg import segmentation
from gateway.outputs.sources import Sources
from gateway.outputs.sr import measurement_report


@dataclass(frozen=True)
class DicomResult:
    content: bytes
    """The DICOM file (PS3.10)."""
    series_instance_uid: str
    sop_instance_uid: str


def dicom_file(
    output: Output, document: AiCOCOOutput, sources: Sources, producer: Producer
) -> DicomResult:
    """CPU-bound (contours to masks, highdicom's checks): call it off the event loop."""
    if output is Output.SEG:
        dataset = segmentation(document, sources, producer)
    else:
        dataset = measurement_report(document, sources, producer)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return DicomResult(
        buffer.getvalue(), str(dataset.SeriesInstanceUID), str(dataset.SOPInstanceUID)
    )
