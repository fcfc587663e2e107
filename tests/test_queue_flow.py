"""The fair, durable queue end to end: the real discord.py bot between the Discord and
PixelDojo doubles. Nothing here waits on the clock: every step waits for a message, a state or
an event."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from aiohttp import web

from bot.app import PixelDojoBot
from bot.config import Settings
from bot.generation.models import GenerationRequest, Job, JobState
from bot.generation.runner import JobRunner, Phase, QueuePosition, RunnerSettings
from bot.generation.service import GenerationService, admit_without_limits
from bot.pixeldojo import PixelDojoClient
from bot.storage import Database
from bot.storage.jobs import JobStore
from tests.doubles.discord_double import DiscordDouble, MessageRecord, run_bot_against
from tests.doubles.pixeldojo import FakePixelDojo
from tests.doubles.pixeldojo_rate_limit import RateLimiter
from tests.doubles.presenter import RecordingPresenter
from tests.helpers import (
    ALICE_ID,
    BOB_ID,
    CAROL_ID,
    CHANNEL_ID,
    GUILD_ID,
    MOD_ID,
    OTHER_CHANNEL_ID,
    BotProcess,
    Harness,
    field_of,
    final_job_state,
    footer_has,
    job_id_of,
    outcome_text,
    settings_for,
    title_of,
)


async def ask(
    harness: Harness, prompt: str, user_id: int = ALICE_ID, channel_id: int = CHANNEL_ID
) -> str:
    """Run `/imagine`: "Job #N" when it started, else why not (`outcome_text`)."""
    record = await harness.imagine(prompt, user_id=user_id, channel_id=channel_id)
    return await outcome_text(harness, record)


def job_of(answer: str) -> int:
    assert answer.startswith("Job #"), answer
    return int(answer.split()[1].lstrip("#"))


def status_message(double: DiscordDouble, job_id: int) -> MessageRecord:
    """The job's one public message (its status, then its result)."""
    [message] = [
        m for m in double.messages.values() if footer_has(m, f"Job #{job_id}") and not m.ephemeral
    ]
    return message


def position_of(message: MessageRecord) -> str | None:
    return field_of(message, "Position")


async def shows_position(harness: Harness, job_id: int, text: str) -> MessageRecord:
    return await harness.double.wait_for_message(
        lambda m: (
            footer_has(m, f"Job #{job_id}")
            and not m.attachments
            and (position_of(m) or "").startswith(text)
        )
    )


def prompts_sent(api: FakePixelDojo) -> list[str]:
    return [s["prompt"] for s in api.submissions]


async def credits_used(harness: Harness, user_id: int) -> int:
    row = await harness.bot.services.db.fetchone(
        "SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE user_id = ? AND kind != 'grant'",
        (user_id,),
    )
    return row[0]


async def never_more_than(harness: Harness, user_id: int, limit: int) -> None:
    """At no moment did the member have more than `limit` jobs between being sent and posted."""
    rows = await harness.bot.services.db.fetchall(
        "SELECT submitted_at, finished_at FROM jobs WHERE user_id = ? AND submitted_at IS NOT NULL",
        (user_id,),
    )
    for start, _ in rows:
        running = sum(1 for s, f in rows if s <= start < f)
        assert running <= limit, rows


async def test_six_prompts_from_one_member_all_run_two_at_a_time(harness: Harness) -> None:
    harness.api.set_duration(3600)  # the first two run until released below
    for _ in range(3):  # learned durations, so the queue can give an ETA
        harness.bot.services.runner.durations.add(1.0)
    answers = [await ask(harness, f"prompt {i}") for i in range(1, 7)]
    job_ids = [job_of(answer) for answer in answers]  # none refused

    # Four wait, in order, each saying where it is and when to expect it; two were sent. (The
    # channel's edit budget sends these one by one: the first two are enough to check.)
    shown = [
        await shows_position(harness, job_id, f"{place} in line")
        for job_id, place in zip(job_ids[2:4], ("1st", "2nd"), strict=True)
    ]
    assert prompts_sent(harness.api) == ["prompt 1", "prompt 2"]
    etas = [int((position_of(m) or "").split("<t:")[1].split(":")[0]) for m in shown]
    assert etas == sorted(etas)
    assert all(title_of(m).startswith("⏳ Queued") for m in shown)
    assert all(f"pdj:cancel:{j}" in custom_ids(m) for j, m in zip(job_ids[2:4], shown, strict=True))

    harness.api.set_duration(0.05)
    harness.api.finish_jobs()
    for job_id in job_ids:
        await harness.result_for(job_id)
    assert prompts_sent(harness.api) == [f"prompt {i}" for i in range(1, 7)]
    await never_more_than(harness, ALICE_ID, 2)
    assert await credits_used(harness, ALICE_ID) == 6
    # Started jobs lost their Cancel button with the first edit after they were sent.
    for job_id in job_ids:
        message = status_message(harness.double, job_id)
        assert message.deleted or f"pdj:cancel:{job_id}" not in custom_ids(message)


