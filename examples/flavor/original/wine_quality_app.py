"""A FLaVor tabular-classification service, as written for FLaVor (ONNX Runtime in-process).

Kept to show what porting changes: compare with ../wine_quality_app.py.
"""

import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import onnxruntime as ort
import pandas as pd

from flavor.serve.apps import InferAPP
from flavor.serve.inference.data_models.api import (
    AiCOCOTabularInputDataModel,
    AiCOCOTabularOutputDataModel,
)
from flavor.serve.inference.data_models.functional import AiTable
from flavor.serve.inference.inference_models import BaseAiCOCOTabularInferenceModel
from flavor.serve.inference.strategies import AiCOCOTabularClassificationOutputStrategy

COLUMNS = [
    "fixed acidity",
    "volatile acidity",
    "citric acid",
    "residual sugar",
    "chlorides",
    "free sulfur dioxide",
    "total sulfur dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
]


class ClassificationInferenceModel(BaseAiCOCOTabularInferenceModel):
    def __init__(self):
        super().__init__()
        self.formatter = AiCOCOTabularClassificationOutputStrategy()

    def define_inference_network(self):
        return ort.InferenceSession("model_repository/wine_quality_classifier/1/model.onnx")

    def set_categories(self) -> List[Dict[str, Any]]:
        return [{"name": str(grade)} for grade in range(3, 9)]

    def set_regressions(self) -> None:
        return None

    def data_reader(self, files: Sequence[str], **kwargs) -> List[pd.DataFrame]:
        return [pd.read_csv(file) for file in files]

    def preprocess(self, data: List[pd.DataFrame]) -> np.ndarray:
        table = pd.concat(data)[COLUMNS]
        return table.to_numpy(dtype=np.float32)[:, np.newaxis, :]

    def inference(self, x: np.ndarray) -> np.ndarray:
        return self.network.run(None, {"features": x})[0]

    def postprocess(self, model_out: np.ndarray, **kwargs) -> np.ndarray:
        one_hot = np.zeros(model_out.shape, dtype=int)
        one_hot[np.arange(len(model_out)), model_out.argmax(axis=1)] = 1
        return one_hot

    def output_formatter(
        self,
        model_out: Any,
        tables: Sequence[AiTable],
        dataframes: Sequence[pd.DataFrame],
        meta: Dict[str, Any],
        categories: Optional[Sequence[Dict[str, Any]]] = None,
        **kwargs,
    ) -> AiCOCOTabularOutputDataModel:
        return self.formatter(
            model_out=model_out,
            tables=tables,
            dataframes=dataframes,
            categories=categories,
            meta=meta,
            **kwargs,
        )


app = InferAPP(
    infer_function=ClassificationInferenceModel(),
    input_data_model=AiCOCOTabularInputDataModel,
    output_data_model=AiCOCOTabularOutputDataModel,
)

if __name__ == "__main__":
    app.run(port=int(os.getenv("PORT", 9111)))
