"""Nanoid-style identifiers: 21 characters of ``A-Za-z0-9_-`` (126 random bits).

The generator is an object, not module state: FLaVor reseeds Python's global ``random``
for reproducible ids, which leaks into every other user of ``random`` and breaks under
concurrency. Here a seed only affects the generator it was given to.
"""

from __future__ import annotations

import random
import secrets

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
ID_LENGTH = 21

# 64 symbols: the low six bits of a uniformly random byte pick one uniformly, with no rejection.
_BYTE_TO_SYMBOL = bytes(ord(ALPHABET[b & 63]) for b in range(256))


class IdGenerator:
    """Makes ids; ``IdGenerator(seed=...)`` makes the same sequence every time.

    Without a seed the bytes come from :mod:`secrets`. With a seed they come from a private
    :class:`random.Random`, which is fine for fixtures and tests and is never used for anything
    that must be unguessable.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._rng = None if seed is None else random.Random(seed)

    def __call__(self) -> str:
        return self.take(1)[0]

    def take(self, count: int) -> list[str]:
        """``count`` ids at once: one call for the random bytes of a whole segmentation."""
        if count < 0:
            raise ValueError(f"expected a non-negative id count, got {count}")
        size = count * ID_LENGTH
        raw = secrets.token_bytes(size) if self._rng is None else self._rng.randbytes(size)
        text = raw.translate(_BYTE_TO_SYMBOL).decode("ascii")
        return [text[i : i + ID_LENGTH] for i in range(0, size, ID_LENGTH)]
