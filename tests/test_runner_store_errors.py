"""A database that refuses writes for a while (locked by another process, a full disk) costs no
member their images or credits: the runner retries each state write, keeping the job meanwhile."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bot.generation.models import Job, JobState
from bot.generation.runner import STORE_RETRY_CAP, JobRunner, Phase
from bot.generation.service import GenerationService
from bot.pixeldojo.client import PixelDojoClient
from bot.storage import Database
from bot.storage.jobs import JobStore
from tests.doubles.pixeldojo import FakePixelDojo
from tests.doubles.presenter import RecordingPresenter
from tests.helpers import FAST, credits_used, request


def locked() -> sqlite3.OperationalError:
    return sqlite3.OperationalError("database is locked")


def disk_full() -> sqlite3.OperationalError:
    return sqlite3.OperationalError("database or disk is full")


class FlakyStore(JobStore):
    """Raises the queued errors from the named calls before letting them through, as SQLite
    does while another process holds the write lock or the disk is full."""

    def __init__(self, db: Database, **errors: list[Exception]) -> None:
        super().__init__(db)
        self.errors = errors

    def _refuse(self, name: str) -> None:
        queue = self.errors.get(name)
        if queue:
            raise queue.pop(0)

    async def get(self, job_id: int) -> Job | None:
        self._refuse("get")
        return await super().get(job_id)

    async def mark_submitted(self, job_id: int, **kwargs: Any) -> Job:
        self._refuse("mark_submitted")
        return await super().mark_submitted(job_id, **kwargs)

    async def mark_posted(self, job_id: int, **kwargs: Any) -> Job:
        self._refuse("mark_posted")
        return await super().mark_posted(job_id, **kwargs)

    async def mark_failed(self, job_id: int, error: str, **kwargs: Any) -> Job:
        self._refuse("mark_failed")
        return await super().mark_failed(job_id, error, **kwargs)


class RecordedSleeps:
    """The runner's backoff, recorded instead of waited for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
async def db(tmp_path: Path):
    database = Database(tmp_path / "bot.sqlite3")
    await database.connect()
    yield database
    await database.close()


@pytest.fixture
async def client(api: FakePixelDojo):
    async with PixelDojoClient("test-key", api.base_url, backoff_base=0.01) as pixeldojo:
        yield pixeldojo


async def test_a_locked_database_delays_the_submission_record_but_the_job_is_delivered(
    api: FakePixelDojo, db: Database, client: PixelDojoClient
) -> None:
    store = FlakyStore(db, mark_submitted=[locked() for _ in range(12)])
    presenter, sleeps = RecordingPresenter(), RecordedSleeps()
    runner = JobRunner(store, client, presenter, FAST, sleep=sleeps)
    await runner.start()
    service = GenerationService(store, runner)
    job = await service.reserve(request())
    await service.launch(job, status_message_id=99)
    await asyncio.wait_for(runner.wait_finished(job.id), 5)
    await runner.stop()

    assert job.id in presenter.results and job.id not in presenter.failures
    assert (job.id, Phase.GENERATING) in presenter.statuses
    final = await store.get(job.id)
    assert final is not None and final.state is JobState.POSTED
    assert await credits_used(db) == 1
    assert len(api.submissions) == 1
    # Backed off, capped and jittered: twelve refusals, twelve growing waits, none over the cap.
    assert len(sleeps.delays) == 12
    assert sleeps.delays[0] < sleeps.delays[-1] <= STORE_RETRY_CAP


async def test_a_restart_after_a_locked_submission_record_delivers_the_paid_result(
    api: FakePixelDojo, db: Database, client: PixelDojoClient
) -> None:
    api.set_duration(3600)
    store = FlakyStore(db, mark_submitted=[locked(), disk_full()])
    first = RecordingPresenter()
    runner = JobRunner(store, client, first, FAST, sleep=RecordedSleeps())
    await runner.start()
    service = GenerationService(store, runner)
    job = await service.reserve(request())
    await service.launch(job, status_message_id=99)
    await asyncio.wait_for(first.generating.wait(), 5)
    await runner.stop()
    recorded = await store.get(job.id)
    assert recorded is not None and recorded.state is JobState.SUBMITTED

    # PixelDojo finishes while the bot is down; the next life delivers what was paid for.
    for fake_job in api.jobs.values():
        fake_job.complete_at = 0.0
    second = RecordingPresenter()
    again = JobRunner(JobStore(db), client, second, FAST)
    await again.start()
    await asyncio.wait_for(again.wait_finished(job.id), 5)
    await again.stop()
    assert job.id in second.results and job.id not in second.failures
    assert await credits_used(db) == 1
    assert len(api.submissions) == 1


async def test_a_full_disk_while_refunding_still_refunds_and_tells_the_member(
    api: FakePixelDojo, db: Database, client: PixelDojoClient
) -> None:
    api.fault_next("402", route="submit")
    store = FlakyStore(db, get=[disk_full()], mark_failed=[disk_full(), locked()])
    presenter = RecordingPresenter()
    runner = JobRunner(store, client, presenter, FAST, sleep=RecordedSleeps())
    await runner.start()
    service = GenerationService(store, runner)
    job = await service.reserve(request())
    await service.launch(job, status_message_id=99)
    await asyncio.wait_for(presenter.ended(job.id).wait(), 5)
    final = await asyncio.wait_for(runner.wait_finished(job.id), 5)
    await runner.stop()

    assert "out of credits" in presenter.failures[job.id]
    assert final.state is JobState.FAILED
    assert await credits_used(db) == 0


async def test_a_locked_database_after_posting_records_the_post_once(
    api: FakePixelDojo, db: Database, client: PixelDojoClient
) -> None:
    store = FlakyStore(db, mark_posted=[locked(), locked(), disk_full()])
    presenter = RecordingPresenter()
    finished: list[Job] = []

    async def on_finished(job: Job) -> None:
        finished.append(job)

    runner = JobRunner(
        store, client, presenter, FAST, sleep=RecordedSleeps(), on_finished=on_finished
    )
    await runner.start()
    service = GenerationService(store, runner)
    job = await service.reserve(request())
    await service.launch(job, status_message_id=99)
    final = await asyncio.wait_for(runner.wait_finished(job.id), 5)
    await runner.stop()

    assert final.state is JobState.POSTED and final.result_message_id == 10_000 + job.id
    assert list(presenter.results) == [job.id]
    assert [j.state for j in finished] == [JobState.POSTED]
    assert await credits_used(db) == 1
