"""What every output strategy shares: the call signature and the document's skeleton.

A strategy is a callable object so that a pipeline can hold one configured instance (e.g.
``SegmentationStrategy(lossless=True)``) and call it for every request; nothing per request is
stored on it, so one instance serves concurrent requests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from aicoco.errors import AiCOCOFormatError
from aicoco.ids import IdGenerator
from aicoco.models import AiCategory, AiCOCOOutput, AiImage, AiMeta, AiRegression
from aicoco.specs import (
    CategorySpec,
    RegressionSpec,
    build_categories,
    build_regressions,
    category_specs,
    regression_specs,
)


@dataclass(frozen=True)
class Skeleton:
    """The pieces a strategy fills in, prepared once by :meth:`OutputStrategy.__call__`."""

    images: list[AiImage]
    """Copies of the entries (the caller's are never mutated), in numeric ``index`` order."""
    category_specs: list[CategorySpec]
    categories: list[AiCategory]
    """AiCOCO categories: ``categories[i]`` is declared category i, supercategories after."""
    regression_specs: list[RegressionSpec]
    regressions: list[AiRegression]
    meta: AiMeta
    ids: IdGenerator

    def output(self) -> AiCOCOOutput:
        return AiCOCOOutput(
            images=self.images,
            categories=self.categories,
            regressions=self.regressions,
            meta=self.meta,
        )


class OutputStrategy(ABC):
    """Turns one model output into one AiCOCO document."""

    def __call__(
        self,
        model_out: Any,
        *,
        images: Sequence[AiImage],
        categories: Sequence[CategorySpec | Mapping[str, Any]],
        regressions: Sequence[RegressionSpec | Mapping[str, Any]] = (),
        ids: IdGenerator | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> AiCOCOOutput:
        if not images:
            raise AiCOCOFormatError("expected at least one image entry, got none")
        ids = IdGenerator() if ids is None else ids
        cat_specs = category_specs(categories)
        reg_specs = regression_specs(regressions)
        try:
            ai_meta = AiMeta.model_validate(dict(meta or {}))
        except ValidationError as exc:
            raise AiCOCOFormatError(f"expected a valid AiCOCO meta object: {exc}") from exc
        skeleton = Skeleton(
            images=sort_images(images),
            category_specs=cat_specs,
            categories=build_categories(cat_specs, ids),
            regression_specs=reg_specs,
            regressions=build_regressions(reg_specs, ids),
            meta=ai_meta,
            ids=ids,
        )
        return self.format(model_out, skeleton)

    @abstractmethod
    def format(self, model_out: Any, skeleton: Skeleton) -> AiCOCOOutput:
        """Check ``model_out`` and build the document; raise :class:`AiCOCOFormatError`."""


def sort_images(images: Sequence[AiImage]) -> list[AiImage]:
    """Deep copies in numeric ``index`` order (stable, so equal indices keep the input order)."""
    return sorted((image.model_copy(deep=True) for image in images), key=lambda im: im.index)


def as_array(value: Any, name: str) -> NDArray[Any]:
    """``value`` as an ndarray, or an error saying what ``name`` should have been."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise AiCOCOFormatError(
            f"expected `{name}` to be an array, got {type(value).__name__}"
        ) from exc
    if array.dtype == object:
        raise AiCOCOFormatError(
            f"expected `{name}` to be a numeric array, got {type(value).__name__} of mixed values"
        )
    return array


def vector(value: Any, name: str, length: int, each: str) -> NDArray[Any]:
    """A (length,) array; ``each`` says what one value is, for the error message."""
    array = as_array(value, name)
    if array.shape != (length,):
        raise AiCOCOFormatError(
            f"expected `{name}` of shape ({length},), {each}, got shape {array.shape}"
        )
    return array


def binary_vector(value: Any, name: str, length: int, what: str) -> NDArray[np.bool_]:
    """A (length,) 0/1 vector: bool, integers 0/1 or floats exactly 0.0/1.0."""
    array = vector(value, name, length, f"one 0/1 value per declared {what}")
    return binary_values(array, name)


def binary_values(array: NDArray[Any], name: str) -> NDArray[np.bool_]:
    if array.dtype == np.bool_:
        return array
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise AiCOCOFormatError(f"expected `{name}` to hold 0/1 values, got dtype {array.dtype}")
    bad = (array != 0) & (array != 1)
    if bad.any():
        position = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AiCOCOFormatError(
            f"expected `{name}` to hold only 0 or 1 (threshold the scores first), "
            f"got {array[position]!r} at {position}"
        )
    return array.astype(bool)


def single_or_meta(skeleton: Skeleton) -> AiImage | AiMeta:
    """Where image-level results go: the image itself, or ``meta`` for a series."""
    return skeleton.images[0] if len(skeleton.images) == 1 else skeleton.meta
