"""API keys as the gateway stores them: an id and the key's SHA-256, never the key itself.

An entry is ``id:sha256:<64 hex digits>``; ``API_KEYS`` holds entries separated by commas and
``API_KEYS_FILE`` names a file of one entry per line (``#`` starts a comment). Several keys at
once let a client move to a new key before the old one is removed. ``python -m gateway new-key
ID`` makes a key and prints its entry. Standard library only: the settings import it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ENTRY = re.compile(r"^([A-Za-z0-9_.-]{1,64}):sha256:([0-9a-f]{64})$")
KEY_BYTES = 32


@dataclass(frozen=True)
class ApiKey:
    id: str
    """Named in the audit log, so a leaked key can be traced and revoked; not secret."""
    sha256: str

    def matches(self, key: str) -> bool:
        return hmac.compare_digest(self.sha256, digest(key))


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_entries(text: str, separator: str | None) -> tuple[ApiKey, ...]:
    """Entries of ``text`` (split on ``separator``, or on lines); ValueError names a bad one."""
    parts = text.split(separator) if separator else text.splitlines()
    keys = []
    for part in parts:
        entry = part.split("#", 1)[0].strip() if separator is None else part.strip()
        if not entry:
            continue
        match = _ENTRY.match(entry)
        if match is None:
            shown = entry if len(entry) < 20 else entry[:12] + "..."
            raise ValueError(
                f"{shown!r} is not an API key entry: expected id:sha256:<64 lowercase hex digits> "
                "(python -m gateway new-key ID makes one)"
            )
        keys.append(ApiKey(match.group(1), match.group(2)))
    if repeated := repeated_ids(keys):
        raise ValueError(f"API key ids must be unique, repeated: {', '.join(repeated)}")
    return tuple(keys)


def repeated_ids(keys: Sequence[ApiKey]) -> list[str]:
    """The ids more than one key has: each must name one key in the audit log."""
    ids = [key.id for key in keys]
    return sorted({i for i in ids if ids.count(i) > 1})


def new_key(key_id: str) -> tuple[str, str]:
    """A fresh random key and its entry."""
    if not _ID.match(key_id):
        raise ValueError(f"{key_id!r} is not a key id: use 1 to 64 letters, digits, '.', '_', '-'")
    key = secrets.token_urlsafe(KEY_BYTES)
    return key, f"{key_id}:sha256:{digest(key)}"
