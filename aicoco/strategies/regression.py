"""Regression: one value per declared regression."""

from __future__ import annotations

from typing import Any

import numpy as np

from aicoco._json import as_float64
from aicoco.errors import AiCOCOFormatError
from aicoco.models import AiCOCOOutput, AiRegressionItem
from aicoco.strategies.base import OutputStrategy, Skeleton, single_or_meta, vector


class RegressionStrategy(OutputStrategy):
    """``model_out``: shape (R,), real numbers, R = number of declared regressions.

    The values go to the ``regressions`` of the image (one image) or of ``meta`` (a series),
    replacing what the client sent there. NaN and infinities are refused: JSON has no such
    numbers and a silent ``null`` would break the document's own schema.
    """

    def format(self, model_out: Any, skeleton: Skeleton) -> AiCOCOOutput:
        values = real_vector(model_out, "model_out", len(skeleton.regression_specs))
        target = single_or_meta(skeleton)
        target.regressions = [
            AiRegressionItem(regression_id=regression.id, value=value)
            for regression, value in zip(skeleton.regressions, values.tolist(), strict=False)
        ]
        return skeleton.output()


def real_vector(value: Any, name: str, length: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A (length,) vector of finite reals, as float64."""
    return finite(vector(value, name, length, "one value per declared regression"), name)


def finite(array: np.ndarray[Any, Any], name: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.iscomplexobj(
        array
    ):
        raise AiCOCOFormatError(f"expected `{name}` to hold real numbers, got dtype {array.dtype}")
    values = as_float64(array)
    bad = ~np.isfinite(values)
    if bad.any():
        position = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AiCOCOFormatError(
            f"expected finite numbers in `{name}`, got {values[position]} at {position}"
        )
    return values
