"""A FLaVor image-classification service, as written for FLaVor (ONNX Runtime in-process).

Kept to show what porting changes: compare with ../lesion_classifier_app.py.
"""

import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import onnxruntime as ort
from PIL import Image

from flavor.serve.apps import InferAPP
from flavor.serve.inference.data_models.api import (
    AiCOCOImageInputDataModel,
    AiCOCOImageOutputDataModel,
)
from flavor.serve.inference.data_models.functional import AiImage
from flavor.serve.inference.inference_models import BaseAiCOCOImageInferenceModel
from flavor.serve.inference.strategies import AiCOCOClassificationOutputStrategy

SIZE = (256, 256)


class ClassificationInferenceModel(BaseAiCOCOImageInferenceModel):
    def __init__(self):
        super().__init__()
        self.formatter = AiCOCOClassificationOutputStrategy()

    def define_inference_network(self):
        return ort.InferenceSession("model_repository/lesion_classifier/1/model.onnx")

    def set_categories(self) -> List[Dict[str, Any]]:
        return [{"name": "nodule"}, {"name": "large_nodule"}]

    def set_regressions(self) -> None:
        return None

    def data_reader(self, files: Sequence[str], **kwargs) -> Tuple[np.ndarray, None]:
        image = Image.open(files[0]).convert("L").resize(SIZE, Image.BILINEAR)
        return np.asarray(image), None

    def preprocess(self, data: np.ndarray) -> np.ndarray:
        return (data.astype(np.float32) / 255.0)[np.newaxis, np.newaxis]

    def inference(self, x: np.ndarray) -> np.ndarray:
        return self.network.run(None, {"image": x})[0]

    def postprocess(self, model_out: np.ndarray, **kwargs) -> np.ndarray:
        return (model_out[0] >= 0.5).astype(np.int64)

    def output_formatter(
        self,
        model_out: np.ndarray,
        images: Sequence[AiImage],
        categories: Sequence[Dict[str, Any]],
        **kwargs,
    ) -> AiCOCOImageOutputDataModel:
        return self.formatter(model_out=model_out, images=images, categories=categories)


app = InferAPP(
    infer_function=ClassificationInferenceModel(),
    input_data_model=AiCOCOImageInputDataModel,
    output_data_model=AiCOCOImageOutputDataModel,
)

if __name__ == "__main__":
    app.run(port=int(os.getenv("PORT", 9111)))