def custom_ids(message: MessageRecord) -> list[str]:
    return [c["custom_id"] for c in message.iter_components() if "custom_id" in c]


async def test_another_members_prompt_is_sent_before_the_burst_goes_on(harness: Harness) -> None:
    harness.api.set_duration(3600)
    alice = [job_of(await ask(harness, f"alice {i}")) for i in range(1, 7)]
    await harness.generating(alice[1])
    # In another channel, whose status edits have a budget of their own.
    bob = job_of(await ask(harness, "bob's only one", BOB_ID, OTHER_CHANNEL_ID))
    await harness.generating(bob)
    assert prompts_sent(harness.api) == ["alice 1", "alice 2", "bob's only one"]
    harness.api.set_duration(0.05)
    harness.api.finish_jobs()
    for job_id in (*alice, bob):
        await harness.result_for(job_id)
    assert prompts_sent(harness.api)[:4] == ["alice 1", "alice 2", "bob's only one", "alice 3"]


async def test_a_member_at_the_queue_cap_is_refused_clearly(harness: Harness) -> None:
    harness.api.set_duration(3600)
    accepted = [job_of(await ask(harness, f"prompt {i}")) for i in range(1, 8)]  # 2 run, 5 wait
    refusal = await ask(harness, "one too many")
    assert refusal == (
        "You already have 5 prompts waiting; this server allows 5. "
        "Cancel one or wait for one to start."
    )
    assert await credits_used(harness, ALICE_ID) == 7  # nothing held for the refused one
    # Someone else is not affected by Alice's queue.
    assert (await ask(harness, "carol's", user_id=CAROL_ID)).startswith("Job #")
    harness.api.set_duration(0.05)
    harness.api.finish_jobs()
    for job_id in accepted:
        await harness.result_for(job_id)
    assert "one too many" not in prompts_sent(harness.api)


async def test_cancel_refunds_a_queued_job_at_once_and_it_never_reaches_pixeldojo(
    harness: Harness,
) -> None:
    harness.api.set_duration(3600)
    running = [job_of(await ask(harness, f"running {i}")) for i in (1, 2)]
    waiting = job_of(await ask(harness, "changed my mind"))
    status = await shows_position(harness, waiting, "1st in line")
    assert await credits_used(harness, ALICE_ID) == 3

    # Bob may not cancel Alice's prompt.
    refused = await harness.double.click(status.id, f"pdj:cancel:{waiting}", user_id=BOB_ID)
    await refused.wait_for_response()
    assert refused.ephemeral and refused.original is not None
    assert "Only the person who asked" in (refused.original.content or "")

    click = await harness.double.click(status.id, f"pdj:cancel:{waiting}", user_id=ALICE_ID)
    reply = await harness.reply(click)
    assert reply.ephemeral and reply.content == f"Cancelled job #{waiting}; 1 credit is back."
    # Refunded at once, in the same step: before anything else happens.
    assert await credits_used(harness, ALICE_ID) == 2
    job = await harness.bot.services.generation.job(waiting)
    assert job is not None and job.state is JobState.FAILED
    cancelled = await harness.double.wait_for_message(
        lambda m: m.id == status.id and title_of(m).startswith("🚫 Cancelled")
    )
    assert "1 credit was refunded" in cancelled.embeds[0]["description"]
    assert custom_ids(cancelled) == []

    harness.api.set_duration(0.05)
    harness.api.finish_jobs()
    for job_id in running:
        await harness.result_for(job_id)
    assert "changed my mind" not in prompts_sent(harness.api)
    assert await credits_used(harness, ALICE_ID) == 2


