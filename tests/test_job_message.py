"""One public message per job, through the real bot and the Discord double: the interaction's
response, its progress, its route after the token's life, and admission inside the 3 s window."""

from __future__ import annotations

import asyncio
import datetime
import io
from typing import Any

import pytest
from PIL import Image

import cogs._launch
from bot.discord_ui.embeds import progress_text
from bot.errors import RequestRefused
from bot.generation.models import JobState
from tests.doubles.discord_models import MIB, InteractionRecord, MessageRecord
from tests.helpers import (
    ALICE_ID,
    CHANNEL_ID,
    GUILD_ID,
    Harness,
    credits_used,
    field_of,
    queued_job_id,
)

ORIGINAL = r"/webhooks/\d+/[^/]+/messages/@original"


def progress_of(message: MessageRecord) -> str | None:
    return field_of(message, "Progress")


def test_the_progress_bar_is_honest_about_the_estimate() -> None:
    assert progress_text(5, 10) == "▰▰▰▰▰▰▱▱▱▱▱▱ 50% · about 5 s left"
    assert progress_text(0, 10).startswith("▱▱▱▱▱▱▱▱▱▱▱▱ 0%")
    # Past the estimate it never claims to be done, nor counts below zero.
    assert progress_text(9.6, 10) == "▰▰▰▰▰▰▰▰▰▰▰▱ any moment now"
    assert progress_text(60, 10) == "▰▰▰▰▰▰▰▰▰▰▰▱ any moment now"
    assert progress_text(3, None).startswith("Started 3 s ago")


async def test_a_generating_job_shows_a_moving_progress_bar(harness: Harness) -> None:
    harness.api.set_duration(3600)
    for _ in range(3):  # learned: jobs take about 2 s
        harness.bot.services.runner.durations.add(2.0)
    job_id = await queued_job_id(harness, await harness.imagine("a slow sunrise"))
    message = await harness.generating(job_id)
    seen: set[str] = set()

    def moved() -> bool:
        text = progress_of(message)
        if text is not None:
            seen.add(text)
        return len(seen) >= 3 and any("any moment now" in t for t in seen)

    # The bar moves with no poll in between (PixelDojo is asked about once per job), and
    # once past the estimate it says so instead of lying.
    await harness.double.wait_until(moved, timeout=15)
    assert any("% · about" in t for t in seen), seen
    assert all(edit.source == "webhook" for edit in message.edits)
    harness.api.finish_jobs()
    result = await harness.result_for(job_id)
    assert result.id == message.id and progress_of(result) is None


async def test_after_the_token_dies_the_same_message_is_edited_through_the_channel(
    harness: Harness,
) -> None:
    harness.api.set_duration(3600)
    record = await harness.imagine("a patient heron")
    job_id = await queued_job_id(harness, record)
    message = await harness.generating(job_id)
    harness.double.interaction_token_ttl = 0  # Discord now answers 401 to the token
    harness.api.finish_jobs()
    result = await harness.result_for(job_id)
    assert result.id == message.id and result.attachments
    assert result.edits[-1].source == "channel"
    assert harness.double.requests_to("POST", rf"/channels/{CHANNEL_ID}/messages") == []


async def test_once_the_token_is_old_the_bot_does_not_try_it(harness: Harness) -> None:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=16)
    harness.bot.presenter.messages.now = lambda: later  # every token is past its 15 minutes
    job_id = await queued_job_id(harness, await harness.imagine("a patient heron"))
    result = await harness.result_for(job_id)
    assert result.edits and all(edit.source == "channel" for edit in result.edits)
    assert harness.double.requests_to("PATCH", ORIGINAL) == []
    assert harness.double.requests_to("POST", rf"/channels/{CHANNEL_ID}/messages") == []


async def test_a_token_refused_on_the_result_still_uploads_whole_images(
    harness: Harness,
) -> None:
    harness.api.set_duration(3600)
    job_id = await queued_job_id(harness, await harness.imagine("a patient heron"))
    message = await harness.generating(job_id)
    harness.double.refuse_requests(
        "PATCH", ORIGINAL, (401, 50027, "Invalid Webhook Token"), with_files=True
    )
    harness.api.finish_jobs()
    result = await harness.result_for(job_id)
    assert result.id == message.id and result.edits[-1].source == "channel"
    [attachment] = result.attachments
    assert attachment.size > 0
    with Image.open(io.BytesIO(attachment.data)) as image:
        assert image.size[0] > 0


async def test_a_deleted_job_message_gets_one_new_message_for_the_result(
    harness: Harness,
) -> None:
    harness.api.set_duration(3600)
    job_id = await queued_job_id(harness, await harness.imagine("a vanishing act"))
    message = await harness.generating(job_id)
    await harness.double.delete_message(message.id)
    harness.api.finish_jobs()
    result = await harness.result_for(job_id)
    assert result.id != message.id
    assert [m.id for m in harness.double.channel_messages(CHANNEL_ID) if m.attachments] == [
        result.id
    ]


