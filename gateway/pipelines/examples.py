"""A FLaVor inference model ported to the gateway: the example of docs/flavor.md.

:class:`LungSegmentationModel` was written for FLaVor: a ``BaseAiCOCOImageInferenceModel``
subclass that ran ``lung_segmenter/1/model.onnx`` in-process with onnxruntime. Porting changed
the lines marked ``# ported``: the imports, ``define_inference_network`` (a handle to the model
Triton serves instead of an ONNX session) and ``inference`` (``self.network(x)`` instead of
``session.run``). The stages are otherwise FLaVor's, signatures included, and run as FLaVor ran
them, except that the gateway runs them off the event loop and ``self`` holds nothing per request.

Serve it for the ``lung_segmenter`` model with
``PIPELINES=lung_segmenter=gateway.pipelines.examples:LungSegmentationModel``. It gives the same
masks as the built-in pipeline that ``lung_segmenter``'s parameters configure, which is the
point: the parameters make this code unnecessary for models that fit the contract, and a
pipeline class remains for those that do not.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any

import numpy as np
from PIL import Image
from skimage.transform import resize

from aicoco import AiCOCOOutput, AiImage, CategorySpec
from aicoco import SegmentationStrategy as AiCOCOSegmentationOutputStrategy  # ported
from gateway.pipelines import (  # ported
    AiCOCOImagePipeline as BaseAiCOCOImageInferenceModel,
)
from gateway.pipelines import TritonModel  # ported

SIZE = (128, 128)


class LungSegmentationModel(BaseAiCOCOImageInferenceModel):
    network: TritonModel

    def __init__(self) -> None:
        self.formatter = AiCOCOSegmentationOutputStrategy()
        super().__init__()

    def define_inference_network(self) -> TritonModel:
        return TritonModel("lung_segmenter")  # ported: ort.InferenceSession(".../model.onnx")

    def set_categories(self) -> list[dict[str, Any]]:
        return [
            {"name": "left_lung", "supercategory_name": "lung", "color": "#4A90E2"},
            {"name": "right_lung", "supercategory_name": "lung", "color": "#50E3C2"},
        ]

    def set_regressions(self) -> None:
        return None

    def data_reader(self, files: Sequence[str], **kwargs: Any) -> tuple[np.ndarray, None]:
        image = np.asarray(Image.open(files[0]).convert("L"))
        return image, None

    def preprocess(self, data: np.ndarray) -> np.ndarray:
        x = resize(data / 255.0, SIZE, order=1, anti_aliasing=False)
        return np.asarray(x, dtype=np.float32)[np.newaxis, np.newaxis]

    def inference(self, x: np.ndarray) -> Coroutine[Any, Any, np.ndarray]:
        return self.network(x)  # ported: self.network.run(None, {"image": x})[0]

    def postprocess(self, out: np.ndarray) -> np.ndarray:
        probabilities: np.ndarray = out[0]
        return probabilities

    def output_formatter(
        self,
        model_out: np.ndarray,
        images: Sequence[AiImage],
        categories: Sequence[CategorySpec],
        data: np.ndarray,
        **kwargs: Any,
    ) -> AiCOCOOutput:
        shape = (model_out.shape[0], *data.shape)
        probabilities = resize(model_out, shape, order=1, anti_aliasing=False)
        mask = (probabilities >= 0.5).astype(np.uint8)
        return self.formatter(model_out=mask, images=images, categories=categories)
