"""The jobs' store, on SQLite and on a real PostgreSQL server, through the same tests: a job is
claimed once however many gateways ask at once, leases expire into one retry and then a
failure, a cancelled job is no longer its runner's, and the queue is bounded and ordered."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.jobs.ids import new_job_id
from gateway.jobs.store import (
    CallbackState,
    Job,
    JobStore,
    Kind,
    State,
    database_of,
)
from tests.postgres import fresh_database

pytestmark = pytest.mark.anyio

Open = Callable[[], JobStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], JobStore]:
    """Makes stores on one database, each with its own connection: several gateways."""
    if request.param == "sqlite":
        url = ""
    else:
        url = fresh_database(request.getfixturevalue("postgres_url"))
    return lambda: JobStore(database_of(url, tmp_path))


@pytest.fixture
async def store(open_store: Open) -> AsyncIterator[JobStore]:
    made = open_store()
    yield made
    made.close()


def job(created_at: float | None = None, **fields: object) -> Job:
    values: dict[str, object] = {
        "id": new_job_id(),
        "owner": "-",
        "model": "m",
        "kind": Kind.FILES,
        "request": "{}",
        "state": State.QUEUED,
        "created_at": time.time() if created_at is None else created_at,
    }
    values.update(fields)
    return Job(**values)  # type: ignore[arg-type]


async def test_a_job_reads_back_as_it_was_added(store: JobStore) -> None:
    added = job(callback="http://receiver/x")
    assert await store.add(added, max_queued=10)
    assert await store.get(added.id) == added
    assert await store.get(new_job_id()) is None


async def test_the_queue_is_bounded_and_ordered(store: JobStore) -> None:
    jobs = [job(created_at=1000.0 + k) for k in range(3)]
    for queued in jobs:
        assert await store.add(queued, max_queued=3)
    assert not await store.add(job(), max_queued=3), "JOB_MAX_QUEUED"
    assert [await store.position(j) for j in jobs] == [0, 1, 2]
    first = await store.claim("gateway-a", lease_s=30)
    assert first is not None and first.id == jobs[0].id
    assert (first.state, first.runner, first.attempts) == (State.RUNNING, "gateway-a", 1)
    assert [await store.position(j) for j in jobs[1:]] == [0, 1]


async def test_many_gateways_claiming_at_once_take_each_job_once(open_store: Open) -> None:
    stores = [open_store() for _ in range(4)]
    try:
        ids = set()
        for k in range(60):
            queued = job(created_at=1000.0 + k)
            ids.add(queued.id)
            assert await stores[0].add(queued, max_queued=1000)

        async def gateway(store: JobStore, name: str) -> list[str]:
            taken = []
            while await store.any_queued():
                claimed = await store.claim(name, lease_s=30)
                if claimed is not None:
                    taken.append(claimed.id)
            return taken

        taken = await asyncio.gather(*(gateway(s, f"g{k}") for k, s in enumerate(stores)))
        every = [job_id for by_one in taken for job_id in by_one]
        assert sorted(every) == sorted(ids), "each job claimed exactly once"
    finally:
        for store in stores:
            store.close()


async def test_a_cancelled_job_is_no_longer_its_runners(store: JobStore) -> None:
    queued = job(callback="http://receiver/x")
    await store.add(queued, max_queued=10)
    claimed = await store.claim("gateway-a", lease_s=30)
    assert claimed is not None
    assert await store.report(queued.id, "gateway-a", 30, "triton", "patches", 3, 10)
    shown = await store.get(queued.id)
    assert shown is not None and (shown.stage, shown.unit, shown.done, shown.total) == (
        "triton",
        "patches",
        3,
        10,
    )
    cancelled = await store.cancel(queued.id, time.time())
    assert cancelled is not None and cancelled.runner == "gateway-a"
    assert cancelled.callback_state is CallbackState.PENDING, "a callback tells of it"
    assert not await store.report(queued.id, "gateway-a", 30, "triton", "patches", 4, 10)
    assert not await store.finish(queued.id, "gateway-a", State.SUCCEEDED)
    assert await store.cancel(queued.id, time.time()) is None, "once"
    assert await store.delete(queued.id)
    assert await store.get(queued.id) is None


async def test_an_expired_lease_is_queued_again_once_then_failed(store: JobStore) -> None:
    queued = job()
    await store.add(queued, max_queued=10)
    error = {"status": 500, "code": "job_interrupted", "message": "m", "request_id": None}
    await store.claim("dead-1", lease_s=0.01)
    await asyncio.sleep(0.05)
    assert await store.expire_leases(error) == ([queued.id], [])
    again = await store.claim("dead-2", lease_s=0.01)
    assert again is not None and again.attempts == 2
    await asyncio.sleep(0.05)
    assert await store.expire_leases(error) == ([], [queued.id])
    failed = await store.get(queued.id)
    assert failed is not None and failed.state is State.FAILED
    assert failed.error_object() == error


async def test_a_live_lease_is_kept_and_a_release_ends_it_now(store: JobStore) -> None:
    queued = job()
    await store.add(queued, max_queued=10)
    await store.claim("alive", lease_s=30)
    assert await store.expire_leases({}) == ([], [])
    await store.release(queued.id, "alive")
    assert await store.expire_leases({}) == ([queued.id], [])
    again = await store.claim("next", lease_s=30)
    assert again is not None and again.attempts == 1, "a SIGTERM's run does not count"


async def test_a_due_callback_is_taken_by_one_gateway(open_store: Open) -> None:
    first, second = open_store(), open_store()
    try:
        queued = job(callback="http://receiver/x")
        await first.add(queued, max_queued=10)
        await first.claim("g", lease_s=30)
        assert await first.finish(queued.id, "g", State.SUCCEEDED, result_bytes=5)
        taken = await first.take_callback(hold_s=60)
        assert taken is not None and taken.id == queued.id
        assert await second.take_callback(hold_s=60) is None, "held"
        await first.callback_tried(queued.id, CallbackState.PENDING, 1, time.time() - 1)
        again = await second.take_callback(hold_s=60)
        assert again is not None and again.callback_attempts == 1
        await second.callback_tried(queued.id, CallbackState.DELIVERED, 2, None)
        assert await first.take_callback(hold_s=60) is None
        ((job_id, finished_at, size),) = await first.ended()
        assert (job_id, size) == (queued.id, 5) and abs(finished_at - time.time()) < 60
    finally:
        first.close()
        second.close()


async def test_errors_are_kept_as_json(store: JobStore) -> None:
    queued = job()
    await store.add(queued, max_queued=10)
    await store.claim("g", lease_s=30)
    error = {"status": 422, "code": "volume_required", "message": "3D", "request_id": "r"}
    assert await store.finish(queued.id, "g", State.FAILED, error=error)
    failed = await store.get(queued.id)
    assert failed is not None and json.loads(failed.error or "") == error


def test_an_unreachable_database_is_a_503_to_the_client(tmp_path: Path) -> None:
    from gateway.errors import JobStoreUnavailable

    store = JobStore(database_of("postgresql://nobody@127.0.0.1:1/none", tmp_path))

    async def ask() -> None:
        await store.get(new_job_id())

    with pytest.raises(JobStoreUnavailable):
        asyncio.run(ask())
    store.close()
