"""The job runner against the PixelDojo double, with a recording presenter (no Discord)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.generation.models import Job, JobState
from bot.generation.runner import (
    DeliveryError,
    JobRunner,
    Phase,
    RunnerSettings,
)
from bot.generation.service import GenerationService
from bot.pixeldojo.client import PixelDojoClient
from bot.storage import Database
from bot.storage.jobs import JobStore
from tests.doubles.pixeldojo import FakePixelDojo
from tests.doubles.presenter import RecordingPresenter
from tests.helpers import FAST, credits_used, request


@pytest.fixture
async def api():
    async with FakePixelDojo(job_duration=0.05) as fake:
        yield fake


@pytest.fixture
async def db(tmp_path: Path):
    database = Database(tmp_path / "bot.sqlite3")
    await database.connect()
    yield database
    await database.close()


@pytest.fixture
async def harness(api: FakePixelDojo, db: Database):
    presenter = RecordingPresenter()
    client = PixelDojoClient("test-key", api.base_url, backoff_base=0.01, backoff_cap=0.02)
    store = JobStore(db)
    runner = JobRunner(store, client, presenter, FAST)
    await runner.start()
    yield GenerationService(store, runner), store, presenter
    await runner.stop()
    await client.aclose()


async def run_job(
    service: GenerationService, presenter: RecordingPresenter, **overrides: object
) -> Job:
    job = await service.reserve(request(**overrides))
    await service.launch(job, status_message_id=99)
    # Not the presenter's event: the runner records POSTED only after post_result returned.
    await asyncio.wait_for(service.runner.wait_finished(job.id), 5)
    return job


async def test_completed_job_is_posted_and_settled(
    harness, api: FakePixelDojo, db: Database
) -> None:
    service, store, presenter = harness
    job = await run_job(service, presenter, num_outputs=3, aspect_ratio="16:9")
    assert len(presenter.results[job.id]) == 3
    final = await store.get(job.id)
    assert final is not None and final.state is JobState.POSTED
    assert final.result_message_id == 10_000 + job.id
    assert final.credits_charged == 3
    assert await credits_used(db) == 3
    assert api.submissions[0] == {
        "prompt": "a red fox",
        "aspect_ratio": "16:9",
        "num_outputs": 3,
        "seed": final.seed,
    }
    assert final.seed is not None  # chosen by the bot so the result can be reproduced


async def test_settles_to_what_the_api_charged(api: FakePixelDojo, harness, db: Database) -> None:
    service, _store, presenter = harness
    api.credit_cost_per_output = 0
    job = await run_job(service, presenter, num_outputs=2)
    kinds = await db.fetchall(
        "SELECT kind, amount FROM ledger WHERE job_id = ? ORDER BY id", (job.id,)
    )
    assert [(r[0], r[1]) for r in kinds] == [("reserve", 2), ("settle", -2)]
    assert await credits_used(db) == 0


@pytest.mark.parametrize(
    ("fault", "expected"),
    [("402", "out of credits"), ("401", "API key"), ("422", "rejected")],
)
async def test_refused_submission_is_refunded(harness, api, db, fault: str, expected: str) -> None:
    service, store, presenter = harness
    api.fault_next(fault, route="submit")
    job = await run_job(service, presenter)
    assert expected in presenter.failures[job.id]
    final = await store.get(job.id)
    assert final is not None and final.state is JobState.FAILED
    assert await credits_used(db) == 0


async def test_failed_job_is_refunded_with_the_api_reason(harness, api, db) -> None:
    service, _store, presenter = harness
    api.fail_next(error="NSFW content detected")
    job = await run_job(service, presenter, num_outputs=2)
    assert "NSFW content detected" in presenter.failures[job.id]
    assert await credits_used(db) == 0


async def test_poll_faults_are_ridden_out(harness, api, db) -> None:
    service, _store, presenter = harness
    api.set_duration(0.2)
    api.fault_next("500", n=2, route="poll")
    api.fault_next("malformed", route="poll")
    api.fault_next("429", route="poll")
    job = await run_job(service, presenter)
    assert job.id in presenter.results
    assert await credits_used(db) == 1


async def test_unknown_statuses_mean_still_running(harness, api) -> None:
    service, _store, presenter = harness
    api.set_status_sequence(["queued", "warming-up", "processing"])
    job = await run_job(service, presenter)
    assert job.id in presenter.results
    assert (job.id, Phase.GENERATING) in presenter.statuses


async def test_expired_images_fail_and_refund(harness, api, db) -> None:
    service, _store, presenter = harness
    api.fault_next("404", route="download")
    job = await run_job(service, presenter)
    assert "expired" in presenter.failures[job.id].lower()
    assert await credits_used(db) == 0


async def test_timeout_gives_up_and_refunds(api, db) -> None:
    presenter = RecordingPresenter()
    async with PixelDojoClient("test-key", api.base_url) as client:
        store = JobStore(db)
        runner = JobRunner(store, client, presenter, RunnerSettings(0.02, 0.05, job_timeout=0.3))
        await runner.start()
        api.set_duration(60)
        job = await run_job(GenerationService(store, runner), presenter)
        await runner.stop()
    assert "did not finish" in presenter.failures[job.id]
    assert await credits_used(db) == 0


async def test_permanent_delivery_failure_refunds(harness, db) -> None:
    service, _store, presenter = harness
    presenter.refuse_posts = DeliveryError("no access", permanent=True)
    job = await run_job(service, presenter)
    assert "no access" in presenter.failures[job.id]
    assert await credits_used(db) == 0


async def test_restart_resumes_submitted_and_completed_jobs(
    api: FakePixelDojo, db: Database
) -> None:
    store = JobStore(db)
    async with PixelDojoClient("test-key", api.base_url) as client:
        # First life: a job is submitted, then the process "dies" before it completes.
        api.set_duration(3600)  # finished below, once the first runner is gone
        first_presenter = RecordingPresenter()
        first = JobRunner(store, client, first_presenter, FAST)
        await first.start()
        service = GenerationService(store, first)
        running = await service.reserve(request())
        await service.launch(running, 5)
        # Reserved, and the process died before its message id was recorded: it still runs.
        orphan = await service.reserve(request(prompt="not yet submitted"))
        await asyncio.wait_for(first_presenter.generating.wait(), 5)
        await first.stop()
        api.finish_jobs()
        api.set_duration(0.05)

        second_presenter = RecordingPresenter()
        second = JobRunner(store, client, second_presenter, FAST)
        await second.start()
        await asyncio.wait_for(second.wait_finished(running.id), 5)
        await asyncio.wait_for(second.wait_finished(orphan.id), 5)
        await second.stop()
    assert running.id in second_presenter.results and orphan.id in second_presenter.results
    assert len(api.submissions) == 2
    assert await credits_used(db) == 2


async def test_resumed_completed_job_already_posted_is_not_posted_again(api, db) -> None:
    store = JobStore(db)
    async with PixelDojoClient("test-key", api.base_url) as client:
        presenter = RecordingPresenter()
        runner = JobRunner(store, client, presenter, FAST)
        service = GenerationService(store, runner)
        job = await service.reserve(request())
        submitted = await client.submit(prompt="a red fox", aspect_ratio="1:1")
        await store.mark_submitted(
            job.id, api_job_id=submitted.job_id, status_url=submitted.status_url, expires_at=None
        )
        await store.mark_completed(job.id, charged=1)
        presenter.posted_before[job.id] = 4242
        await runner.start()
        final = await asyncio.wait_for(runner.wait_finished(job.id), 5)
        await runner.stop()
    assert presenter.results == {}
    assert final.state is JobState.POSTED and final.result_message_id == 4242


async def test_typical_duration_is_remembered_across_restarts(api, db) -> None:
    store = JobStore(db)
    async with PixelDojoClient("test-key", api.base_url) as client:
        presenter = RecordingPresenter()
        runner = JobRunner(store, client, presenter, FAST)
        await runner.start()
        service = GenerationService(store, runner)
        for _ in range(3):
            await run_job(service, presenter)
        learned = runner.durations.typical()
        await runner.stop()
        again = JobRunner(store, client, RecordingPresenter(), FAST)
        await again.start()
        await again.stop()
    assert learned is not None and again.durations.typical() == pytest.approx(learned)


class FlakyStore(JobStore):
    """A store whose first settlement fails, as a locked or full disk would make it."""

    failures = 1

    async def mark_completed(self, job_id: int, **kwargs):  # type: ignore[override]
        if self.failures:
            self.failures -= 1
            raise OSError("disk I/O error")
        return await super().mark_completed(job_id, **kwargs)


async def test_a_failed_database_write_after_polling_is_retried(api, db) -> None:
    presenter = RecordingPresenter()
    store = FlakyStore(db)
    async with PixelDojoClient("test-key", api.base_url) as client:
        runner = JobRunner(store, client, presenter, FAST)
        await runner.start()
        job = await run_job(GenerationService(store, runner), presenter)
        await runner.stop()
    assert store.failures == 0
    assert job.id in presenter.results
    assert await credits_used(db) == 1
