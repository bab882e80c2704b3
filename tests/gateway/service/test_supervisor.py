"""The parent of several gateway workers refuses to restart-loop a worker that cannot start."""

from __future__ import annotations

import os

import pytest

from gateway import server
from gateway.metrics import MULTIPROCESS_DIR
from gateway.settings import Settings
from triton_local import free_port


def crash_at_start(settings: Settings, sockets: object) -> None:
    """A worker that fails as a misconfigured one does: at once, with a status."""
    raise SystemExit(3)


def test_a_worker_that_dies_at_start_stops_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "_worker", crash_at_start)
    supervisor = server._Supervisor(Settings(port=free_port(), workers=2))
    with pytest.raises(SystemExit, match=r"exited with status 3 within 10 s of starting"):
        supervisor.run()
    assert MULTIPROCESS_DIR not in os.environ
