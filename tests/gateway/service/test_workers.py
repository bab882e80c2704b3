from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator

import pytest

from gateway import workers

marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


@pytest.fixture(autouse=True)
def fresh_pool() -> Iterator[None]:
    workers.shutdown()
    yield
    workers.shutdown()


def _where(value: int) -> tuple[str, str, int]:
    return threading.current_thread().name, marker.get(), value * 2


def test_runs_off_the_event_loop_with_the_callers_context() -> None:
    async def main() -> tuple[str, str, int]:
        marker.set("request-1")
        return await workers.run_cpu(_where, 21)

    thread, seen, value = asyncio.run(main())
    assert thread.startswith("gateway-cpu")
    assert thread != threading.current_thread().name
    assert seen == "request-1"
    assert value == 42


def test_the_pool_is_bounded_by_configure() -> None:
    workers.configure(2)
    running = 0
    peak = 0
    lock = threading.Lock()
    release = threading.Event()

    def hold() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait()
        with lock:
            running -= 1

    async def main() -> None:
        tasks = [asyncio.ensure_future(workers.run_cpu(hold)) for _ in range(5)]
        while True:
            with lock:
                if running >= 2:
                    break
            await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert peak == 2


def test_errors_reach_the_caller() -> None:
    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        asyncio.run(workers.run_cpu(fail))


def test_a_pool_is_made_again_after_shutdown() -> None:
    workers.configure(1)
    assert asyncio.run(workers.run_cpu(_where, 1))[2] == 2
    workers.shutdown()
    assert asyncio.run(workers.run_cpu(_where, 2))[2] == 4


def test_configure_rejects_zero() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        workers.configure(0)
