"""Where job state lives: one ``jobs`` table, in SQLite under ``JOBS_DIR`` (one gateway, the
default) or in PostgreSQL (``JOBS_DATABASE_URL``, several gateways), written by the same SQL.

Why SQL for both: every change of a job is one statement, atomic in either database, so what
holds for one holds for the other. Both connections run in autocommit mode; nothing here needs a
transaction of several statements.

- **Run exactly once.** :meth:`JobStore.claim` turns the oldest queued job into a running one
  with a single ``UPDATE ... WHERE state = 'queued' RETURNING``. Two gateways that pick the same
  row race for it: SQLite runs one writer at a time; PostgreSQL makes the second wait for the
  first's row lock and then re-checks ``state = 'queued'``, which no longer holds, so it gets
  nothing (``FOR UPDATE SKIP LOCKED`` lets it take the next row instead of waiting).
- **A claim is a lease.** The running gateway renews ``lease_until`` with each progress report
  (:meth:`report`); a gateway killed mid-job stops renewing, and :meth:`expire_leases`, run by
  every gateway, queues the job again once, then fails it with ``job_interrupted``.
- **Nothing is half-written.** The submitter inserts the row only once the job's files are in
  place, and the runner marks a job succeeded only once its result file is renamed into place
  (:mod:`gateway.jobs.files`), so a kill between any two steps leaves a row that still tells
  the truth, and at worst a folder with no row, which the upkeep removes.

Calls block: :class:`JobStore` runs them on one thread of its own, in order, never on the event
loop (a PostgreSQL round trip, a SQLite write waiting for another process's lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import JobStoreUnavailable

logger = logging.getLogger("gateway.jobs")

T = TypeVar("T")

SQLITE_FILE = "jobs.sqlite3"


class State(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ENDED = (State.SUCCEEDED, State.FAILED, State.CANCELLED)


class Kind(enum.StrEnum):
    FILES = "files"
    """Uploaded files, as ``POST /invocations`` takes them."""
    DICOMWEB = "dicomweb"
    """A study in the PACS, as ``POST /dicomweb/invocations`` takes it."""


class CallbackState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class Job:
    """One row of the ``jobs`` table."""

    id: str
    owner: str
    """The API key id that submitted it (``-`` without keys): only that key sees it."""
    model: str
    kind: Kind
    request: str
    """What was submitted, as JSON (:mod:`gateway.jobs.requests`)."""
    state: State
    created_at: float
    stage: str | None = None
    unit: str | None = None
    done: int = 0
    total: int = 0
    attempts: int = 0
    runner: str | None = None
    """The gateway process running it (:func:`gateway.jobs.runner_id`) while it runs."""
    lease_until: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    """A failed job's error, as JSON: its HTTP status and the error object."""
    result_type: str | None = None
    result_name: str | None = None
    result_bytes: int | None = None
    callback: str | None = None
    callback_state: CallbackState | None = None
    callback_attempts: int = 0
    callback_due: float | None = None
    """When the callback is next to be tried; None once delivered or given up."""

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def error_object(self) -> dict[str, Any] | None:
        return json.loads(self.error) if self.error else None


