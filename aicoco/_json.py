"""JSON serialisation of values that pydantic does not know, numpy's above all.

Model outputs are numpy arrays, so numpy scalars end up in extras (``confidence``, units,
thresholds) and sometimes in typed fields assigned after validation. The reference answers such
documents with a 500; here every dump passes this function as pydantic's ``fallback``, which is
called only for values pydantic cannot serialise itself, so the common path costs nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Turn a numpy scalar or array into the equivalent Python value, or refuse clearly."""
    narrow_float = isinstance(value, np.ndarray | np.floating) and (
        np.issubdtype(value.dtype, np.floating) and value.dtype.itemsize < 8
    )
    if narrow_float:
        # The shortest decimal that reads back as the same float32: 0.9, not 0.8999999761581421.
        value = np.asarray(value).astype(str).astype(np.float64)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} values cannot be written as AiCOCO JSON")
