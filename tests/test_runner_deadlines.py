"""JOB_TIMEOUT is enforced by the runner itself: a status check that never answers neither holds
a poll slot nor keeps a job alive past its deadline, and no job is timed out without asking
PixelDojo first (also after the bot was down for longer than the timeout)."""

from __future__ import annotations

import asyncio
import io
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot import pixeldojo
from bot.generation.models import Job, JobState
from bot.generation.runner import DeliveryError, JobRunner, RunnerSettings
from bot.generation.service import GenerationService
from bot.pixeldojo.client import PixelDojoClient
from bot.storage import Database, ledger
from bot.storage.jobs import JobStore
from tests.doubles.pixeldojo import FakePixelDojo
from tests.doubles.presenter import RecordingPresenter
from tests.helpers import FAST, credits_used, request


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 120, 200)).save(out, format="PNG")
    return out.getvalue()


class StallingPixelDojo:
    """A PixelDojo client double: submissions are accepted at once, and the status checks of
    the jobs in `stall` never answer (until cancelled); the others find the job completed."""

    def __init__(self) -> None:
        self.submit_cost: int | None = 1
        self.stall: set[str] = set()
        self.stalled = asyncio.Event()
        self.polls: Counter[str] = Counter()
        self.abandoned: Counter[str] = Counter()
        self.submitted: list[str] = []

    async def submit(self, **_: Any) -> pixeldojo.SubmittedJob:
        job_id = f"pd-{len(self.submitted) + 1}"
        self.submitted.append(job_id)
        return pixeldojo.SubmittedJob(
            job_id=job_id,
            status_url="",
            credit_cost=self.submit_cost,
            credits_remaining=None,
            expires_at=None,
        )

    async def get_job(self, job: str, **_: Any) -> pixeldojo.JobStatus:
        job_id = str(job).rstrip("/").rsplit("/", 1)[-1]
        self.polls[job_id] += 1
        if job_id in self.stall:
            self.stalled.set()
            try:
                await asyncio.Event().wait()  # a body that never arrives
            finally:
                self.abandoned[job_id] += 1
        return pixeldojo.JobStatus(
            job_id=job_id,
            status="completed",
            image_urls=(f"https://images.invalid/{job_id}.png",),
            error=None,
            credit_cost=1,
            expires_at=None,
        )

    async def download_results(
        self, urls: Sequence[str], *, limit: int | None = None
    ) -> list[tuple[bytes, str]]:
        return [(png(), "image/png") for _ in urls[:limit]]