COLUMNS = tuple(f.name for f in fields(Job))
_SELECT = ", ".join(COLUMNS)
_ENDED = "('succeeded', 'failed', 'cancelled')"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    stage TEXT,
    unit TEXT,
    done BIGINT NOT NULL DEFAULT 0,
    total BIGINT NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    runner TEXT,
    lease_until DOUBLE PRECISION,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    error TEXT,
    result_type TEXT,
    result_name TEXT,
    result_bytes BIGINT,
    callback TEXT,
    callback_state TEXT,
    callback_attempts INTEGER NOT NULL DEFAULT 0,
    callback_due DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs (state, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_callback_due ON jobs (callback_due);
"""


class Database:
    """One connection and its SQL dialect; every method is a single autocommit statement."""

    placeholder = "?"
    skip_locked = ""

    def __init__(self, connect: Callable[[], Any], errors: tuple[type[Exception], ...]) -> None:
        self._connect = connect
        self.errors = errors
        self._connection: Any = None

    def connection(self) -> Any:
        if self._connection is None:
            self._connection = self._connect()
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._connection.execute(statement)
        return self._connection

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.placeholder != "?":
            sql = sql.replace("?", self.placeholder)
        try:
            cursor = self.connection().execute(sql, tuple(parameters))
            return list(cursor.fetchall()) if cursor.description else []
        except self.errors:
            self.close()  # a broken connection is made again by the next call
            raise

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(*self.errors):
                self._connection.close()
            self._connection = None


class SqliteDatabase(Database):
    def __init__(self, path: Path) -> None:
        def connect() -> sqlite3.Connection:
            # WAL: readers never wait for the writer; several gateway processes (WORKERS) share
            # the file, each write waiting its turn for up to the busy timeout.
            connection = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            return connection

        super().__init__(connect, (sqlite3.Error,))


class PostgresDatabase(Database):
    placeholder = "%s"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str) -> None:
        import psycopg

        def connect() -> Any:
            return psycopg.connect(url, autocommit=True, connect_timeout=10)

        super().__init__(connect, (psycopg.Error,))


def database_of(url: str, jobs_dir: Path) -> Database:
    if url:
        return PostgresDatabase(url)
    jobs_dir.mkdir(parents=True, exist_ok=True)
    return SqliteDatabase(jobs_dir / SQLITE_FILE)


def _job(row: Sequence[Any]) -> Job:
    values = dict(zip(COLUMNS, row, strict=True))
    values["kind"] = Kind(values["kind"])
    values["state"] = State(values["state"])
    if values["callback_state"] is not None:
        values["callback_state"] = CallbackState(values["callback_state"])
    return Job(**values)


class JobStore:
    """The ``jobs`` table, each call on the store's own thread."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs-store")

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, fn, *args)
        except self._db.errors as exc:
            logger.warning("the jobs' store failed: %s", exc)
            raise JobStoreUnavailable(
                "the jobs' store cannot be used now; retry shortly",
                details={"reason": type(exc).__name__},
            ) from None

    def close(self) -> None:
        self._thread.submit(self._db.close).result()
        self._thread.shutdown()

    # What the routes ask.

    async def add(self, job: Job, max_queued: int) -> bool:
        """Insert a queued job unless ``max_queued`` jobs already wait (then False)."""
        values = [getattr(job, name) for name in COLUMNS]
        sql = (
            f"INSERT INTO jobs ({_SELECT}) SELECT {', '.join('?' * len(COLUMNS))} "
            "WHERE (SELECT count(*) FROM jobs WHERE state = 'queued') < ? RETURNING id"
        )
        return bool(await self._call(self._db.execute, sql, [*values, max_queued]))

    async def get(self, job_id: str) -> Job | None:
        rows = await self._call(
            self._db.execute, f"SELECT {_SELECT} FROM jobs WHERE id = ?", [job_id]
        )
        return _job(rows[0]) if rows else None

    async def position(self, job: Job) -> int:
        """How many queued jobs run before this one (0: it is next)."""
        rows = await self._call(
            self._db.execute,
            "SELECT count(*) FROM jobs WHERE state = 'queued' AND "
            "(created_at < ? OR (created_at = ? AND id < ?))",
            [job.created_at, job.created_at, job.id],
        )
        return int(rows[0][0])

    async def cancel(self, job_id: str, now: float) -> Job | None:
        """Cancel a queued or running job; the job as it is now, or None if it had ended.

        Its ``runner`` says which gateway ran it (None: it was still queued)."""
        rows = await self._call(
            self._db.execute,
            "UPDATE jobs SET state = 'cancelled', finished_at = ?, lease_until = NULL, "
            "callback_due = CASE WHEN callback IS NULL THEN NULL ELSE ? END, "
            "callback_state = CASE WHEN callback IS NULL THEN NULL ELSE 'pending' END "
            f"WHERE id = ? AND state IN ('queued', 'running') RETURNING {_SELECT}",
            [now, now, job_id],
        )
        return _job(rows[0]) if rows else None

    async def delete(self, job_id: str) -> bool:
        """Remove an ended job's row (its files go next)."""
        rows = await self._call(
            self._db.execute,
            f"DELETE FROM jobs WHERE id = ? AND state IN {_ENDED} RETURNING id",
            [job_id],
        )
        return bool(rows)

    # What the workers do.

    async def any_queued(self) -> bool:
        rows = await self._call(
            self._db.execute, "SELECT id FROM jobs WHERE state = 'queued' LIMIT 1"
        )
        return bool(rows)

    async def claim(self, runner: str, lease_s: float) -> Job | None:
        """The oldest queued job, now running here; None when another gateway took it first or
        none is queued."""
        now = time.time()
        rows = await self._call(
            self._db.execute,
            "UPDATE jobs SET state = 'running', runner = ?, attempts = attempts + 1, "
            "lease_until = ?, started_at = ?, stage = 'starting', unit = NULL, done = 0, "
            "total = 0 WHERE id = (SELECT id FROM jobs WHERE state = 'queued' "
            f"ORDER BY created_at, id LIMIT 1{self._db.skip_locked}) AND state = 'queued' "
            f"RETURNING {_SELECT}",
            [runner, now + lease_s, now],
        )
        return _job(rows[0]) if rows else None

    async def report(
        self,
        job_id: str,
        runner: str,
        lease_s: float,
        stage: str | None,
        unit: str | None,
        done: int,
        total: int,
    ) -> bool:
        """Progress, and the lease renewed; False when the job is no longer this runner's
        (cancelled, or its lease ran out and another gateway took it)."""
        rows = await self._call(
            self._db.execute,
            "UPDATE jobs SET lease_until = ?, stage = ?, unit = ?, done = ?, total = ? "
            "WHERE id = ? AND runner = ? AND state = 'running' RETURNING id",
            [time.time() + lease_s, stage, unit or None, done, total, job_id, runner],
        )
        return bool(rows)

    async def finish(
        self,
        job_id: str,
        runner: str,
        state: State,
        *,
        error: dict[str, Any] | None = None,
        result_type: str | None = None,
        result_name: str | None = None,
        result_bytes: int | None = None,
    ) -> bool:
        """The job ended here; False when it was no longer this runner's to end."""
        now = time.time()
        rows = await self._call(
            self._db.execute,
            "UPDATE jobs SET state = ?, finished_at = ?, lease_until = NULL, stage = NULL, "
            "error = ?, result_type = ?, result_name = ?, result_bytes = ?, "
            "callback_due = CASE WHEN callback IS NULL THEN NULL ELSE ? END, "
            "callback_state = CASE WHEN callback IS NULL THEN NULL ELSE 'pending' END "
            "WHERE id = ? AND runner = ? AND state = 'running' RETURNING id",
            [
                state.value,
                now,
                json.dumps(error) if error is not None else None,
                result_type,
                result_name,
                result_bytes,
                now,
                job_id,
                runner,
            ],
        )
        return bool(rows)

    async def release(self, job_id: str, runner: str) -> None:
        """This gateway stops (SIGTERM: a restart, a rolling update) without finishing the job:
        its lease ends now, so the next upkeep, any gateway's, queues it again; and the run does
        not count, since it was not the job that stopped it (a crash, which may be the job's
        doing, counts)."""
        await self._call(
            self._db.execute,
            "UPDATE jobs SET lease_until = 0, attempts = attempts - 1 "
            "WHERE id = ? AND runner = ? AND state = 'running'",
            [job_id, runner],
        )

    # What the upkeep does.

    async def expire_leases(self, error: dict[str, Any]) -> tuple[list[str], list[str]]:
        """Running jobs whose gateway stopped renewing their lease: those run once are queued
        again, the others failed with ``error``. Their ids: (queued again, failed)."""
        now = time.time()
        queued = await self._call(
            self._db.execute,
            "UPDATE jobs SET state = 'queued', runner = NULL, lease_until = NULL, "
            "stage = NULL, unit = NULL, done = 0, total = 0 "
            "WHERE state = 'running' AND lease_until < ? AND attempts < 2 RETURNING id",
            [now],
        )
        failed = await self._call(
            self._db.execute,
            "UPDATE jobs SET state = 'failed', finished_at = ?, lease_until = NULL, "
            "stage = NULL, error = ?, "
            "callback_due = CASE WHEN callback IS NULL THEN NULL ELSE ? END, "
            "callback_state = CASE WHEN callback IS NULL THEN NULL ELSE 'pending' END "
            "WHERE state = 'running' AND lease_until < ? RETURNING id",
            [now, json.dumps(error), now, now],
        )
        return [row[0] for row in queued], [row[0] for row in failed]

    async def ended(self) -> list[tuple[str, float, int]]:
        """Every ended job: id, when it ended, its result's bytes; the first ended first."""
        rows = await self._call(
            self._db.execute,
            "SELECT id, finished_at, COALESCE(result_bytes, 0) FROM jobs "
            f"WHERE state IN {_ENDED} ORDER BY finished_at, id",
        )
        return [(row[0], float(row[1]), int(row[2])) for row in rows]

    async def existing(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` have a row."""
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            rows = await self._call(
                self._db.execute,
                f"SELECT id FROM jobs WHERE id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            found.update(row[0] for row in rows)
        return found

    async def take_callback(self, hold_s: float) -> Job | None:
        """An ended job whose callback is due, held for ``hold_s`` (so that no other gateway
        sends it meanwhile); None when none is due."""
        now = time.time()
        rows = await self._call(
            self._db.execute,
            "UPDATE jobs SET callback_due = ? WHERE id = (SELECT id FROM jobs "
            "WHERE callback_due <= ? ORDER BY callback_due, id LIMIT 1"
            f"{self._db.skip_locked}) AND callback_due <= ? RETURNING {_SELECT}",
            [now + hold_s, now, now],
        )
        return _job(rows[0]) if rows else None

    async def callback_tried(
        self, job_id: str, state: CallbackState, attempts: int, due: float | None
    ) -> None:
        await self._call(
            self._db.execute,
            "UPDATE jobs SET callback_state = ?, callback_attempts = ?, callback_due = ? "
            "WHERE id = ?",
            [state.value, attempts, due, job_id],
        )
