"""Job ids and the ids of the gateway processes that run jobs.

A job id is 128 random bits (22 URL-safe characters): knowing one job's id tells nothing of
another's, so an id is never guessed, only given. Routes check the shape before touching the
store, so a path like ``../x`` is a 404 without a query.
"""

from __future__ import annotations

import os
import re
import secrets
import socket

_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")


def new_job_id() -> str:
    return secrets.token_urlsafe(16)


def is_job_id(text: str) -> bool:
    return bool(_JOB_ID.match(text))


def runner_id() -> str:
    """This process, as a running job's row names it: host, pid and a random part, so a
    restarted process (same host, maybe the same pid in a container) is a new runner."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
