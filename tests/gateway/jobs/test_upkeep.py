"""Retention and what a kill leaves behind, on the embedded store and real files: ended jobs past
JOB_RETENTION_S go, then the first ended until the results fit JOB_MAX_BYTES; an ended job's
inputs and a folder without a row (older than a submission can take) are removed."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.jobs.board import JobBoard
from gateway.jobs.files import ORPHAN_AGE_S, JobFiles
from gateway.jobs.ids import new_job_id
from gateway.jobs.store import Job, JobStore, Kind, State, database_of
from gateway.jobs.upkeep import Upkeep
from gateway.metrics import Metrics
from gateway.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def board(tmp_path: Path) -> AsyncIterator[JobBoard]:
    settings = Settings(jobs_dir=tmp_path, job_retention_s=3600, job_max_bytes=250)
    store = JobStore(database_of("", tmp_path))
    yield JobBoard(settings, store, JobFiles(tmp_path), Metrics())
    store.close()


async def ended_job(board: JobBoard, size: int, *, inputs: bool = False) -> str:
    """A job run to success here, its result ``size`` bytes."""
    job_id = new_job_id()
    with board.files.receiving(job_id) as folder:
        (folder / "00001.png").write_bytes(b"x")
    job = Job(job_id, "-", "m", Kind.FILES, "{}", State.QUEUED, time.time())
    assert await board.store.add(job, max_queued=100)
    assert await board.store.claim("here", lease_s=30) is not None
    board.files.write_result(job_id, b"r" * size)
    assert await board.store.finish(job_id, "here", State.SUCCEEDED, result_bytes=size)
    if not inputs:
        board.files.remove_inputs(job_id)
    return job_id


async def test_jobs_past_retention_go_with_their_files(board: JobBoard) -> None:
    jobs = [await ended_job(board, 10), await ended_job(board, 10)]
    assert await Upkeep(board).sweep(now=time.time() + 1800) == 0
    assert await Upkeep(board).sweep(now=time.time() + 3700) == 2
    for job_id in jobs:
        assert await board.store.get(job_id) is None
        assert not board.files.folder(job_id).exists()


async def test_the_first_ended_go_until_the_results_fit(board: JobBoard) -> None:
    first = await ended_job(board, 100)
    second = await ended_job(board, 100)
    third = await ended_job(board, 100)
    assert await Upkeep(board).sweep() == 1, "300 bytes of results, 250 allowed"
    assert await board.store.get(first) is None and not board.files.folder(first).exists()
    assert board.files.result(second).stat().st_size == 100
    assert board.files.result(third).exists()


async def test_what_a_kill_leaves_is_removed(board: JobBoard) -> None:
    kept_inputs = await ended_job(board, 5, inputs=True)
    assert board.files.inputs(kept_inputs).exists()
    orphan, fresh = new_job_id(), new_job_id()
    for job_id in (orphan, fresh):
        with board.files.receiving(job_id) as folder:
            (folder / "00001.dcm").write_bytes(b"x")
    old = time.time() - ORPHAN_AGE_S - 60
    os.utime(board.files.folder(orphan), (old, old))
    await Upkeep(board).sweep()
    assert not board.files.inputs(kept_inputs).exists(), "an ended job's inputs"
    assert board.files.result(kept_inputs).exists(), "its result stays"
    assert not board.files.folder(orphan).exists(), "no row, older than a submission takes"
    assert board.files.folder(fresh).exists(), "maybe a submission still receiving"
