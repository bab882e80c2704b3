"""Shared fixtures and checks of the aicoco tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aicoco import AiCOCOOutput, AiImage, AiMeta, AiObject, IdGenerator


@pytest.fixture
def ids() -> IdGenerator:
    return IdGenerator(seed=7)


@pytest.fixture
def make_images() -> Callable[[int], list[AiImage]]:
    def make(count: int) -> list[AiImage]:
        return [AiImage(id=f"image-{i:03d}", file_name=f"{i}.dcm", index=i) for i in range(count)]

    return make


Check = Callable[[AiCOCOOutput], None]


@pytest.fixture
def consistent() -> Check:
    return _assert_consistent


def _assert_consistent(document: AiCOCOOutput) -> None:
    """Every id a document refers to is defined in it, and every defined id is unique."""
    image_ids = [image.id for image in document.images]
    object_ids = [obj.id for obj in document.objects]
    category_ids = [category.id for category in document.categories]
    regression_ids = [regression.id for regression in document.regressions]
    annotation_ids = [annotation.id for annotation in document.annotations]
    for defined in (image_ids, object_ids, category_ids, regression_ids, annotation_ids):
        assert len(defined) == len(set(defined))
    for annotation in document.annotations:
        assert annotation.image_id in image_ids
        assert annotation.object_id in object_ids
    holders: list[AiImage | AiObject | AiMeta] = [
        *document.images,
        *document.objects,
        document.meta,
    ]
    for holder in holders:
        assert set(holder.category_ids or []) <= set(category_ids)
        assert {item.regression_id for item in holder.regressions or []} <= set(regression_ids)
    for category in document.categories:
        assert category.supercategory_id in (None, *category_ids)
