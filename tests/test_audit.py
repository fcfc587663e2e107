"""What moderators see without asking: generations and spend-cap notices in the log channel."""

from __future__ import annotations

from tests.helpers import (
    ALICE_ID,
    BOB_ID,
    GUILD_ID,
    LOG_CHANNEL_ID,
    OWNER_ID,
    Harness,
    queued_job_id,
)


async def configure(harness: Harness, **settings: int) -> None:
    record = await harness.command("mod settings", settings, user_id=OWNER_ID)
    await harness.reply(record)


async def log_line(harness: Harness, text: str):
    return await harness.double.wait_for_message(
        lambda m: m.channel_id == LOG_CHANNEL_ID and text in (m.content or "")
    )


async def test_every_generation_is_audited_and_logged(harness: Harness) -> None:
    await configure(harness, log_channel=LOG_CHANNEL_ID)
    posted = await queued_job_id(harness, await harness.imagine("fine", num_outputs=2))
    await harness.result_for(posted)
    harness.api.fail_next(error="NSFW content detected")
    failed = await queued_job_id(harness, await harness.imagine("not fine", user_id=BOB_ID))

    ok = await log_line(harness, f"ran generation #{posted}: posted, 2 credits")
    bad = await log_line(harness, f"ran generation #{failed}: failed, 0 credits")
    assert ok.content.startswith(f"🎨 <@{ALICE_ID}>")
    assert bad.content.startswith(f"⚠️ <@{BOB_ID}>")
    assert ok.allowed_mentions == {"parse": []} and bad.allowed_mentions == {"parse": []}

    entries = await harness.bot.services.moderation.audit_entries(GUILD_ID, limit=10)
    actions = {(e.action, e.target_id) for e in entries}
    assert ("generation.posted", posted) in actions
    assert ("generation.failed", failed) in actions


async def test_spend_cap_warns_at_80_percent_then_pauses(harness: Harness) -> None:
    await configure(harness, log_channel=LOG_CHANNEL_ID, spend_cap=5)
    first = await queued_job_id(harness, await harness.imagine("one", num_outputs=4))
    warning = await log_line(harness, "Heads up: this server has used 4 of its 5 credits")
    assert "(80%)" in warning.content
    await harness.result_for(first)

    second = await queued_job_id(harness, await harness.imagine("two", user_id=BOB_ID))
    await log_line(harness, "Image generation is paused")
    await harness.result_for(second)  # sent by the queue in its own time

    refused = await harness.reply(await harness.imagine("three"))
    assert refused.ephemeral
    assert "Image generation is paused" in (refused.content or "")
    assert len(harness.api.submissions) == 2
    notices = [
        m
        for m in harness.double.channel_messages(LOG_CHANNEL_ID)
        if (m.content or "").startswith(("Heads up", "Image generation is paused"))
    ]
    assert len(notices) == 2, [m.content for m in notices]  # one warning, one pause
