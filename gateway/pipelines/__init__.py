"""Pipelines: the FLaVor-style inference-model API, the built-in pipelines and the model catalog.

Porting a FLaVor model means changing its imports and returning a :class:`TritonModel` from
``define_inference_network``. Its base class is :class:`AiCOCOImagePipeline`; a port that imports
it under FLaVor's name (``import AiCOCOImagePipeline as BaseAiCOCOImageInferenceModel``) keeps its
class statement. (FLaVor's own, synchronous ``BaseAiCOCOImageInferenceModel`` is
:mod:`gateway.flavor`'s, for scripts served by ``InferAPP``.)
"""

from gateway.inference import Pipeline
from gateway.pipelines.base import (
    AiCOCOImagePipeline,
    PipelineBinding,
    TritonModel,
    binding_scope,
)

__all__ = [
    "AiCOCOImagePipeline",
    "Pipeline",
    "PipelineBinding",
    "TritonModel",
    "binding_scope",
]
