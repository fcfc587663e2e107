"""Delivering a result when Discord misbehaves: network outages, a deleted channel."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.app import PixelDojoBot
from bot.config import Settings
from bot.generation.models import JobState
from tests.doubles.discord_double import DiscordDouble, InteractionRecord, run_bot_against
from tests.doubles.pixeldojo import FakePixelDojo
from tests.helpers import (
    ALICE_ID,
    BOB_ID,
    CHANNEL_ID,
    OTHER_CHANNEL_ID,
    Harness,
    footer_has,
    queued_job_id,
    title_of,
)


def hold_jobs(api: FakePixelDojo) -> None:
    """New PixelDojo jobs stay running until `finish_jobs` (no race with the test's steps)."""
    api.set_duration(24 * 3600)


def finish_jobs(api: FakePixelDojo) -> None:
    for job in api.jobs.values():
        job.complete_at = 0.0


async def test_a_dropped_connection_while_posting_is_retried(harness: Harness) -> None:
    hold_jobs(harness.api)
    job_id = await queued_job_id(harness, await harness.imagine("a kite in the storm"))
    await harness.generating(job_id)
    # The next edit of the job's message (the result) hits a broken connection.
    original = r"/webhooks/\d+/[^/]+/messages/@original"
    harness.double.drop_connections("PATCH", original, with_files=True)
    finish_jobs(harness.api)

    job = await asyncio.wait_for(harness.bot.services.runner.wait_finished(job_id), 10)
    assert job.state is JobState.POSTED, job.error
    assert job.credits_charged == 1
    result = await harness.result_for(job_id)
    assert job.result_message_id == result.id
    edits = harness.double.requests_to("PATCH", original)
    assert [r.status for r in edits if r.status != 200] == [0]  # dropped (never answered)
    assert edits[-1].status == 200  # ... then the result went in
    assert [m.id for m in harness.double.channel_messages(CHANNEL_ID) if m.attachments] == [
        result.id
    ]


# -- crash recovery: a result posted but not recorded is found again, and only its own -------


def results_of(double: DiscordDouble, job_id: int) -> list[int]:
    """Live result messages of the job, told apart by their buttons (footers can mislead)."""
    return [
        m.id
        for m in double.channel_messages(CHANNEL_ID)
        if m.attachments
        and any(c.get("custom_id") == f"pdj:reroll:{job_id}" for c in m.iter_components())
    ]


async def forget_the_post(bot: PixelDojoBot, job_id: int) -> None:
    """As if the process died after Discord took the post but before SQLite recorded it."""
    async with bot.services.db.transaction() as conn:
        await conn.execute(
            "UPDATE jobs SET state = 'completed', result_message_id = NULL WHERE id = ?",
            (job_id,),
        )


async def test_recovery_never_adopts_another_jobs_result(
    double: DiscordDouble, api: FakePixelDojo, settings: Settings
) -> None:
    first = PixelDojoBot(settings, guild_ready_timeout=0.1)
    async with run_bot_against(double, first):
        harness = Harness(first, double, api)
        await double.wait_for_commands()
        one = await queued_job_id(harness, await harness.imagine("job one"))
        lost = await harness.result_for(one)
        await first.services.runner.wait_finished(one)
        async with first.services.db.transaction() as conn:  # the next job is #12
            await conn.execute("UPDATE sqlite_sequence SET seq = 11 WHERE name = 'jobs'")
        twelve = await queued_job_id(harness, await harness.imagine("job twelve"))
        assert twelve == 12
        other = await harness.result_for(twelve)
        await first.services.runner.wait_finished(twelve)
        await forget_the_post(first, one)
    # Job 1's post never reached Discord after all, and its nonce has long expired.
    await double.delete_message(lost.id)
    double.nonce_ttl = 0

    second = PixelDojoBot(settings, guild_ready_timeout=0.1)
    async with run_bot_against(double, second):
        final = await asyncio.wait_for(second.services.runner.wait_finished(one), 10)
    assert final.state is JobState.POSTED
    assert final.result_message_id != other.id, "adopted job 12's result"
    assert results_of(double, one) == [final.result_message_id]
    assert results_of(double, twelve) == [other.id]


async def test_recovery_finds_the_result_behind_a_busy_channel(
    double: DiscordDouble, api: FakePixelDojo, settings: Settings
) -> None:
    first = PixelDojoBot(settings, guild_ready_timeout=0.1)
    async with run_bot_against(double, first):
        harness = Harness(first, double, api)
        await double.wait_for_commands()
        hold_jobs(api)
        job_id = await queued_job_id(harness, await harness.imagine("a busy harbour"))
        await double.wait_for_message(
            lambda m: footer_has(m, f"Job #{job_id}") and title_of(m).startswith("🎨")
        )
        for n in range(120):  # members chat while the image is generated
            await double.user_message(CHANNEL_ID, BOB_ID, f"chatter {n}")
        finish_jobs(api)
        result = await harness.result_for(job_id)
        await first.services.runner.wait_finished(job_id)
        await forget_the_post(first, job_id)
    double.nonce_ttl = 0  # a re-send would not be deduplicated any more

    posts_before = len(double.requests_to("POST", rf"/channels/{CHANNEL_ID}/messages"))
    second = PixelDojoBot(settings, guild_ready_timeout=0.1)
    async with run_bot_against(double, second):
        final = await asyncio.wait_for(second.services.runner.wait_finished(job_id), 10)
    assert final.state is JobState.POSTED and final.result_message_id == result.id
    assert results_of(double, job_id) == [result.id]
    assert len(double.requests_to("POST", rf"/channels/{CHANNEL_ID}/messages")) == posts_before


# -- the channel disappears while the job runs ---------------------------------------------


async def job_in_a_channel_that_is_then_deleted(harness: Harness) -> tuple[InteractionRecord, int]:
    """Start a job, delete its channel while PixelDojo generates, then let PixelDojo finish."""
    hold_jobs(harness.api)
    record = await harness.imagine("a lighthouse at dawn", num_outputs=2)
    job_id = await queued_job_id(harness, record)
    await harness.generating(job_id)
    return record, job_id


async def finish_into_the_void(harness: Harness, job_id: int) -> None:
    await harness.double.delete_channel(CHANNEL_ID)
    finish_jobs(harness.api)
    job = await asyncio.wait_for(harness.bot.services.runner.wait_finished(job_id), 10)
    assert job.state is JobState.FAILED


async def credits_left(harness: Harness) -> str:
    reply = await harness.reply(
        await harness.command("credits", user_id=ALICE_ID, channel_id=OTHER_CHANNEL_ID)
    )
    return reply.embeds[0]["description"]


async def test_member_hears_of_a_deleted_channel_through_the_interaction(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    before = await credits_left(harness)
    record, job_id = await job_in_a_channel_that_is_then_deleted(harness)
    await finish_into_the_void(harness, job_id)

    assert len(record.followups) == 1  # the status was the response itself
    notice = record.followups[0]
    assert notice.ephemeral
    assert f"Job #{job_id}" in (notice.content or "")
    assert "2 credits were refunded" in notice.embeds[0]["description"]
    assert await credits_left(harness) == before
    assert "telling the member privately" in caplog.text
    assert record.token not in caplog.text


async def test_member_hears_of_a_deleted_channel_by_dm_once_the_token_expired(
    harness: Harness,
) -> None:
    before = await credits_left(harness)
    record, job_id = await job_in_a_channel_that_is_then_deleted(harness)
    harness.double.interaction_token_ttl = 0  # the 15 minutes are over
    await finish_into_the_void(harness, job_id)

    assert record.followups == []
    dm = harness.double.world.dm_channel_for(ALICE_ID)
    (notice,) = harness.double.channel_messages(dm)
    assert f"Job #{job_id}" in (notice.content or "")
    assert "2 credits were refunded" in notice.embeds[0]["description"]
    harness.double.interaction_token_ttl = 15 * 60
    assert await credits_left(harness) == before
