"""The jobs' loops poll the store (a job may come from another gateway) but are woken early by
what happens in this process: a submission, a job that ended."""

from __future__ import annotations

import asyncio
import contextlib


async def nap(wakeup: asyncio.Event, seconds: float) -> None:
    """Until ``wakeup`` is set or ``seconds`` pass, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wakeup.wait(), seconds)
