"""The few calls of Triton's HTTP API the launcher needs, on the standard library alone.

The launcher must not depend on tritonclient (the stub imports this package too), and it only
asks two questions: is the server up, and what happened to each model.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

READY = "READY"


@dataclass(frozen=True)
class ModelStatus:
    """One entry of Triton's repository index.

    ``state`` is READY, LOADING, UNLOADING, UNAVAILABLE, or empty for a folder Triton could not
    read; ``reason`` is Triton's own text for an UNAVAILABLE model (the load error, or
    "unloaded"). Folders that failed before loading started are missing here: see
    ``LocalTriton.model_errors``.
    """

    name: str
    version: str
    state: str
    reason: str


def server_ready(http_url: str, *, timeout_s: float = 1.0) -> bool:
    """True once the server answers /v2/health/ready with 200."""
    try:
        with urllib.request.urlopen(f"{http_url}/v2/health/ready", timeout=timeout_s) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def repository_index(http_url: str, *, timeout_s: float = 5.0) -> list[ModelStatus]:
    """Every model folder of the repository with its load state and Triton's reason."""
    request = urllib.request.Request(
        f"{http_url}/v2/repository/index",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as reply:
        entries = json.load(reply)
    return [
        ModelStatus(
            name=str(entry["name"]),
            version=str(entry.get("version", "")),
            state=str(entry.get("state", "")),
            reason=str(entry.get("reason", "")),
        )
        for entry in entries
    ]
