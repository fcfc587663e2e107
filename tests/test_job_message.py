"""One public message per job, through the real bot and the Discord double: the interaction's
response, its progress, its route after the token's life, and admission inside the 3 s window."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

import cogs._launch
from bot.discord_ui.embeds import progress_text
from bot.errors import RequestRefused
from tests.doubles.discord_models import MIB, InteractionRecord, MessageRecord
from tests.helpers import (
    CHANNEL_ID,
    GUILD_ID,
    Harness,
    footer_has,
    queued_job_id,
    title_of,
)

ORIGINAL = r"/webhooks/\d+/[^/]+/messages/@original"


def progress_of(message: MessageRecord) -> str | None:
    fields = message.embeds[0].get("fields", []) if message.embeds else []
    return next((f["value"] for f in fields if f["name"] == "Progress"), None)


async def generating(harness: Harness, job_id: int) -> MessageRecord:
    return await harness.double.wait_for_message(
        lambda m: footer_has(m, f"Job #{job_id}") and title_of(m).startswith("🎨 Generating")
    )


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
    message = await generating(harness, job_id)
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
    message = await generating(harness, job_id)
    harness.double.interaction_token_ttl = 0  # Discord now answers 401 to the token
    harness.api.finish_jobs()
    result = await harness.result_for(job_id)
    assert result.id == message.id and result.attachments
    assert result.edits[-1].source == "channel"
    assert harness.double.requests_to("POST", rf"/channels/{CHANNEL_ID}/messages") == []


async def test_once_the_token_is_old_the_bot_does_not_try_it(harness: Harness) -> None:
    harness.api.set_duration(3600)
    job_id = await queued_job_id(harness, await harness.imagine("a patient heron"))
    message = await generating(harness, job_id)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=16)
    harness.bot.presenter.messages.now = lambda: later
    webhook_edits = len(harness.double.requests_to("PATCH", ORIGINAL))
    harness.api.finish_jobs()
    result = await harness.result_for(job_id)
    assert result.id == message.id and result.edits[-1].source == "channel"
    assert len(harness.double.requests_to("PATCH", ORIGINAL)) == webhook_edits
    assert harness.double.rate_limited_count == 0


async def test_a_deleted_job_message_gets_one_new_message_for_the_result(
    harness: Harness,
) -> None:
    harness.api.set_duration(3600)
    job_id = await queued_job_id(harness, await harness.imagine("a vanishing act"))
    message = await generating(harness, job_id)
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
