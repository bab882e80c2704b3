"""The names ``aicoco`` exports are its public API: adding or removing one is a decision."""

from __future__ import annotations

import aicoco

PUBLIC = [
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


def test_the_public_names_are_pinned() -> None:
    assert aicoco.__all__ == PUBLIC


def test_every_public_name_is_importable() -> None:
    for name in PUBLIC:
        assert getattr(aicoco, name) is not None, name
