"""FLaVor's serving API, for service scripts that move to the gateway by changing imports.

A FLaVor script imports ``InferAPP`` from ``flavor.serve.apps``, its base class from
``flavor.serve.inference.inference_models``, its data models from
``flavor.serve.inference.data_models.api`` and ``...functional``, its strategy from
``flavor.serve.inference.strategies``; each of those names is here, with the same constructor
and call. The one other change: ``define_inference_network`` returns
``TritonSession("<model name>")`` instead of an ONNX Runtime session, and ``inference``'s
``self.network.run(None, {...})`` then runs on Triton. ``docs/flavor.md`` walks through it.
"""

from aicoco import AiImage
from aicoco.tables import AiTable
from gateway.flavor.app import InferAPP
from gateway.flavor.models import (
    AiCOCOHybridInputDataModel,
    AiCOCOHybridOutputDataModel,
    AiCOCOImageInputDataModel,
    AiCOCOImageOutputDataModel,
    AiCOCOTabularInputDataModel,
    AiCOCOTabularOutputDataModel,
    BaseAiCOCOHybridInferenceModel,
    BaseAiCOCOImageInferenceModel,
    BaseAiCOCOInferenceModel,
    BaseAiCOCOTabularInferenceModel,
)
from gateway.flavor.network import TritonSession
from gateway.flavor.strategies import (
    AiCOCOClassificationOutputStrategy,
    AiCOCODetectionOutputStrategy,
    AiCOCOHybridClassificationOutputStrategy,
    AiCOCOHybridRegressionOutputStrategy,
    AiCOCORegressionOutputStrategy,
    AiCOCOSegmentationOutputStrategy,
    AiCOCOTabularClassificationOutputStrategy,
    AiCOCOTabularRegressionOutputStrategy,
)

__all__ = [
    "AiCOCOClassificationOutputStrategy",
    "AiCOCODetectionOutputStrategy",
    "AiCOCOHybridClassificationOutputStrategy",
    "AiCOCOHybridInputDataModel",
    "AiCOCOHybridOutputDataModel",
    "AiCOCOHybridRegressionOutputStrategy",
    "AiCOCOImageInputDataModel",
    "AiCOCOImageOutputDataModel",
    "AiCOCORegressionOutputStrategy",
    "AiCOCOSegmentationOutputStrategy",
    "AiCOCOTabularClassificationOutputStrategy",
    "AiCOCOTabularInputDataModel",
    "AiCOCOTabularOutputDataModel",
    "AiCOCOTabularRegressionOutputStrategy",
    "AiImage",
    "AiTable",
    "BaseAiCOCOHybridInferenceModel",
    "BaseAiCOCOImageInferenceModel",
    "BaseAiCOCOInferenceModel",
    "BaseAiCOCOTabularInferenceModel",
    "InferAPP",
    "TritonSession",
]
