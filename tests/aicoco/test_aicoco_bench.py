"""The benchmark compares like with like: the naive baseline writes the very same document.

No timing here (timed assertions belong to ``make bench``); only what makes its ratios honest.
"""

from __future__ import annotations

import numpy as np
import pytest

from aicoco import AiImage, IdGenerator, SegmentationStrategy
from benchmarks.__main__ import registry
from benchmarks.aicoco_bench import instance_volume, semantic_volume
from benchmarks.naive_segmentation import NaiveSegmentationStrategy


@pytest.mark.parametrize(
    "labels",
    [
        semantic_volume((12, 48, 40), classes=6, seed=1),
        instance_volume((12, 92, 88), count=50, seed=2),
    ],
    ids=["semantic", "instance"],
)
def test_naive_baseline_writes_the_same_document(labels: np.ndarray) -> None:
    images = [AiImage(id=f"s{z}", file_name=f"{z}.dcm", index=z) for z in range(labels.shape[1])]
    categories = [{"name": f"c{c}"} for c in range(labels.shape[0])]
    documents = [
        strategy(labels, images=images, categories=categories, ids=IdGenerator(seed=4))
        for strategy in (SegmentationStrategy(), NaiveSegmentationStrategy())
    ]
    assert documents[0].objects, "the synthetic volume should not be empty"
    assert documents[0].to_json_bytes() == documents[1].to_json_bytes()


def test_instance_volume_has_every_label() -> None:
    labels = instance_volume((12, 92, 88), count=50, seed=2)
    assert np.array_equal(np.unique(labels), np.arange(51))


def test_aicoco_benchmark_is_registered() -> None:
    assert "aicoco" in registry()
