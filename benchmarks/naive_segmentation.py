"""FLaVor's segmentation formatting, kept only as the benchmark's baseline.

Per class: ``np.unique`` over the whole volume, then for every label and every slice a
full-slice comparison and a contour trace of that full slice. It uses this library's own
single-slice tracer (``mask_to_polygons``), so that the benchmark compares the two ways of
organising the work, not two tracers, and so that both produce the same document.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aicoco import AiAnnotation, AiCOCOOutput, AiObject
from aicoco.masks import mask_to_polygons
from aicoco.strategies.base import OutputStrategy, Skeleton


class NaiveSegmentationStrategy(OutputStrategy):
    """Same input, same output (ids included, for a given seed) as ``SegmentationStrategy()``."""

    def format(self, model_out: Any, skeleton: Skeleton) -> AiCOCOOutput:
        labels = np.asarray(model_out)
        if labels.ndim == 3:
            labels = labels[:, np.newaxis]
        document = skeleton.output()
        for channel, (spec, category) in enumerate(
            zip(skeleton.category_specs, skeleton.categories, strict=True)
        ):
            if not spec.display:
                continue
            volume = labels[channel]
            for label in np.unique(volume).tolist():
                if label == 0:
                    continue
                slices = []
                for z in range(volume.shape[0]):
                    mask = volume[z] == label
                    if mask.any():
                        slices.append((z, mask_to_polygons(mask)))
                object_id, *annotation_ids = skeleton.ids.take(1 + len(slices))
                document.objects.append(
                    AiObject(id=object_id, category_ids=[category.id], regressions=None)
                )
                for annotation_id, (z, polygons) in zip(annotation_ids, slices, strict=True):
                    document.annotations.append(
                        AiAnnotation(
                            id=annotation_id,
                            image_id=skeleton.images[z].id,
                            object_id=object_id,
                            iscrowd=0,
                            bbox=None,
                            segmentation=polygons,
                        )
                    )
        return document