class ShiftedClock:
    """The wall clock, moved forward when a test says time has passed."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


STALLS = RunnerSettings(
    poll_initial_interval=0.02,
    poll_max_interval=0.05,
    job_timeout=300,
    max_concurrent_polls=1,
    poll_timeout=0.05,
)


@pytest.fixture
async def db(tmp_path: Path):
    database = Database(tmp_path / "bot.sqlite3")
    await database.connect()
    yield database
    await database.close()


async def launch(service: GenerationService, **overrides: object) -> Job:
    job = await service.reserve(request(**overrides))
    return await service.launch(job, status_message_id=99)


async def test_a_stalled_status_check_does_not_hold_its_poll_slot(db: Database) -> None:
    client, presenter, store = StallingPixelDojo(), RecordingPresenter(), JobStore(db)
    client.stall.add("pd-1")
    runner = JobRunner(store, client, presenter, STALLS)  # type: ignore[arg-type]
    await runner.start()
    service = GenerationService(store, runner)
    stalled = await launch(service, prompt="stalls")
    await asyncio.wait_for(client.stalled.wait(), 5)
    # The only poll slot is taken by a request that never answers; the next job still runs.
    healthy = await launch(service, prompt="healthy")
    await asyncio.wait_for(runner.wait_finished(healthy.id), 5)
    assert healthy.id in presenter.results
    # The stalled job is checked again (its deadline is minutes away), and the check that
    # stalled was cancelled by its own timeout, not left running for the stop() below.
    async with asyncio.timeout(5):
        while client.polls["pd-1"] < 2:
            client.stalled.clear()
            await client.stalled.wait()
    assert client.abandoned["pd-1"] >= 1
    assert stalled.id not in presenter.failures
    still = await store.get(stalled.id)
    assert still is not None and still.state is JobState.SUBMITTED
    await runner.stop()


async def test_a_job_whose_status_checks_stall_fails_at_its_deadline_and_is_refunded(
    db: Database,
) -> None:
    client, presenter, store = StallingPixelDojo(), RecordingPresenter(), JobStore(db)
    client.stall.add("pd-1")
    clock = ShiftedClock()
    runner = JobRunner(store, client, presenter, STALLS, clock=clock)  # type: ignore[arg-type]
    await runner.start()
    job = await launch(GenerationService(store, runner))
    await asyncio.wait_for(client.stalled.wait(), 5)
    clock.offset = 301  # past JOB_TIMEOUT while the check hangs
    await asyncio.wait_for(runner.wait_finished(job.id), 5)
    await runner.stop()

    assert "did not finish this job within 5 min" in presenter.failures[job.id]
    final = await store.get(job.id)
    assert final is not None and final.state is JobState.FAILED
    assert await credits_used(db) == 0
    assert client.polls["pd-1"] >= 2  # the check at the deadline was made, and stalled too


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


class FlakyPixelDojo(StallingPixelDojo):
    """Status checks answer 503 (after the client's own retries) `errors` times, then tell the
    truth: the job completed."""

    def __init__(self, errors: int) -> None:
        super().__init__()
        self.errors = errors

    async def get_job(self, job: str, **kwargs: Any) -> pixeldojo.JobStatus:
        if self.errors > 0:
            self.errors -= 1
            self.polls[str(job)] += 1
            raise pixeldojo.ServerError("PixelDojo is having trouble right now.")
        return await super().get_job(job, **kwargs)


@pytest.mark.parametrize("errors", [1, 5], ids=["one-503", "five-503s"])
async def test_a_restart_past_the_timeout_delivers_a_finished_job_despite_a_503(
    db: Database, errors: int
) -> None:
    client, presenter, store = FlakyPixelDojo(errors), RecordingPresenter(), JobStore(db)
    clock = ShiftedClock()
    runner = JobRunner(store, client, presenter, STALLS, clock=clock)  # type: ignore[arg-type]
    job = await GenerationService(store, runner).reserve(request())
    await store.mark_submitted(job.id, api_job_id="pd-1", status_url="", expires_at=None)
    clock.offset = 3600  # the bot was down for an hour; PixelDojo finished long ago
    await runner.start()
    await asyncio.wait_for(runner.wait_finished(job.id), 5)
    await runner.stop()

    assert job.id in presenter.results and job.id not in presenter.failures
    assert await credits_used(db) == 1


async def test_late_checks_that_keep_failing_time_the_job_out_after_a_bounded_few(
    db: Database,
) -> None:
    client, presenter, store = FlakyPixelDojo(1000), RecordingPresenter(), JobStore(db)
    clock = ShiftedClock()
    runner = JobRunner(store, client, presenter, STALLS, clock=clock)  # type: ignore[arg-type]
    job = await GenerationService(store, runner).reserve(request())
    await store.mark_submitted(job.id, api_job_id="pd-1", status_url="", expires_at=None)
    clock.offset = 3600
    await runner.start()
    await asyncio.wait_for(runner.wait_finished(job.id), 5)
    await runner.stop()

    assert "did not finish this job within 5 min" in presenter.failures[job.id]
    assert await credits_used(db) == 0
    assert sum(client.polls.values()) == 6  # the check at the deadline and five more


class RivalPixelDojo(StallingPixelDojo):
    """While the status check is in flight, another bot process on the same database (a
    rolling deploy) times the job out and refunds it; then PixelDojo says it completed."""

    def __init__(self, store: JobStore) -> None:
        super().__init__()
        self.store = store

    async def get_job(self, job: str, **kwargs: Any) -> pixeldojo.JobStatus:
        rows = await self.store.active()
        for row in rows:
            await self.store.mark_failed(row.id, "the other process gave up")
        return await super().get_job(job, **kwargs)


class RivalPresenter(RecordingPresenter):
    """While the result is being posted, another process fails and refunds the job."""

    def __init__(self, store: JobStore) -> None:
        super().__init__()
        self.store = store

    async def post_result(self, job: Job, images: list[Any], elapsed: float) -> int:
        await self.store.mark_failed(job.id, "the other process gave up")
        return await super().post_result(job, images, elapsed)


async def test_a_job_another_process_refunded_is_not_delivered_when_it_completes(
    db: Database,
) -> None:
    store = JobStore(db)
    client, presenter = RivalPixelDojo(store), RecordingPresenter()
    runner = JobRunner(store, client, presenter, STALLS)  # type: ignore[arg-type]
    await runner.start()
    job = await launch(GenerationService(store, runner))
    await asyncio.wait_for(runner.wait_finished(job.id), 5)
    await runner.stop()

    assert job.id not in presenter.results  # no free images
    final = await store.get(job.id)
    assert final is not None and final.state is JobState.FAILED
    assert await credits_used(db) == 0


async def test_a_result_posted_after_another_process_refunded_it_leaves_the_job_failed(
    db: Database,
) -> None:
    store = JobStore(db)
    client, presenter = StallingPixelDojo(), RivalPresenter(store)
    runner = JobRunner(store, client, presenter, STALLS)  # type: ignore[arg-type]
    await runner.start()
    job = await launch(GenerationService(store, runner))
    await asyncio.wait_for(runner.wait_finished(job.id), 5)
    await runner.stop()

    final = await store.get(job.id)
    # The row agrees with the ledger: refunded, so FAILED, not POSTED.
    assert final is not None and final.state is JobState.FAILED
    assert final.result_message_id is None
    assert await credits_used(db) == 0


async def test_a_job_left_reserved_by_a_restart_is_refunded_without_claiming_it_was_unsent(
    db: Database,
) -> None:
    store, presenter = JobStore(db), RecordingPresenter()
    runner = JobRunner(store, StallingPixelDojo(), presenter, STALLS)  # type: ignore[arg-type]
    job = await GenerationService(store, runner).reserve(request())
    await store.set_status_message(job.id, 99)
    await store.mark_sending(job.id)  # the request may have reached PixelDojo, then a crash
    await runner.start()
    async with asyncio.timeout(5):
        await presenter.ended(job.id).wait()
    await runner.stop()

    assert presenter.failures[job.id] == (
        "The bot restarted before PixelDojo confirmed this job. Please try again."
    )
    assert await credits_used(db) == 0


async def test_a_result_post_that_fails_once_waits_on_the_runners_own_sleep(
    db: Database,
) -> None:
    class OnceRefusing(RecordingPresenter):
        async def post_result(self, job: Job, images: list[Any], elapsed: float) -> int:
            if not waits:  # the first attempt
                raise DeliveryError("Discord hiccup", permanent=False)
            return await super().post_result(job, images, elapsed)

    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    store, presenter = JobStore(db), OnceRefusing()
    runner = JobRunner(store, StallingPixelDojo(), presenter, STALLS, sleep=sleep)  # type: ignore[arg-type]
    await runner.start()
    job = await launch(GenerationService(store, runner))
    await asyncio.wait_for(runner.wait_finished(job.id), 5)
    await runner.stop()

    assert job.id in presenter.results
    assert waits == [2.0]  # the backoff before the second attempt, on the injected sleep


@pytest.mark.parametrize(("cost", "counted"), [(2, 2), (0, 0), (None, 4), (999, 4)])
async def test_a_job_pixeldojo_charged_at_submit_counts_as_spend_when_it_times_out(
    db: Database, cost: int | None, counted: int
) -> None:
    client, presenter, store = StallingPixelDojo(), RecordingPresenter(), JobStore(db)
    client.submit_cost = cost
    client.stall.add("pd-1")
    clock = ShiftedClock()
    runner = JobRunner(store, client, presenter, STALLS, clock=clock)  # type: ignore[arg-type]
    await runner.start()
    job = await launch(GenerationService(store, runner), num_outputs=4)
    await asyncio.wait_for(client.stalled.wait(), 5)
    clock.offset = 301
    await asyncio.wait_for(runner.wait_finished(job.id), 5)
    await runner.stop()

    assert "did not finish" in presenter.failures[job.id]
    assert await credits_used(db) == 0  # the member is refunded...
    # ...but the guild's spend cap counts what PixelDojo charged (bounded to 0..4 x price).
    spent = await db.run(lambda conn: ledger.guild_spend(conn, 1, 0))
    assert spent == counted


@pytest.mark.parametrize("cost", [-5, 10**12, 2.5, "lots", True])
def test_a_submit_answers_nonsense_credit_cost_is_ignored(cost: object) -> None:
    submitted = pixeldojo.SubmittedJob.from_payload(
        {"jobId": "pd-1", "creditCost": cost}, base_url="https://api.invalid"
    )
    assert submitted.credit_cost is None
