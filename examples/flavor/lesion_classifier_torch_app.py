"""FLaVor's torch classification service (original/lesion_classifier_torch_app.py), ported.

Only the imports and define_inference_network changed (a test checks it): the network is the
model Triton serves, and `self.network(x)` on a torch tensor gives a torch tensor back.
"""

import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from gateway.flavor import (
    AiCOCOClassificationOutputStrategy,
    AiCOCOImageInputDataModel,
    AiCOCOImageOutputDataModel,
    AiImage,
    BaseAiCOCOImageInferenceModel,
    InferAPP,
    TritonSession,
)

SIZE = (256, 256)


class ClassificationInferenceModel(BaseAiCOCOImageInferenceModel):
    def __init__(self):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        super().__init__()
        self.formatter = AiCOCOClassificationOutputStrategy()

    def define_inference_network(self):
        return TritonSession("lesion_classifier")

    def set_categories(self) -> List[Dict[str, Any]]:
        return [{"name": "nodule"}, {"name": "large_nodule"}]

    def set_regressions(self) -> None:
        return None

    def data_reader(self, files: Sequence[str], **kwargs) -> Tuple[np.ndarray, None]:
        image = Image.open(files[0]).convert("L").resize(SIZE, Image.BILINEAR)
        return np.asarray(image), None

    def preprocess(self, data: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(data.astype(np.float32) / 255.0)[None, None]
        return x.to(self.device)

    def inference(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.network(x)

    def postprocess(self, model_out: torch.Tensor, **kwargs) -> np.ndarray:
        return (model_out[0] >= 0.5).long().cpu().numpy()

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
