"""Which answer a request asks for: ``output=aicoco|seg|sr|dicom``, or ``Accept``.

The DICOM writers (and highdicom under them, about 20 MiB resident) are imported by the first
request that asks for DICOM, not at start: most gateways never write a DICOM object.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from gateway.errors import (
    ApiError,
    DicomInputRequired,
    InvalidModelOutput,
    InvalidParameter,
    UnreadableFile,
)
from gateway.pipelines.tasks import answers_of
from gateway.schemas import ModelInfo

if TYPE_CHECKING:
    from gateway.outputs.producer import Producer

RAISES: tuple[type[ApiError], ...] = (
    InvalidParameter,
    DicomInputRequired,
    UnreadableFile,
    InvalidModelOutput,
)
"""What answering in DICOM can raise: an output the model cannot give, inputs that are not DICOM
or whose headers cannot be read (``gateway.outputs.sources``), a mask the SEG writer refuses."""

DICOM_MEDIA_TYPE = "application/dicom"
DICOM_ANSWERS = frozenset({"seg", "sr"})


class Output(enum.Enum):
    AICOCO = "aicoco"
    SEG = "seg"
    """A DICOM Segmentation: segmentation models only."""
    SR = "sr"
    """A Comprehensive 3D SR with a TID 1500 Measurement Report: any model."""
    DICOM = "dicom"
    """SEG for a segmentation model, SR for the others."""


def requested(output: str | None, accept: str | None) -> Output:
    """``output`` wins; else ``Accept: application/dicom`` asks for DICOM; else AiCOCO.

    Checked before the body is read, so a typo costs the client no upload.
    """
    if output is not None and output.strip():
        try:
            return Output(output.strip().lower())
        except ValueError:
            raise InvalidParameter(
                f"output={output!r} is not an output: send one of "
                f"{', '.join(o.value for o in Output)}",
                details={"output": output},
            ) from None
    media = [part.split(";")[0].strip().lower() for part in (accept or "").split(",")]
    return Output.DICOM if DICOM_MEDIA_TYPE in media else Output.AICOCO


def resolve(output: Output, model: str, task: str | None) -> Output:
    """SEG or SR for ``dicom``; a SEG of a model that draws no masks is refused, and so is any
    DICOM answer of a tabular or hybrid model (its results are records, not image findings)."""
    answers = answers_of(task)
    if answers is not None and output.value not in answers and not answers & DICOM_ANSWERS:
        raise InvalidParameter(
            f"'{model}' is a {task} model: its answer is AiCOCO JSON only; drop output= (or ask "
            "for output=aicoco)",
            details={"output": output.value, "model": model, "task": task},
        )
    segments = answers is not None and Output.SEG.value in answers
    if output is Output.DICOM:
        return Output.SEG if segments else Output.SR
    if output is Output.SEG and not segments:
        raise InvalidParameter(
            f"output=seg needs a segmentation model, and '{model}' is "
            f"{task or 'of an unknown task'}: ask for output=sr (or output=dicom)",
            details={"output": output.value, "model": model, "task": task},
        )
    return output


def producer_of(info: ModelInfo, service_version: str) -> Producer:
    """The model as Triton serves it: its newest version (Triton's default version policy)."""
    from gateway.outputs.producer import Producer

    versions = sorted(info.versions, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0))
    return Producer(info.name, versions[-1] if versions else "unknown", service_version)
