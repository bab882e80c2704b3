from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from gateway.cpu_pool import CpuPool

pytestmark = pytest.mark.anyio

marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


def _where(value: int) -> tuple[str, str, int]:
    return threading.current_thread().name, marker.get(), value * 2


async def test_runs_off_the_event_loop_with_the_callers_context() -> None:
    with CpuPool(1) as pool:
        marker.set("request-1")
        thread, seen, value = await pool.run(_where, 21)
    assert thread.startswith("gateway-cpu")
    assert thread != threading.current_thread().name
    assert seen == "request-1"
    assert value == 42


async def test_the_pool_is_bounded_by_its_size() -> None:
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

    with CpuPool(2) as pool:
        tasks = [asyncio.ensure_future(pool.run(hold)) for _ in range(5)]
        while True:
            with lock:
                if running >= 2:
                    break
            await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*tasks)
    assert peak == 2


async def test_errors_reach_the_caller() -> None:
    def fail() -> None:
        raise ValueError("boom")

    with CpuPool(1) as pool, pytest.raises(ValueError, match="boom"):
        await pool.run(fail)


async def test_two_pools_do_not_touch_each_other() -> None:
    """Closing one app's pool leaves another's working (one module-level pool did not)."""
    with CpuPool(1) as kept:
        with CpuPool(3) as closed:
            assert (await closed.run(_where, 1))[2] == 2
        assert (await kept.run(_where, 2))[2] == 4
        with pytest.raises(RuntimeError):
            await closed.run(_where, 3)


def test_a_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CpuPool(0)
