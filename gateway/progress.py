"""How far a long request has come: the units of its work done out of the total (a volumetric
model's patches), for whoever watches it.

A pipeline reports through :func:`current`, which is the running request's
:class:`Progress` (the pipeline's stages run inside :func:`scope`), so a pipeline needs no
handle on the request. Each report is a debug log line and, through the observer the
:class:`~gateway.runner.Run` sets, the ``gateway_progress_units`` counter; a job API reads the
same object while the request runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

log = logging.getLogger("gateway.progress")

ProgressObserver = Callable[[str, int], None]
"""Called with the unit (``patches``) and how many more are done."""


@dataclass
class Progress:
    stage: str = ""
    """The stage running now (``read``, ``preprocess``, ``triton``...; a job's ``retrieve``)."""
    unit: str = ""
    done: int = 0
    total: int = 0
    observer: ProgressObserver | None = None

    def start(self, unit: str, total: int) -> None:
        """A new piece of work of ``total`` units begins (a request may hold several)."""
        self.unit, self.done, self.total = unit, 0, total
        log.debug("%s: 0 of %d", unit, total)

    def advance(self, units: int) -> None:
        self.done += units
        log.debug("%s: %d of %d", self.unit, self.done, self.total)
        if self.observer is not None:
            self.observer(self.unit, units)


_current: ContextVar[Progress | None] = ContextVar("progress", default=None)


@contextmanager
def scope(progress: Progress) -> Iterator[None]:
    token = _current.set(progress)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> Progress:
    """The running request's progress; outside a request (a pipeline called directly), one
    nobody reads."""
    found = _current.get()
    return found if found is not None else Progress()
