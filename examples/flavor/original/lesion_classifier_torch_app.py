"""A FLaVor image-classification service written as FLaVor's cls_example is: the network is a
torch module, called on a torch tensor in inference.

Kept to show what porting changes: compare with ../lesion_classifier_torch_app.py. The module is
the repository's lesion classifier (training/nets.py) with its trained weights.
"""

import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from flavor.serve.apps import InferAPP
from flavor.serve.inference.data_models.api import (
    AiCOCOImageInputDataModel,
    AiCOCOImageOutputDataModel,
)
from flavor.serve.inference.data_models.functional import AiImage
from flavor.serve.inference.inference_models import BaseAiCOCOImageInferenceModel
from flavor.serve.inference.strategies import AiCOCOClassificationOutputStrategy
from training.nets import LesionClassifierNet

SIZE = (256, 256)


class ClassificationInferenceModel(BaseAiCOCOImageInferenceModel):
    def __init__(self):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        super().__init__()
        self.formatter = AiCOCOClassificationOutputStrategy()

    def define_inference_network(self):
        network = LesionClassifierNet(categories=2)
        network.load_state_dict(torch.load("lesion_classifier.pt", map_location=self.device))
        network.eval()
        return network.to(self.device)

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
