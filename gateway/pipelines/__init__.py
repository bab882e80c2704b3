"""Pipelines: the FLaVor-style inference-model API, the built-in pipelines and the model catalog.

Porting a FLaVor model means changing its imports and returning a :class:`TritonModel` from
``define_inference_network``; ``BaseAiCOCOImageInferenceModel`` is kept as an alias of
:class:`AiCOCOImagePipeline` so the class statement itself need not change.
"""

from gateway.pipelines.base import (
    AiCOCOImagePipeline,
    PipelineBinding,
    TritonModel,
    binding_scope,
)
from gateway.request import Pipeline

BaseAiCOCOImageInferenceModel = AiCOCOImagePipeline
"""FLaVor's name for :class:`AiCOCOImagePipeline`."""

__all__ = [
    "AiCOCOImagePipeline",
    "BaseAiCOCOImageInferenceModel",
    "Pipeline",
    "PipelineBinding",
    "TritonModel",
    "binding_scope",
]
