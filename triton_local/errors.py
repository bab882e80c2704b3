"""Errors of the local Triton launcher, kept apart so every module can raise them."""

from __future__ import annotations


class TritonStartError(RuntimeError):
    """The server could not be started or did not become ready; the message is Triton's reason."""


class ModelLoadError(TritonStartError):
    """A model in the repository failed to load; the message carries Triton's own reason."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model {model!r} failed to load: {reason}")
        self.model = model
        self.reason = reason
