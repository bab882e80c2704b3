"""Pipelines: the FLaVor-style inference-model API, the built-in pipelines and the model catalog.

Porting a FLaVor model means changing its imports and returning a :class:`TritonModel` from
``define_inference_network``. Its base class is :class:`AiCOCOImagePipeline`; a port that imports
it under FLaVor's name (``import AiCOCOImagePipeline as BaseAiCOCOImageInferenceModel``) keeps its
class statement. (FLaVor's own, synchronous ``BaseAiCOCOImageInferenceModel`` is
:mod:`gateway.flavor`'s, for scripts served by ``InferAPP``.)
"""

from gateway import readers
from gateway.errors import (
    ApiError,
    GeometryRequired,
    InvalidAiCOCO,
    InvalidModelConfig,
    TableWindowMismatch,
    VolumeRequired,
    VolumeTooLarge,
    WrongInputKind,
)
from gateway.inference import Pipeline
from gateway.pipelines.base import (
    AiCOCOImagePipeline,
    PipelineBinding,
    TritonModel,
    binding_scope,
)
from gateway.readers import tables
from gateway.triton import errors as triton_errors

IMAGE_RAISES: tuple[type[ApiError], ...] = (
    *readers.RAISES,
    *triton_errors.RAISES,
    WrongInputKind,
    InvalidAiCOCO,
    InvalidModelConfig,
    VolumeRequired,
    GeometryRequired,
    VolumeTooLarge,
)
"""What running a built-in or ported pipeline on images alone can raise: reading them, calling
Triton, and its own checks (an input of the wrong kind for the task, entries the task cannot
use, parameters no pipeline can be built from; for a volumetric model, a 2D image, images
without a spacing, a volume over its bound)."""
RAISES: tuple[type[ApiError], ...] = (*IMAGE_RAISES, *tables.RAISES, TableWindowMismatch)
"""What running one on images or tables can raise: the above, reading the tables, and a table
shorter than the window."""

__all__ = [
    "IMAGE_RAISES",
    "RAISES",
    "AiCOCOImagePipeline",
    "Pipeline",
    "PipelineBinding",
    "TritonModel",
    "binding_scope",
]
