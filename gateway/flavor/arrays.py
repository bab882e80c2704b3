"""The caller's arrays in and out of a network handle, whatever library made them, without
importing that library: a FLaVor script that calls its network on a torch tensor (as
``self.network(x)`` or through MONAI's ``sliding_window_inference``) gets a torch tensor back.

In: an object with ``__dlpack__`` is read through DLPack (``numpy.from_dlpack``) once it is on
the host and out of autograd (its own ``detach()`` and ``cpu()``, when it has them); anything
else through ``numpy.asarray`` (``__array__``, lists). Out: a numpy answer is given back as the
caller's type by the ``from_dlpack`` of the module that defines that type (``torch.from_dlpack``
for a tensor), then put on the caller's device with the caller's dtype by its ``to()``. A numpy
caller gets numpy; a library with no ``from_dlpack`` gets numpy too.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def to_numpy(value: Any, dtype: np.dtype[Any]) -> np.ndarray:
    """``value`` as a host numpy array of ``dtype`` (the model's input type)."""
    if isinstance(value, np.ndarray):
        return value.astype(dtype, copy=False)
    if hasattr(value, "__dlpack__"):
        for step in ("detach", "cpu"):
            method = getattr(value, step, None)
            if callable(method):
                value = method()
        return np.from_dlpack(value).astype(dtype, copy=False)
    return np.asarray(value, dtype=dtype)


def like(result: np.ndarray, template: Any) -> Any:
    """``result`` in ``template``'s library, on its device, with its dtype where it is a
    floating one (a model answers float32 to a float16 caller as float16)."""
    if isinstance(template, np.ndarray) or not hasattr(template, "__dlpack__"):
        return result
    library = sys.modules.get(type(template).__module__.partition(".")[0])
    from_dlpack = getattr(library, "from_dlpack", None)
    if from_dlpack is None:
        return result
    converted = from_dlpack(np.ascontiguousarray(result))
    to = getattr(converted, "to", None)
    if to is None:
        return converted
    device = getattr(template, "device", None)
    dtype = getattr(template, "dtype", None)
    floating = getattr(dtype, "is_floating_point", False)
    return to(device=device, dtype=dtype if floating else None)
