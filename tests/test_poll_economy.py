"""The poll schedule: polls aimed at the learned distribution of generation times (less any
wait for the request budget), rate-limited polls rescheduled rather than failed."""

from __future__ import annotations

import asyncio
import random
import statistics
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from bot import pixeldojo
from bot.generation import runner as runner_module
from bot.generation.models import JobState
from bot.generation.runner import JobRunner, RunnerSettings
from bot.generation.service import GenerationService
from bot.pixeldojo.client import PixelDojoClient
from bot.pixeldojo.transport import RequestTiming
from bot.storage import Database
from bot.storage.jobs import JobStore
from tests.doubles.pixeldojo import FakePixelDojo
from tests.doubles.presenter import RecordingPresenter
from tests.helpers import FAST, request


@pytest.fixture
async def db(tmp_path: Path):
    database = Database(tmp_path / "bot.sqlite3")
    await database.connect()
    yield database
    await database.close()


def polls_until_done(runner: JobRunner, duration: float) -> int:
    """How many polls the runner's schedule sends a job that takes `duration` seconds, each
    poll on time; the job's duration is then learned as the runner learns it (when the poll
    that found it done was sent)."""
    t, polls = runner._interval(0.0, first=True), 1
    while t < duration:
        t += runner._interval(t)
        polls += 1
    runner.durations.add(t)
    return polls


def test_a_job_of_a_learned_duration_is_polled_at_most_twice() -> None:
    runner = JobRunner(None, None, RecordingPresenter(), RunnerSettings(0.5, 5.0))  # type: ignore[arg-type]
    rng = random.Random(7)
    with mock.patch.object(runner_module, "random", random.Random(1)):
        assert 1.0 <= runner._interval(0.0) <= 1.2  # nothing learned yet: a second in
        for _ in range(50):
            runner.durations.add(rng.uniform(6.0, 10.0))
        counts = [polls_until_done(runner, rng.uniform(6.0, 10.0)) for _ in range(1000)]
        steady = counts[200:]
        assert statistics.mean(steady) <= 1.3
        assert sum(count <= 2 for count in steady) >= 0.95 * len(steady)
        # Long past the slowest job: backing off, never slower than poll_max_interval.
        assert 0.5 < runner._interval(30.0) <= 5.0 * 1.1
        assert runner._interval(600.0) <= 5.0 * 1.1


def test_a_tight_budget_polls_less() -> None:
    rng = random.Random(7)
    history = [rng.uniform(6.0, 10.0) for _ in range(50)]
    durations = [rng.uniform(6.0, 10.0) for _ in range(1000)]
    means = []
    for tight in (False, True):
        runner = JobRunner(None, None, RecordingPresenter(), RunnerSettings(0.5, 5.0))  # type: ignore[arg-type]
        for seconds in history:
            runner.durations.add(seconds)
        with (
            mock.patch.object(runner_module, "random", random.Random(1)),
            mock.patch.object(JobRunner, "_budget_tight", return_value=tight),
        ):
            means.append(statistics.mean(polls_until_done(runner, d) for d in durations[:200]))
    relaxed, tight_mean = means
    assert tight_mean < relaxed and tight_mean <= 1.15


class WaitingClient:
    """A PixelDojo stand-in whose every poll waited `wait` seconds for the request budget
    (by the injected clock) and then found the job done `generation` seconds in."""

    budget = None

    def __init__(self, now: list[float], *, wait: float, generation: float) -> None:
        self.now, self.wait, self.generation = now, wait, generation

    async def submit(self, **_: Any) -> pixeldojo.SubmittedJob:
        return pixeldojo.SubmittedJob(
            job_id="pd-1", status_url="", credit_cost=1, credits_remaining=None, expires_at=None
        )

    async def get_job(self, job: str, *, timing: RequestTiming | None = None, **_: Any):
        self.now[0] += self.generation + self.wait
        if timing is not None:
            timing.waited = self.wait
        return pixeldojo.JobStatus(
            job_id="pd-1",
            status="completed",
            image_urls=("https://temp.pixeldojo.ai/x.png",),
            error=None,
            credit_cost=1,
            expires_at=None,
        )

    async def download_results(self, urls: Any, *, limit: int | None = None):
        return [(b"png", "image/png")]


async def test_the_learned_duration_excludes_the_wait_for_the_request_budget(db) -> None:
    now = [1_000.0]
    store = JobStore(db, clock=lambda: now[0])
    presenter = RecordingPresenter()
    client = WaitingClient(now, wait=45.0, generation=5.0)
    runner = JobRunner(store, client, presenter, FAST, clock=lambda: now[0])  # type: ignore[arg-type]
    runner.durations.minimum_samples = 1
    await runner.start()
    try:
        service = GenerationService(store, runner)
        job = await service.reserve(request())
        await service.launch(job, status_message_id=99)
        final = await asyncio.wait_for(runner.wait_finished(job.id), 5)
    finally:
        await runner.stop()
    assert final.state is JobState.POSTED
    assert runner.durations.quantile(0.5) == pytest.approx(5.0)
    # The figure a restart learns from is the same.
    assert await store.recent_durations(10) == [pytest.approx(5.0)]


def bare_429s_on_polls(count: int) -> Any:
    """Middleware answering the first `count` polls with a 429 that carries no headers."""
    left = [count]

    @web.middleware
    async def refuse(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "GET" and "/jobs/" in request.path and left[0] > 0:
            left[0] -= 1
            return web.Response(status=429, text="Too Many Requests")
        return await handler(request)

    return refuse


async def test_rate_limited_polls_are_rescheduled_and_the_job_is_posted(db) -> None:
    async with FakePixelDojo(job_duration=0.05, middlewares=[bare_429s_on_polls(3)]) as api:
        # A budget as large as the suite's, so its backoff after a bare 429 is short.
        async with PixelDojoClient("test-key", api.base_url, requests_per_minute=60_000) as client:
            store = JobStore(db)
            presenter = RecordingPresenter()
            runner = JobRunner(store, client, presenter, FAST)
            await runner.start()
            try:
                service = GenerationService(store, runner)
                job = await service.reserve(request())
                await service.launch(job, status_message_id=99)
                final = await asyncio.wait_for(runner.wait_finished(job.id), 10)
            finally:
                await runner.stop()
    assert final.state is JobState.POSTED and presenter.failures == {}
    assert [status for _, path, status, _ in api.request_log if "/jobs/" in path][:3] == [429] * 3
