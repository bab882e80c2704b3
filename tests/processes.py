"""Stopping the servers the tests start (Orthanc, PostgreSQL): politely, then for sure."""

from __future__ import annotations

import subprocess

STOP_TIMEOUT_S = 30.0


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not exited after :data:`STOP_TIMEOUT_S`."""
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