async def test_a_moderator_may_cancel_a_members_queued_prompt_and_it_is_audited(
    harness: Harness,
) -> None:
    harness.api.set_duration(3600)
    running = [job_of(await ask(harness, f"running {i}")) for i in (1, 2)]
    waiting = job_of(await ask(harness, "off topic"))
    status = await shows_position(harness, waiting, "1st in line")
    click = await harness.double.click(status.id, f"pdj:cancel:{waiting}", user_id=MOD_ID)
    reply = await harness.reply(click)
    assert reply.ephemeral and reply.content == f"Cancelled job #{waiting}; 1 credit is back."
    entries = await harness.bot.services.moderation.audit_entries(GUILD_ID, limit=5)
    cancel = next(e for e in entries if e.action == "job.cancelled")
    assert (cancel.actor_id, cancel.target_id) == (MOD_ID, waiting)
    job = await harness.bot.services.generation.job(waiting)
    assert job is not None and job.error == "Cancelled by a moderator before it started."
    harness.api.set_duration(0.05)
    harness.api.finish_jobs()
    for job_id in running:
        await harness.result_for(job_id)
    assert "off topic" not in prompts_sent(harness.api)


async def test_a_started_job_cannot_be_cancelled(harness: Harness) -> None:
    harness.api.set_duration(3600)
    job_id = job_of(await ask(harness, "already going"))
    status = await harness.double.wait_for_message(
        lambda m: footer_has(m, f"Job #{job_id}") and title_of(m).startswith("🎨 Generating")
    )
    # A moderator whose client still shows the button from before the job started.
    status.components = [
        {
            "type": 1,
            "components": [
                {"type": 2, "style": 2, "label": "Cancel", "custom_id": f"pdj:cancel:{job_id}"}
            ],
        }
    ]
    click = await harness.double.click(status.id, f"pdj:cancel:{job_id}", user_id=MOD_ID)
    reply = await harness.reply(click)
    assert reply.ephemeral
    assert reply.content == (
        f"Job #{job_id} has already started, and PixelDojo can't stop a job once it is running. "
        "You are only charged if it posts images."
    )
    harness.api.finish_jobs()
    await harness.result_for(job_id)
    assert await credits_used(harness, ALICE_ID) == 1


async def test_a_restart_mid_queue_resumes_it_in_order(
    double: DiscordDouble, api: FakePixelDojo, settings: Settings
) -> None:
    api.set_duration(3600)
    first = PixelDojoBot(settings, guild_ready_timeout=0.1)
    async with run_bot_against(double, first):
        await double.wait_for_commands()
        harness = Harness(first, double, api)
        alice = [job_of(await ask(harness, f"alice {i}")) for i in range(1, 5)]
        bob = [
            job_of(await ask(harness, f"bob {i}", BOB_ID, OTHER_CHANNEL_ID)) for i in range(1, 4)
        ]
        for job_id in (*alice[:2], *bob[:2]):
            await harness.generating(job_id)
        await shows_position(harness, bob[-1], "2nd in line")  # after alice 3, before alice 4
        assert prompts_sent(api) == ["alice 1", "alice 2", "bob 1", "bob 2"]
    # The bot is down. Waiting jobs stay queued, with their credits held.
    queued = await first_states(settings, [*alice, *bob])
    assert [queued[j] for j in (*alice[2:], bob[2])] == [JobState.QUEUED] * 3

    api.set_duration(0.05)
    api.finish_jobs()
    second = PixelDojoBot(settings, guild_ready_timeout=0.1)
    async with run_bot_against(double, second):
        harness = Harness(second, double, api)
        for job_id in (*alice, *bob):
            job = await asyncio.wait_for(second.services.runner.wait_finished(job_id), 10)
            assert job.state is JobState.POSTED, job
        assert await credits_used(harness, ALICE_ID) == 4
        assert await credits_used(harness, BOB_ID) == 3
    sent = prompts_sent(api)
    assert sent[:4] == ["alice 1", "alice 2", "bob 1", "bob 2"]
    # In their original order, none sent twice, none refunded as "restarted".
    assert [p for p in sent[4:] if p.startswith("alice")] == ["alice 3", "alice 4"]
    assert sorted(sent[4:]) == ["alice 3", "alice 4", "bob 3"]
    assert len(sent) == 7