async def test_the_upload_limit_is_the_interactions(harness: Harness) -> None:
    # The guild's boost tier says 10 MiB; the channel really takes 5 (as Discord reports in
    # the interaction's attachment_size_limit), and the double refuses anything above.
    harness.double.guilds[GUILD_ID].filesize_limit = 5 * MIB
    harness.api.image_base_size = 1536  # a noisy PNG of about 7 MiB
    harness.api.oversize_images(6 * MIB)
    job_id = await queued_job_id(harness, await harness.imagine("noise"))
    result = await harness.result_for(job_id, timeout=30)
    assert result.attachments[0].size <= 5 * MIB
    assert "re-encoded" in result.embeds[0]["footer"]["text"]


# -- admission that takes longer than Discord's window --------------------------------------


def hold_admission(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, *, refuse: str | None
) -> None:
    """Admission waits until the double has the bot's "thinking…" answer, then proceeds (or
    refuses with `refuse`)."""
    monkeypatch.setattr(cogs._launch, "ACK_WITHIN", 0.01)
    reserve = harness.bot.services.generation.reserve
    double = harness.double

    async def slow_reserve(*args: Any, **kwargs: Any) -> Any:
        await double.wait_until(lambda: any(r.responses for r in double.interactions.values()))
        if refuse is not None:
            raise RequestRefused(refuse)
        return await reserve(*args, **kwargs)

    monkeypatch.setattr(harness.bot.services.generation, "reserve", slow_reserve)


async def test_slow_admission_thinks_in_public_then_refuses_in_private(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold_admission(harness, monkeypatch, refuse="You have 0 of 10 credits left today.")
    record: InteractionRecord = await harness.imagine("patience")
    assert record.response_type == 5 and not record.ephemeral  # public "thinking…"
    reply = await harness.reply(record)
    assert reply.ephemeral and reply.content == "You have 0 of 10 credits left today."
    assert record.original is not None and record.original.deleted  # nothing left in public
    assert harness.api.submissions == []


async def test_slow_admission_fills_the_thinking_message_with_the_job(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold_admission(harness, monkeypatch, refuse=None)
    record = await harness.imagine("patience pays")
    assert record.response_type == 5
    job_id = await queued_job_id(harness, record)
    result = await harness.result_for(job_id)
    assert record.original is not None and result.id == record.original.id
    assert record.followups == []


# -- the response itself goes wrong -----------------------------------------------------------

CALLBACK = r"/interactions/\d+/[^/]+/callback"


async def test_a_response_lost_on_the_way_puts_the_status_in_the_channel(
    harness: Harness,
) -> None:
    harness.double.drop_connections("POST", CALLBACK)
    record = await harness.double.slash(
        "imagine",
        {"prompt": "lost in transit"},
        user_id=ALICE_ID,
        guild_id=GUILD_ID,
        channel_id=CHANNEL_ID,
    )
    result = await harness.shown_with_images("lost in transit")
    assert not result.ephemeral and result.channel_id == CHANNEL_ID
    [post] = harness.double.requests_to("POST", rf"/channels/{CHANNEL_ID}/messages")
    assert post.status == 200  # the status, which then became the result
    assert record.responses == [] and record.followups == []  # no apology, no stray reply
    assert harness.api.submissions and len(harness.api.submissions) == 1


async def test_a_command_that_fails_while_admission_runs_refunds_what_it_reserved(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cogs._launch, "ACK_WITHIN", 0.01)
    # Discord refuses the "thinking…" answer: the command fails while the reservation is on
    # its way to the database.
    harness.double.refuse_requests("POST", CALLBACK, (404, 10062, "Unknown interaction"))
    reserve = harness.bot.services.generation.reserve
    double = harness.double

    async def slow_reserve(*args: Any, **kwargs: Any) -> Any:
        job = await reserve(*args, **kwargs)  # committed; its answer is still on its way
        await double.wait_until(lambda: bool(double.requests_to("POST", CALLBACK)))
        return job

    abandon = harness.bot.services.generation.abandon
    abandoned = asyncio.Event()

    async def watched_abandon(*args: Any, **kwargs: Any) -> None:
        await abandon(*args, **kwargs)
        abandoned.set()

    monkeypatch.setattr(harness.bot.services.generation, "reserve", slow_reserve)
    monkeypatch.setattr(harness.bot.services.generation, "abandon", watched_abandon)
    await harness.double.slash(
        "imagine",
        {"prompt": "never mind"},
        user_id=ALICE_ID,
        guild_id=GUILD_ID,
        channel_id=CHANNEL_ID,
    )
    await asyncio.wait_for(abandoned.wait(), 10)
    [job] = await harness.bot.services.store.recent_for_user(GUILD_ID, ALICE_ID, limit=1)
    assert job.state is JobState.FAILED
    assert await credits_used(harness.bot.services.db, ALICE_ID) == 0
    assert harness.api.submissions == []
