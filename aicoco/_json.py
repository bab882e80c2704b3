"""JSON serialisation of values that pydantic does not know, numpy's above all.

Model outputs are numpy arrays, so numpy scalars end up in extras (``confidence``, units,
thresholds) and sometimes in typed fields assigned after validation. FLaVor answers such
documents with a 500; here every dump passes this function as pydantic's ``fallback``, which is
called only for values pydantic cannot serialise itself, so the common path costs nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def as_float64(array: NDArray[Any]) -> NDArray[np.float64]:
    """The values as float64, a narrower float through its shortest decimal text: a float32 0.9
    is written 0.9, not 0.8999999761581421 (the float64 nearest to the float32)."""
    if np.issubdtype(array.dtype, np.floating) and array.dtype.itemsize < 8:
        array = array.astype(str)
    return array.astype(np.float64)


def to_jsonable(value: Any) -> Any:
    """Turn a numpy scalar or array into the equivalent Python value, or refuse clearly."""
    if isinstance(value, np.ndarray | np.floating) and np.issubdtype(value.dtype, np.floating):
        value = as_float64(np.asarray(value))
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} values cannot be written as AiCOCO JSON")
