"""The one error type of the library.

A pipeline hands a model's raw output to a strategy; when that output does not have the shape or
values the strategy needs, the caller (and, through the gateway, the model's author) must learn
what was expected, not just that something failed. The gateway maps this error to a stable API
code, so it carries one too.
"""

from __future__ import annotations

from typing import ClassVar


class AiCOCOFormatError(ValueError):
    """A model output, a declaration or a document that cannot be turned into valid AiCOCO.

    The message always names what was expected (a shape, a value range, a key) and what was
    found, so that it can be shown to the model's author as is.
    """

    code: ClassVar[str] = "aicoco_format_error"
