"""Start the server in its own process group and make sure nothing of it outlives us.

The server forks one Python stub per model instance. Starting it in a new session makes the
server and its stubs one process group that can be signalled as a whole, and keeps a terminal's
Ctrl-C away from it so that the launcher decides the shutdown order. ``PR_SET_PDEATHSIG`` makes
the kernel send SIGTERM to the server if the launching thread dies without cleaning up (SIGKILL,
a crash); the stubs watch their parent and exit when it is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1
# How long to wait for SIGKILLed processes to disappear.
KILL_WAIT_S = 5.0


def _parent_death_signal(any_thread: bool) -> Callable[[], None] | None:
    """A preexec function binding the child's life to this thread, or None where unavailable.

    The kernel sends the signal when the *thread* that forked exits, so it is only armed from the
    main thread, or from a thread the caller vouches lives as long as the server
    (``any_thread``: the supervisor's): a server started from a worker thread of a pool would
    otherwise die with that worker. libc is resolved here, before the fork, so the child only
    makes one call.
    """
    if not any_thread and threading.current_thread() is not threading.main_thread():
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # The parent died before prctl took effect.
            os._exit(1)

    return arm


def spawn(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log: IO[bytes],
    any_thread: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``command`` as the leader of a new process group, output appended to ``log``."""
    return subprocess.Popen(
        list(command),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_parent_death_signal(any_thread),
    )


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, read from /proc."""
    return [pid for pid, _, group in _live_processes() if group == pgid]


def children_of(parent: int) -> list[int]:
    """Live (non-zombie) child processes of ``parent``, read from /proc."""
    return [pid for pid, ppid, _ in _live_processes() if ppid == parent]


def _live_processes() -> Iterator[tuple[int, int, int]]:
    """``(pid, ppid, pgrp)`` of every live process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # The process exited while we looked.
            continue
        # Fields after the parenthesised command name: state ppid pgrp ...
        state, ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if state not in {"Z", "X"}:
            yield int(entry.name), int(ppid), int(pgrp)


def stop_group(process: subprocess.Popen[bytes], *, timeout_s: float) -> list[int]:
    """Stop the server gracefully, then make sure no process of its group is left.

    SIGTERM to the server alone lets it unload its models, which ends the stubs in order; what
    has not exited after ``timeout_s`` gets SIGKILL, the whole group. Stubs are the server's
    children, not ours, so their end is awaited by watching the group in /proc. Returns the pids
    that survived even SIGKILL (empty unless something is badly wrong, e.g. stuck in the kernel).
    """
    pgid = process.pid
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(pgid)
            process.wait()
    if _wait_until_empty(pgid, timeout_s):
        return []
    _kill_group(pgid)
    _wait_until_empty(pgid, KILL_WAIT_S)
    return group_members(pgid)


def kill_group(process: subprocess.Popen[bytes]) -> list[int]:
    """SIGKILL what is left of a group whose leader died unexpectedly, at once: its stubs
    (hundreds of MiB each) would otherwise linger, and nothing orderly is left to wait for.
    Reaps the leader; returns the pids that survived (empty unless something is badly wrong)."""
    _kill_group(process.pid)
    process.wait()
    _wait_until_empty(process.pid, KILL_WAIT_S)
    return group_members(process.pid)


def _wait_until_empty(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
