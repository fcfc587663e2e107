"""A status check's time limit (`RunnerSettings.poll_timeout`) bounds the request, not its wait
for the request budget: above capacity a check may wait most of a minute for its turn, and
abandoning it there only queued it again behind the others.

The budget runs on an injected clock that only the test moves, so "the budget is saturated"
lasts exactly until the test says the window has passed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bot.generation.runner import JobRunner, RunnerSettings
from bot.generation.service import GenerationService
from bot.pixeldojo.client import PixelDojoClient
from bot.pixeldojo.transport import RequestTiming
from bot.storage import Database
from bot.storage.jobs import JobStore
from tests.doubles.pixeldojo import FakePixelDojo
from tests.doubles.presenter import RecordingPresenter
from tests.helpers import ManualTime, request

ONE_A_MINUTE = 2
"""requests_per_minute giving a budget of one request a minute (less the safety margin)."""


def budgeted_client(api: FakePixelDojo, held: ManualTime) -> PixelDojoClient:
    """A client whose budget allows one request a minute, on the test's clock."""
    return PixelDojoClient(
        "test-key", api.base_url, requests_per_minute=ONE_A_MINUTE, clock=held, sleep=held.sleep
    )


async def test_the_callers_limit_is_paused_while_the_request_waits_for_the_budget() -> None:
    held = ManualTime()
    async with (
        FakePixelDojo(job_duration=0) as api,
        budgeted_client(api, held) as client,
    ):
        job = await client.submit(prompt="a kite", aspect_ratio="1:1")  # this minute's request
        bound_when: list[float | None] = []

        async def check() -> str:
            async with asyncio.timeout(30) as bound:
                timing = RequestTiming(bound=bound)
                checking = asyncio.ensure_future(client.get_job(job.job_id, timing=timing))
                await held.waiting.wait()
                bound_when.append(bound.when())  # while the request waits for the budget
                held.advance(60)
                status = await checking
                bound_when.append(bound.when())
                return status.status

        assert await asyncio.wait_for(check(), 10) == "completed"
    paused, resumed = bound_when
    assert paused is None, "the caller's limit ran while the request waited for the budget"
    assert resumed is not None  # running again once the request was sent
    assert held.cancelled == 0


async def test_a_status_check_waiting_for_a_saturated_budget_is_not_abandoned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.generation.runner")
    held = ManualTime()
    settings = RunnerSettings(
        poll_initial_interval=0.01, poll_max_interval=0.05, poll_timeout=0.3, job_timeout=300
    )
    db = Database(tmp_path / "bot.sqlite3")
    await db.connect()
    presenter = RecordingPresenter()
    store = JobStore(db)
    async with (
        FakePixelDojo(job_duration=0) as api,
        budgeted_client(api, held) as client,
    ):
        runner = JobRunner(store, client, presenter, settings)
        await runner.start()
        try:
            service = GenerationService(store, runner)
            job = await service.launch(await service.reserve(request()), status_message_id=99)
            # The submit spent the minute's one request: the first check waits for the next.
            await asyncio.wait_for(held.waiting.wait(), 10)
            # Keep it waiting past twice its time limit. asyncio fires timers in deadline
            # order, so a limit armed when the check started (before this timer) fires first
            # and abandons the check, however loaded the machine is.
            loop = asyncio.get_running_loop()
            past_the_limit = loop.create_future()
            loop.call_later(2 * settings.poll_timeout, past_the_limit.set_result, None)
            await past_the_limit
            assert held.cancelled == 0, "the check was abandoned while waiting for the budget"
            assert "no answer to a status check" not in caplog.text

            held.advance(60)  # the window has passed: the check that waited is sent
            finished = await asyncio.wait_for(runner.wait_finished(job.id), 10)
        finally:
            await runner.stop()
            await db.close()
    assert job.id in presenter.results and finished.polls >= 1
    assert held.cancelled == 0
