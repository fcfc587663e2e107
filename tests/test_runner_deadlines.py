"""No job is timed out without asking PixelDojo first, also after the bot was down for longer
than JOB_TIMEOUT."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bot.fake_pixeldojo import FakePixelDojo
from bot.generation import GenerationService
from bot.pixeldojo import PixelDojoClient
from bot.runner import JobRunner
from bot.storage import Database
from bot.storage.jobs import JobStore
from tests.test_runner import FAST, RecordingPresenter, credits_used, request


@pytest.fixture
async def db(tmp_path: Path):
    database = Database(tmp_path / "bot.sqlite3")
    await database.connect()
    yield database
    await database.close()


@pytest.mark.parametrize("finished", [True, False], ids=["finished", "still-running"])
async def test_a_restart_long_past_the_timeout_asks_pixeldojo_before_giving_up(
    api: FakePixelDojo, db: Database, finished: bool
) -> None:
    store = JobStore(db)
    presenter = RecordingPresenter()
    async with PixelDojoClient("test-key", api.base_url) as client:
        # The first life: PixelDojo accepted the job, then the bot was down for an hour.
        api.set_duration(0 if finished else 3600)
        runner = JobRunner(store, client, presenter, FAST, clock=lambda: time.time() + 3600)
        service = GenerationService(store, runner)
        job = await service.reserve(request())
        submitted = await client.submit(prompt="a red fox", aspect_ratio="1:1")
        await store.mark_submitted(
            job.id, api_job_id=submitted.job_id, status_url=submitted.status_url, expires_at=None
        )
        await runner.start()
        await asyncio.wait_for(runner.wait_finished(job.id), 5)
        await runner.stop()

    polls = [entry for entry in api.request_log if entry[0] == "GET" and "/jobs/" in entry[1]]
    if finished:
        assert job.id in presenter.results and job.id not in presenter.failures
        assert await credits_used(db) == 1
    else:
        assert "did not finish" in presenter.failures[job.id]
        assert await credits_used(db) == 0
        assert len(polls) == 1  # asked once, and PixelDojo said it was still running
