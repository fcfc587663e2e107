"""Stopping (SIGTERM, SIGINT) never turns a charged job into a refund: submissions already sent
to PixelDojo are waited for (a bounded time) and recorded, no new work is taken meanwhile, and
jobs still waiting in the queue stay there for the next start."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.app import PixelDojoBot
from bot.config import Settings
from bot.errors import RequestRefused
from bot.generation.models import JobState
from bot.generation.runner import JobRunner, RunnerSettings
from bot.generation.service import GenerationService
from bot.pixeldojo.client import PixelDojoClient
from bot.storage import Database
from bot.storage.jobs import JobStore
from tests.doubles.discord_double import DiscordDouble, run_bot_against
from tests.doubles.pixeldojo import FakePixelDojo
from tests.doubles.presenter import RecordingPresenter
from tests.helpers import ALICE_ID, Harness, credits_used, footer_has, queued_job_id, request


class HeldSubmissions(FakePixelDojo):
    """PixelDojo answering submissions only once the test releases them. Like the real one, it
    creates (and charges for) every job whose request arrived, whatever the bot does meanwhile."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    @web.middleware
    async def _inject_faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.match_info.route.name == "submit":
            self.arrived.set()
            await self.release.wait()
        return await super()._inject_faults(request, handler)


@pytest.fixture
async def api() -> AsyncIterator[HeldSubmissions]:
    async with HeldSubmissions(job_duration=0.05) as fake:
        try:
            yield fake
        finally:
            fake.release.set()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "bot.sqlite3")
    await database.connect()
    yield database
    await database.close()


# The tests release held submissions themselves: a grace this long never runs out before
# they do, however slow the machine.
LONG_GRACE = 60.0
ONE_AT_A_TIME = RunnerSettings(
    poll_initial_interval=0.02,
    poll_max_interval=0.05,
    job_timeout=5,
    max_concurrent_submits=1,
    shutdown_grace=LONG_GRACE,
)


async def test_stop_waits_for_a_sent_submission_and_sends_nothing_new(
    api: HeldSubmissions, db: Database
) -> None:
    store = JobStore(db)
    async with PixelDojoClient("test-key", api.base_url) as client:
        presenter = RecordingPresenter()
        runner = JobRunner(store, client, presenter, ONE_AT_A_TIME)
        await runner.start()
        service = GenerationService(store, runner)
        sent = await service.launch(await service.reserve(request(prompt="sent")), 98)
        await asyncio.wait_for(api.arrived.wait(), 5)
        queued = await service.launch(await service.reserve(request(prompt="queued")), 99)

        stopping = asyncio.create_task(runner.stop())
        await asyncio.sleep(0)  # one loop turn, no clock: stop() runs up to its first wait
        assert not runner.accepting
        with pytest.raises(RequestRefused, match="restarting"):
            await service.reserve(request(prompt="too late"))
        assert not stopping.done()  # still waiting for PixelDojo's answer
        api.release.set()
        await asyncio.wait_for(stopping, 5)

        recorded = await store.get(sent.id)
        assert recorded is not None and recorded.state is JobState.SUBMITTED
        assert recorded.api_job_id in api.jobs
        assert [s["prompt"] for s in api.submissions] == ["sent"]
        # The job waiting for a submit slot was not sent: it stays queued, credits held.
        waiting = await store.get(queued.id)
        assert waiting is not None and waiting.state is JobState.QUEUED
        assert queued.id not in presenter.failures

        # The next life delivers the job PixelDojo charged for instead of refunding it, and
        # sends the one that was waiting.
        again = RecordingPresenter()
        second = JobRunner(store, client, again, ONE_AT_A_TIME)
        await second.start()
        await asyncio.wait_for(second.wait_finished(sent.id), 5)
        await asyncio.wait_for(second.wait_finished(queued.id), 5)
        await second.stop()
    assert sent.id in again.results and sent.id not in again.failures
    assert queued.id in again.results
    assert [s["prompt"] for s in api.submissions] == ["sent", "queued"]
    assert await credits_used(db) == 2


async def test_stop_gives_up_on_a_submission_that_never_answers(
    api: HeldSubmissions, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    store = JobStore(db)
    async with PixelDojoClient("test-key", api.base_url) as client:
        runner = JobRunner(store, client, RecordingPresenter(), RunnerSettings(shutdown_grace=0.05))
        await runner.start()
        service = GenerationService(store, runner)
        job = await service.launch(await service.reserve(request()), 99)
        await asyncio.wait_for(api.arrived.wait(), 5)
        with caplog.at_level(logging.ERROR, logger="bot.generation.runner"):
            await asyncio.wait_for(runner.stop(), 5)
    recorded = await store.get(job.id)
    assert recorded is not None and recorded.state is JobState.RESERVED  # refunded next start
    assert f"job {job.id}: stopping before its submission was answered" in caplog.text


async def test_closing_the_bot_mid_submission_delivers_the_job_after_the_restart(
    double: DiscordDouble, api: HeldSubmissions, settings: Settings
) -> None:
    first = PixelDojoBot(settings, guild_ready_timeout=0.1)
    async with run_bot_against(double, first):
        await double.wait_for_commands()
        runner = first.services.runner
        runner.settings = replace(runner.settings, shutdown_grace=LONG_GRACE)
        harness = Harness(first, double, api)
        record = await harness.imagine("sent before the shutdown")
        job_id = await queued_job_id(harness, record)
        await asyncio.wait_for(api.arrived.wait(), 10)

        closing = asyncio.create_task(first.close())  # what SIGTERM and SIGINT do
        late = await harness.imagine("asked during the shutdown")
        reply = await harness.reply(late)
        assert reply.content is not None and "restarting" in reply.content
        api.release.set()
        await asyncio.wait_for(closing, 15)

    second = PixelDojoBot(settings, guild_ready_timeout=0.1)
    async with run_bot_against(double, second):
        result = await double.wait_for_message(
            lambda m: bool(m.attachments) and footer_has(m, f"Job #{job_id}"), 10
        )
        final = await asyncio.wait_for(second.services.runner.wait_finished(job_id), 10)
        spent = await second.services.db.fetchone(
            "SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE user_id = ?", (ALICE_ID,)
        )
    assert final.state is JobState.POSTED and final.result_message_id == result.id
    assert spent is not None and spent[0] == 1
    assert [s["prompt"] for s in api.submissions] == ["sent before the shutdown"]
