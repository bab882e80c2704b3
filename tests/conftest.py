"""Fixtures shared by every test area: a real local Triton for end-to-end tests, and the event
loop of async tests.

Async tests are marked ``anyio`` (anyio's pytest plugin, which Starlette brings) and run on
asyncio, the gateway's loop; nothing wraps a coroutine in ``asyncio.run`` by hand. They share one
event loop for the whole session: gRPC's asyncio support binds its poller to the loop it first
serves, and a late event for a closed loop fails whichever test runs next ("Event loop is
closed", seen once in a fresh-clone run when each test had a loop of its own).

``triton`` (session scope) serves ``model_repository/`` for the whole run, so the five example
models load once. Tests that change a repository (drop-in, broken models) start their own server
with ``start_triton`` on a copy (``model_repository_copy``) or on a folder they build. Each server
is stopped at the end of its scope, also when a test fails or the run is interrupted, and the
teardown fails loudly if any of its processes (server or backend stub) is still alive.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.postgres import running_postgres
from triton_local import LocalTriton
from triton_local.process import group_members

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = REPOSITORY_ROOT / "model_repository"

StartTriton = Callable[..., LocalTriton]
SERVER_FIXTURES = frozenset({"triton", "start_triton", "postgres_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts or uses a local Triton (or PostgreSQL) is end-to-end, whatever its
    module says, so ``make unit`` (``-m "not e2e"``) never waits for one."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def own_temp_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The run's own system temp, for this process and the gateways it starts: the settings
    that default to folders there (``JOBS_DIR``, ``RECORDS_DIR``) then hold only this run's
    files, and no job left by another run (or by ``make run``) is taken by a test's gateway."""
    folder = tmp_path_factory.mktemp("system-temp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(folder))
        patch.setenv("TMPDIR", str(folder))
        yield folder


@pytest.fixture(scope="session", autouse=True)
async def one_event_loop(anyio_backend: str) -> AsyncIterator[None]:
    """Holds anyio's test runner, and so its event loop, for the whole session."""
    yield


def _stop_and_check(server: LocalTriton) -> None:
    pgid = server.pid
    server.stop()
    if pgid is not None:
        survivors = group_members(pgid)
        assert not survivors, f"local Triton processes outlived their fixture: {survivors}"


def _start(repository: Path, log_file: Path, **options: Any) -> LocalTriton:
    """Start on free ports with a short poll interval so drop-in tests wait little."""
    options.setdefault("grpc_port", 0)
    options.setdefault("http_port", 0)
    options.setdefault("metrics_port", 0)
    options.setdefault("poll_interval_s", 1)
    return LocalTriton(repository, log_file=log_file, **options).start()


@contextlib.contextmanager
def running_triton(repository: Path, log_file: Path, **options: Any) -> Iterator[LocalTriton]:
    """A local Triton on ``repository`` for a ``with`` block, stopped and checked after it: for
    a module's fixture whose repository the tests change while it runs."""
    server = _start(repository, log_file, **options)
    try:
        yield server
    finally:
        _stop_and_check(server)


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    """A local Triton serving ``model_repository/``; ``.grpc_url`` is where to connect."""
    if not (MODEL_REPOSITORY.is_dir() and any(MODEL_REPOSITORY.iterdir())):
        pytest.fail(f"{MODEL_REPOSITORY} is missing or empty: run `make models` to create it")
    log_file = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    server = _start(MODEL_REPOSITORY, log_file)
    try:
        yield server
    finally:
        _stop_and_check(server)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for the whole run (:mod:`tests.postgres`); tests use their own
    database names or tables' rows, never each other's jobs."""
    with running_postgres() as url:
        yield url


@pytest.fixture
def start_triton(tmp_path: Path) -> Iterator[StartTriton]:
    """Start a local Triton on a repository of the test's own: ``start_triton(path, **options)``.

    Options are ``LocalTriton``'s; ports default to free ones and the poll interval to 1 s. The
    log goes to the test's temp folder. Every server started is stopped after the test.
    """
    started: list[LocalTriton] = []
    numbers = itertools.count()

    def start(repository: Path, **options: Any) -> LocalTriton:
        # A server whose start fails has already stopped itself; only started ones need stopping.
        server = _start(repository, tmp_path / f"tritonserver-{next(numbers)}.log", **options)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in reversed(started):
            _stop_and_check(server)


@pytest.fixture
def model_repository_copy(tmp_path: Path) -> Path:
    """A private copy of ``model_repository/`` that a test may add folders to or break."""
    if not MODEL_REPOSITORY.is_dir():
        pytest.fail(f"{MODEL_REPOSITORY} is missing: run `make models` to create it")
    copy = tmp_path / "model_repository"
    shutil.copytree(MODEL_REPOSITORY, copy)
    return copy
