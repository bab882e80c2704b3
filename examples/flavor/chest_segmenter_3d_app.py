"""FLaVor's 3D segmentation service (original/chest_segmenter_3d_app.py), ported to the gateway.

Only the imports and define_inference_network changed (a test checks it): the network is the
model Triton serves, and MONAI's sliding_window_inference calls it on torch tensors as it called
the torch module, getting torch tensors back.
"""

import os
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import pydicom
import torch
from monai import transforms
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from gateway.flavor import (
    AiCOCOImageInputDataModel,
    AiCOCOImageOutputDataModel,
    AiCOCOSegmentationOutputStrategy,
    AiImage,
    BaseAiCOCOImageInferenceModel,
    InferAPP,
    TritonSession,
)

SPACING = (2.5, 2.0, 2.0)
ROI = (32, 64, 64)


class SegmentationInferenceModel(BaseAiCOCOImageInferenceModel):
    def __init__(self):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        super().__init__()
        self.formatter = AiCOCOSegmentationOutputStrategy()

    def define_inference_network(self):
        return TritonSession("chest_segmenter_3d")

    def set_categories(self) -> List[Dict[str, Any]]:
        return [
            {"name": "Background", "display": False},
            {"name": "lung", "display": True},
            {"name": "nodule", "display": True},
        ]

    def set_regressions(self) -> None:
        return None

    def data_reader(self, files: Sequence[str], **kwargs) -> Tuple[Dict[str, Any], List[str]]:
        pairs = sorted(
            ((pydicom.dcmread(f), f) for f in files),
            key=lambda pair: float(pair[0].ImagePositionPatient[2]),
        )
        volume = np.stack(
            [
                ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                for ds, _ in pairs
            ]
        ).astype(np.float32)
        first, second = pairs[0][0], pairs[1][0]
        z = float(second.ImagePositionPatient[2]) - float(first.ImagePositionPatient[2])
        affine = torch.diag(torch.tensor([z, *map(float, first.PixelSpacing), 1.0]))
        image = MetaTensor(torch.from_numpy(volume)[None], affine=affine.double())
        return {"image": image, "shape": volume.shape}, [f for _, f in pairs]

    def preprocess(self, data: Dict[str, Any]) -> Dict[str, Any]:
        infer_transform = transforms.Compose(
            [
                transforms.Spacing(pixdim=SPACING, mode="bilinear"),
                transforms.ScaleIntensityRange(
                    a_min=-1350.0, a_max=150.0, b_min=0.0, b_max=1.0, clip=True
                ),
            ]
        )
        return {**data, "x": infer_transform(data["image"])}

    def inference(self, x: Dict[str, Any]) -> Dict[str, Any]:
        with torch.no_grad():
            logits = sliding_window_inference(
                x["x"].as_tensor()[None].to(self.device),
                ROI,
                4,
                self.network,
                overlap=0.5,
                mode="gaussian",
            )
        return {**x, "logits": logits}

    def postprocess(self, out: Dict[str, Any], **kwargs) -> np.ndarray:
        probabilities = MetaTensor(torch.softmax(out["logits"][0], 0).cpu(), affine=out["x"].affine)
        back = transforms.SpatialResample(mode="bilinear")(
            probabilities, dst_affine=out["image"].affine, spatial_size=out["shape"]
        )
        labels = back.argmax(0).numpy()
        return np.stack([labels == c for c in range(3)]).astype(np.uint8)

    def output_formatter(
        self,
        model_out: np.ndarray,
        images: Sequence[AiImage],
        categories: Sequence[Dict[str, Any]],
        **kwargs,
    ) -> AiCOCOImageOutputDataModel:
        return self.formatter(model_out=model_out, images=images, categories=categories)


app = InferAPP(
    infer_function=SegmentationInferenceModel(),
    input_data_model=AiCOCOImageInputDataModel,
    output_data_model=AiCOCOImageOutputDataModel,
)

if __name__ == "__main__":
    app.run(port=int(os.getenv("PORT", 9111)))