async def test_killed_mid_queue_resumes_the_queue_after_the_crash(
    double: DiscordDouble, api: FakePixelDojo, settings: Settings, bot_process: BotProcess
) -> None:
    api.set_duration(3600)
    bot_process.start()
    await double.wait_until_ready(timeout=20, min_identifies=1)
    await double.wait_for_commands(timeout=20)
    job_ids = []
    for i in (1, 2, 3):
        record = await double.slash(
            "imagine",
            {"prompt": f"crash {i}"},
            user_id=ALICE_ID,
            guild_id=GUILD_ID,
            channel_id=CHANNEL_ID,
        )
        await record.wait_for_response(timeout=5)
        assert record.original is not None  # the job's public status
        job_ids.append(job_id_of(record.original))
    for job_id in job_ids[:2]:
        await double.wait_for_message(
            lambda m, j=job_id: footer_has(m, f"Job #{j}") and title_of(m).startswith("🎨")
        )
    await double.wait_for_message(
        lambda m: footer_has(m, f"Job #{job_ids[2]}") and position_of(m) is not None
    )
    await asyncio.to_thread(bot_process.kill)  # SIGKILL with one job waiting in line
    assert (await first_states(settings, job_ids))[job_ids[2]] is JobState.QUEUED

    api.set_duration(0.05)
    api.finish_jobs()
    bot_process.start()
    await double.wait_until_ready(timeout=20, min_identifies=2)
    for job_id in job_ids:
        state, message_id = await final_job_state(settings, job_id)
        assert state is JobState.POSTED and message_id is not None
    assert prompts_sent(api) == ["crash 1", "crash 2", "crash 3"]


async def first_states(settings: Settings, job_ids: list[int]) -> dict[int, JobState]:
    async with aiosqlite.connect(settings.database_path) as conn:
        rows = await conn.execute_fetchall(
            f"SELECT id, state FROM jobs WHERE id IN ({','.join('?' for _ in job_ids)})", job_ids
        )
    return {row[0]: JobState(row[1]) for row in rows}


