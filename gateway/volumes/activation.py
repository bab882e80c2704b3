"""The blend's activation over its channels (axis 0), in place, a block of slices at a time:
what a MONAI user's ``torch.softmax(out, 0)`` or ``torch.sigmoid(out)`` does, with temporaries
of a few slices instead of a copy of the volume."""

from __future__ import annotations

import numpy as np

from gateway.volumes.grid import Float32Array

BLOCK_SLICES = 8


def activate(values: Float32Array, activation: str) -> None:
    """Softmax over the channels (axis 0) or a sigmoid, in place, a block of slices at a time."""
    if activation == "none":
        return
    for start in range(0, values.shape[1], BLOCK_SLICES):
        block = values[:, start : start + BLOCK_SLICES]
        if activation == "sigmoid":
            np.negative(block, out=block)
            np.exp(block, out=block)
            block += np.float32(1.0)
            np.reciprocal(block, out=block)
            continue
        block -= block.max(axis=0, keepdims=True)
        np.exp(block, out=block)
        block /= block.sum(axis=0, keepdims=True)
