"""AiCOCO: data models, ids and output strategies for medical-imaging model outputs.

A pure library (pydantic, numpy): no web framework, no inference server. Typical use::

    from aicoco import AiImage, CategorySpec, IdGenerator, SegmentationStrategy

    document = SegmentationStrategy()(
        mask,  # (C, H, W) or (C, Z, H, W) integer labels
        images=[AiImage(id="...", file_name="ct.nii.gz", index=0)],
        categories=[CategorySpec(name="lung")],
        ids=IdGenerator(seed=0),
    )
    body = document.to_json_bytes()
"""

from aicoco.errors import AiCOCOFormatError
from aicoco.ids import IdGenerator
from aicoco.models import (
    AiAnnotation,
    AiCategory,
    AiCOCOInput,
    AiCOCOOutput,
    AiImage,
    AiMeta,
    AiObject,
    AiRegression,
    AiRegressionItem,
    AiRLE,
)
from aicoco.specs import CategorySpec, RegressionSpec, build_categories, build_regressions
from aicoco.strategies import (
    ClassificationStrategy,
    DetectionStrategy,
    OutputStrategy,
    RegressionStrategy,
    SegmentationStrategy,
)

__all__ = [
    "AiAnnotation",
    "AiCOCOFormatError",
    "AiCOCOInput",
    "AiCOCOOutput",
    "AiCategory",
    "AiImage",
    "AiMeta",
    "AiObject",
    "AiRLE",
    "AiRegression",
    "AiRegressionItem",
    "CategorySpec",
    "ClassificationStrategy",
    "DetectionStrategy",
    "IdGenerator",
    "OutputStrategy",
    "RegressionSpec",
    "RegressionStrategy",
    "SegmentationStrategy",
    "build_categories",
    "build_regressions",
]