async def test_a_rate_limited_submit_stays_queued_and_is_posted_later(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # Four 429s: what the client gives up after today, and at least one for any client.
    harness.api.fault_next("429", n=4, route="submit", retry_after=0.01)
    with caplog.at_level(logging.INFO, logger="bot.generation.runner"):
        job_id = job_of(await ask(harness, "patience"))
        result = await harness.result_for(job_id)
    assert result.embeds[0]["description"] == "patience"
    assert f"job {job_id}: PixelDojo is rate limiting; queued again" in caplog.text
    status = status_message(harness.double, job_id)
    titles = [e["embeds"][0].get("title", "") for e in status.edits if e.get("embeds")]
    assert not any(t.startswith("❌") for t in titles)  # never shown as a failure
    accepted = [r for r in harness.api.request_log if r[0] == "POST" and r[2] == 202]
    assert len(accepted) == 1
    assert await credits_used(harness, ALICE_ID) == 1


class SeenLimiter(RateLimiter):
    """The documented per-key limit, telling the test when it first refuses."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.refused = asyncio.Event()

    @web.middleware
    async def observed(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response = await self.middleware(request, handler)
        if response.status == 429:
            self.refused.set()
        return response


class FrozenClock:
    """Unix seconds that move only when the test says (from now: `X-RateLimit-Reset` must be
    a plausible time for the client)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def limited() -> AsyncIterator[tuple[FakePixelDojo, SeenLimiter, FrozenClock]]:
    clock = FrozenClock()
    # Only submits count (polls and the schema are exempt), two per window: the third waits.
    # Bare 429s, no headers: the window moves only when the test says, so X-RateLimit-* would
    # teach the bot's request budget a limit it then paces to, and nothing would be refused.
    limiter = SeenLimiter(
        limit=2,
        window=1.0,
        headers=False,
        clock=clock,
        exempt=lambda request: request.method != "POST",
    )
    async with FakePixelDojo(job_duration=0.05, middlewares=[limiter.observed]) as fake:
        yield fake, limiter, clock


async def test_under_the_real_limit_nobody_fails_and_everyone_is_posted(
    double: DiscordDouble,
    limited: tuple[FakePixelDojo, SeenLimiter, FrozenClock],
    tmp_path: Path,
) -> None:
    api, limiter, clock = limited
    settings = settings_for(double, api, tmp_path / "bot.sqlite3")
    bot = PixelDojoBot(settings, guild_ready_timeout=0.1)
    async with run_bot_against(double, bot):
        await double.wait_for_commands()
        harness = Harness(bot, double, api)
        jobs = [
            job_of(await ask(harness, f"from {user}", user_id=user))
            for user in (ALICE_ID, BOB_ID, CAROL_ID)
        ]
        await asyncio.wait_for(limiter.refused.wait(), 10)
        clock.now += 1.0  # the window moves on
        for job_id in jobs:
            await harness.result_for(job_id, timeout=20)
    failures = [m for m in double.messages.values() if title_of(m).startswith("❌")]
    assert failures == []
    assert limiter.stats.total_refused >= 1
    assert limiter.stats.allowed["POST /api/v1/models/{model}/run"] == 3


async def test_a_queued_edit_keeps_its_input_image_across_a_restart(tmp_path: Path) -> None:
    db = Database(tmp_path / "bot.sqlite3")
    await db.connect()
    try:
        store = JobStore(db)
        url = "https://cdn.discordapp.com/attachments/1/2/cat.png"
        request = GenerationRequest(
            guild_id=1,
            channel_id=2,
            user_id=3,
            prompt="make it blue",
            aspect_ratio="1:1",
            input_image_url=url,
        )
        queued, _ = await store.create_admitted(request, admit_without_limits)
        started, _ = await store.create_admitted(request, admit_without_limits)
        await store.mark_sending(started.id)
        resumed = {job.id: job for job in await store.active()}
        # A restart sends the queued edit with its image; one already sent never needs it.
        assert resumed[queued.id].state is JobState.QUEUED
        assert resumed[queued.id].input_image_url == url
        assert resumed[started.id].input_image_url is None
    finally:
        await db.close()


class PositionsPresenter(RecordingPresenter):
    """Records every place in line the runner shows, and signals each one."""

    def __init__(self) -> None:
        super().__init__()
        self.places: dict[int, QueuePosition] = {}
        self.moved = asyncio.Event()

    async def show_status(
        self, job: Job, phase: Phase, elapsed: float, queue: QueuePosition | None = None
    ) -> None:
        await super().show_status(job, phase, elapsed, queue)
        if queue is not None:
            self.places[job.id] = queue
            self.moved.set()


async def test_the_eta_counts_the_members_own_jobs_ahead(tmp_path: Path) -> None:
    db = Database(tmp_path / "bot.sqlite3")
    await db.connect()
    presenter = PositionsPresenter()
    now = 1_900_000_000.0

    async def two_at_once(guild_id: int) -> int:
        return 2

    async with FakePixelDojo(job_duration=3600) as api:
        client = PixelDojoClient("test-key", api.base_url)
        runner = JobRunner(
            JobStore(db),
            client,
            presenter,
            RunnerSettings(poll_initial_interval=0.02, poll_max_interval=0.05, job_timeout=60),
            clock=lambda: now,
            member_concurrency=two_at_once,
        )
        for _ in range(3):
            runner.durations.add(8.0)
        await runner.start()
        service = GenerationService(JobStore(db), runner)
        try:
            jobs = []
            for i in range(5):
                job = await service.reserve(request_for(f"p{i}"))
                jobs.append(await service.launch(job, status_message_id=100 + i))
            while len(presenter.places) < 3:
                presenter.moved.clear()
                await asyncio.wait_for(presenter.moved.wait(), 5)
        finally:
            await runner.stop()
            await client.aclose()
            await db.close()
    waiting = [presenter.places[job.id] for job in jobs[2:]]
    assert [w.position for w in waiting] == [1, 2, 3]
    # Two of hers run (8 s each): the next two start when they end, the last a round later;
    # each result comes about 8 s after its start.
    assert [w.eta for w in waiting] == [now + 16, now + 16, now + 24]


def request_for(prompt: str) -> GenerationRequest:
    return GenerationRequest(
        guild_id=1, channel_id=2, user_id=3, prompt=prompt, aspect_ratio="1:1", num_outputs=1
    )
