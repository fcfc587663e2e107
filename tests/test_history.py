"""`/history` end to end."""

from __future__ import annotations

from tests.helpers import ALICE_ID, BOB_ID, CHANNEL_ID, GUILD_ID, MOD_ID, Harness, queued_job_id


async def test_history_lists_jobs_with_links(harness: Harness) -> None:
    job_id = await queued_job_id(harness, await harness.imagine("a glass whale"))
    result = await harness.result_for(job_id)
    await harness.bot.services.runner.wait_finished(job_id)
    reply = await harness.reply(await harness.command("history", user_id=ALICE_ID))
    text = reply.embeds[0]["description"]
    assert reply.ephemeral
    assert f"https://discord.com/channels/{GUILD_ID}/{CHANNEL_ID}/{result.id}" in text
    assert "a glass whale" in text and "✅" in text


async def test_members_cannot_read_each_others_history(harness: Harness) -> None:
    await queued_job_id(harness, await harness.imagine("secret garden", user_id=BOB_ID))
    refused = await harness.reply(
        await harness.command("history", {"member": BOB_ID}, user_id=ALICE_ID)
    )
    assert "Only moderators" in (refused.content or "")
    allowed = await harness.reply(
        await harness.command("history", {"member": BOB_ID}, user_id=MOD_ID)
    )
    assert "secret garden" in allowed.embeds[0]["description"]
