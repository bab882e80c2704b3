"""FLaVor's hybrid classification service (original/lesion_risk_app.py), ported to the gateway.

Only the imports and define_inference_network changed (a test checks it): the network is the
model Triton serves, and `self.network.run(...)` in inference runs there.
"""

import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd
from PIL import Image

from gateway.flavor import (
    AiCOCOHybridClassificationOutputStrategy,
    AiCOCOHybridInputDataModel,
    AiCOCOHybridOutputDataModel,
    AiImage,
    AiTable,
    BaseAiCOCOHybridInferenceModel,
    InferAPP,
    TritonSession,
)

SIZE = (128, 128)


class ClassificationInferenceModel(BaseAiCOCOHybridInferenceModel):
    def __init__(self):
        super().__init__()
        self.formatter = AiCOCOHybridClassificationOutputStrategy()

    def define_inference_network(self):
        return TritonSession("lesion_risk_hybrid")

    def set_categories(self) -> List[Dict[str, Any]]:
        return [{"name": str(i)} for i in range(2)]

    def set_regressions(self) -> None:
        return None

    def data_reader(self, image_files: Sequence[str], table_files: Sequence[str]):
        image = Image.open(image_files[0]).convert("L").resize(SIZE, Image.BILINEAR)
        tabular = pd.read_csv(table_files[0])
        return np.asarray(image), tabular

    def preprocess(self, x: Tuple[np.ndarray, pd.DataFrame]) -> Dict[str, np.ndarray]:
        image, tabular = x
        return {
            "image": (image.astype(np.float32) / 255.0)[np.newaxis, np.newaxis],
            "features": tabular.to_numpy(dtype=np.float32)[np.newaxis, :1],
        }

    def inference(self, x: Dict[str, np.ndarray]) -> np.ndarray:
        return self.network.run(None, x)[0]

    def postprocess(self, model_out: np.ndarray, **kwargs) -> np.ndarray:
        return (model_out[0] > 0.5).astype(np.int64)

    def output_formatter(
        self,
        model_out: np.ndarray,
        images: Sequence[AiImage],
        tables: Sequence[AiTable],
        categories: Sequence[Dict[str, Any]],
        **kwargs,
    ) -> AiCOCOHybridOutputDataModel:
        return self.formatter(
            model_out=model_out, images=images, tables=tables, categories=categories
        )


app = InferAPP(
    infer_function=ClassificationInferenceModel(),
    input_data_model=AiCOCOHybridInputDataModel,
    output_data_model=AiCOCOHybridOutputDataModel,
)

if __name__ == "__main__":
    app.run(port=int(os.getenv("PORT", 9111)))
