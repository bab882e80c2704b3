"""The JSON text of a request's fields, parsed within limits a hostile client cannot get past.

Python's ``json`` module has three ways to fail that are not ``JSONDecodeError`` and would
otherwise reach the client as a 500: nesting deeper than the interpreter's recursion limit
(``RecursionError``), an integer longer than 4,300 digits (``ValueError`` from ``int``) and
nothing at all for a lone surrogate escape (``"\\ud800"`` parses into a string that cannot be
encoded as UTF-8, so the failure comes later, anywhere the text is written out). RFC 8259
allows implementations to limit nesting depth and number range (section 9) and leaves
unpaired surrogates' behaviour unpredictable (section 8.2); here each is a 400 with its own
code, checked while or right after parsing, so nothing deeper in the gateway ever sees such a value.

Limits: :data:`MAX_DEPTH` levels of arrays and objects (AiCOCO entries need four; ``meta``
rarely more than a few), numbers of at most :data:`MAX_NUMBER_CHARS` characters, finite
floats only (``NaN``, ``Infinity`` and ``1e999`` are not JSON numbers the output can carry).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from gateway.errors import InvalidJSONText, JSONNumberTooLarge, JSONTooDeep, MalformedJSON

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 64

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def parse_field(name: str, text: str) -> Any:
    """``json.loads(text)`` for the field ``name``, or the 400 that says what to change."""
    try:
        value = json.loads(
            text,
            parse_int=lambda raw: _integer(name, raw),
            parse_float=lambda raw: _float(name, raw),
            parse_constant=lambda raw: _constant(name, raw),
        )
    except json.JSONDecodeError as exc:
        raise MalformedJSON(
            f"the field {name!r} is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}); every field besides 'files' holds JSON, e.g. a string is "
            f'sent as "text" with the quotes',
            details={"field": name, "line": exc.lineno, "column": exc.colno},
        ) from None
    except RecursionError:
        # The C scanner gives up near the interpreter's recursion limit, long before the stack
        # is at risk: a 100,000-deep text fails here at once.
        raise _too_deep(name, None) from None
    # Fewer brackets than the limit cannot nest past it; most fields skip the walk.
    deep = text.count("[") + text.count("{") > MAX_DEPTH
    surrogates = _SURROGATE_ESCAPE.search(text) is not None
    if deep or surrogates:
        _walk(name, value, check_text=surrogates)
    return value


def _walk(name: str, value: Any, *, check_text: bool) -> None:
    """One iterative pass: the nesting depth, and strings (keys too) holding a surrogate that
    is not half of a pair."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if check_text:
                _encodable(name, item)
            continue
        if not isinstance(item, list | dict):
            continue
        depth += 1
        if depth > MAX_DEPTH:
            raise _too_deep(name, depth)
        if isinstance(item, list):
            pending.extend((member, depth) for member in item)
            continue
        for key, member in item.items():
            if check_text:
                _encodable(name, key)
            pending.append((member, depth))


def _too_deep(name: str, depth: int | None) -> JSONTooDeep:
    found = f"{depth} levels" if depth is not None else "too"
    return JSONTooDeep(
        f"the field {name!r} nests arrays and objects {found} deep; at most {MAX_DEPTH} "
        f"levels are accepted",
        details={"field": name, "limit": MAX_DEPTH},
    )


def _integer(name: str, raw: str) -> int:
    if len(raw) > MAX_NUMBER_CHARS:
        raise _too_large(name, raw)
    return int(raw)


def _float(name: str, raw: str) -> float:
    value = float(raw)
    if len(raw) > MAX_NUMBER_CHARS or not math.isfinite(value):
        raise _too_large(name, raw)
    return value


def _constant(name: str, raw: str) -> Any:
    raise MalformedJSON(
        f"the field {name!r} holds {raw}, which is not a JSON number; send a finite number or null",
        details={"field": name, "value": raw},
    )


def _too_large(name: str, raw: str) -> JSONNumberTooLarge:
    shown = raw if len(raw) <= 24 else f"{raw[:12]}...{raw[-8:]} ({len(raw)} characters)"
    return JSONNumberTooLarge(
        f"the field {name!r} holds the number {shown}, beyond what the gateway accepts: at most "
        f"{MAX_NUMBER_CHARS} characters and a finite value (a 64-bit float)",
        details={"field": name, "limit": MAX_NUMBER_CHARS},
    )


def _encodable(name: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        raise InvalidJSONText(
            f"the field {name!r} holds the escape \\u{code:04x}, half of a UTF-16 surrogate "
            f"pair without its other half, which is not a character; send the text as UTF-8 "
            f"or escape both halves of the pair",
            details={"field": name, "code_point": f"U+{code:04X}"},
        ) from None
