"""Classification: one 0/1 decision per declared category."""

from __future__ import annotations

from typing import Any

from aicoco.models import AiCOCOOutput
from aicoco.strategies.base import OutputStrategy, Skeleton, binary_vector, single_or_meta


class ClassificationStrategy(OutputStrategy):
    """``model_out``: shape (C,), 0/1 (bool or numbers), C = number of declared categories.

    The positive categories' ids become the ``category_ids`` of the image (one image) or of
    ``meta`` (a series), replacing what the client sent there: those ids must point at this
    document's categories. ``display: false`` does not hide a class decision; it only hides
    drawings (annotations), which classification has none of.
    """

    def format(self, model_out: Any, skeleton: Skeleton) -> AiCOCOOutput:
        positive = binary_vector(model_out, "model_out", len(skeleton.category_specs), "category")
        target = single_or_meta(skeleton)
        target.category_ids = [
            category.id for category, hit in zip(skeleton.categories, positive, strict=False) if hit
        ]
        return skeleton.output()
