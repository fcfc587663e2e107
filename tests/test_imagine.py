"""`/imagine` end to end: the real discord.py bot between the Discord and PixelDojo doubles."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from bot.pixeldojo.models import ASPECT_RATIOS
from bot.pixeldojo.sandbox import image_size
from tests.helpers import (
    ALICE_ID,
    BOB_ID,
    CAROL_ID,
    CHANNEL_ID,
    GUILD_ID,
    Harness,
    footer_has,
    queued_job_id,
    title_of,
)


async def used_credits(harness: Harness, user_id: int) -> int:
    row = await harness.bot.services.db.fetchone(
        "SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE user_id = ? AND kind != 'grant'",
        (user_id,),
    )
    return row[0]


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
async def test_each_ratio_posts_images_of_that_shape(harness: Harness, ratio: str) -> None:
    record = await harness.imagine("a red fox in snow", aspect_ratio=ratio, num_outputs=2)
    assert record.response_type == 4 and not record.ephemeral  # the public status, at once
    job_id = await queued_job_id(harness, record)
    result = await harness.result_for(job_id)

    # One message per job: the result is the interaction's own response, edited.
    assert record.original is not None and result.id == record.original.id
    assert len(result.attachments) == 2
    for attachment in result.attachments:
        with Image.open(io.BytesIO(attachment.data)) as image:
            assert image.size == image_size(ratio, harness.api.image_base_size)
    embed = result.embeds[0]
    assert embed["description"] == "a red fox in snow"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Aspect ratio"] == ratio
    assert fields["Requested by"] == f"<@{ALICE_ID}>"
    assert fields["Credits"] == "2"
    assert fields["Seed"].isdigit()
    assert result.allowed_mentions == {"parse": []}
    assert result.channel_id == CHANNEL_ID
    assert await used_credits(harness, ALICE_ID) == 2
    assert harness.double.requests_to("POST", r"/channels/\d+/messages$") == []
    assert [m.id for m in harness.double.messages.values() if footer_has(m, f"Job #{job_id}")] == [
        result.id
    ]


async def test_acknowledges_fast_and_shows_a_moving_status(harness: Harness) -> None:
    harness.api.set_duration(3600)  # generating until the test has seen it say so
    record = await harness.imagine("slow clouds")
    # Answered within Discord's 3 s (the double refuses a later acknowledgement) with the
    # job's public status, admission already decided ...
    assert record.response_type == 4 and record.rejected_callbacks == []
    job_id = await queued_job_id(harness, record)
    status = await harness.double.wait_for_message(
        lambda m: footer_has(m, f"Job #{job_id}") and title_of(m).startswith("🎨 Generating")
    )
    assert record.original is not None and status.id == record.original.id
    assert status.allowed_mentions == {"parse": []}
    # ... edited through the interaction webhook, never costing the channel's message budget.
    assert status.edits and all(edit.source == "webhook" for edit in status.edits)
    harness.api.finish_jobs()
    await harness.result_for(job_id)
    titles = [edit["embeds"][0].get("title", "") for edit in status.edits if edit.get("embeds")]
    assert any(t.startswith("🎨 Generating") for t in titles)


async def test_prompt_cannot_ping_anyone(harness: Harness) -> None:
    record = await harness.imagine("@everyone look <@1200000000000000012> <@&1>")
    job_id = await queued_job_id(harness, record)
    result = await harness.result_for(job_id)
    assert result.mentions == [] and result.mention_roles == [] and not result.mention_everyone
    touched = [
        m for m in harness.double.messages.values() if m.author_id == harness.double.bot_user_id
    ]
    assert touched and all(m.allowed_mentions == {"parse": []} for m in touched)


async def test_failed_job_explains_and_refunds(harness: Harness) -> None:
    harness.api.fail_next(error="NSFW content detected")
    record = await harness.imagine("something", num_outputs=3)
    job_id = await queued_job_id(harness, record)
    failure = await harness.failure_for(job_id)
    assert "NSFW content detected" in failure.embeds[0]["description"]
    assert "3 credits were refunded" in failure.embeds[0]["description"]
    assert await used_credits(harness, ALICE_ID) == 0


@pytest.mark.parametrize(
    ("fault", "words"),
    [("402", "out of credits"), ("401", "API key"), ("500", "trouble")],
)
async def test_refused_submission_explains_and_refunds(
    harness: Harness, fault: str, words: str
) -> None:
    harness.api.fault_next(fault, route="submit")
    job_id = await queued_job_id(harness, await harness.imagine("anything"))
    failure = await harness.failure_for(job_id)
    assert words in failure.embeds[0]["description"]
    assert await used_credits(harness, ALICE_ID) == 0
    assert harness.bot.services.pixeldojo._api_key not in str(failure.embeds)


async def test_api_faults_while_polling_still_deliver(harness: Harness) -> None:
    harness.api.set_duration(0.3)
    harness.api.fault_next("500", n=2, route="poll")
    harness.api.fault_next("429", route="poll")
    harness.api.fault_next("malformed", route="poll")
    harness.api.fault_next("drop", route="poll")
    job_id = await queued_job_id(harness, await harness.imagine("stormy sea"))
    result = await harness.result_for(job_id, timeout=15)
    assert len(result.attachments) == 1
    assert await used_credits(harness, ALICE_ID) == 1


async def test_expired_images_fail_with_refund(harness: Harness) -> None:
    harness.api.fault_next("404", route="download")
    job_id = await queued_job_id(harness, await harness.imagine("ephemeral"))
    failure = await harness.failure_for(job_id)
    assert "expired" in failure.embeds[0]["description"]
    assert await used_credits(harness, ALICE_ID) == 0


async def test_oversized_images_are_reencoded_to_fit(harness: Harness) -> None:
    guild = harness.bot.get_guild(harness.double.guilds[next(iter(harness.double.guilds))].id)
    assert guild is not None
    limit = guild.filesize_limit
    harness.api.image_base_size = 2048
    harness.api.oversize_images(limit + 1024 * 1024)
    job_id = await queued_job_id(harness, await harness.imagine("noise", num_outputs=1))
    result = await harness.result_for(job_id, timeout=30)
    assert result.attachments[0].size <= limit
    assert result.attachments[0].filename.endswith(".jpg")
    assert "re-encoded" in result.embeds[0]["footer"]["text"]


@pytest.mark.parametrize(
    ("prompt", "refusal"),
    [("   ", "prompt is empty")],
)
async def test_bad_input_is_refused_privately(harness: Harness, prompt: str, refusal: str) -> None:
    record = await harness.imagine(prompt)
    reply = await harness.reply(record)
    assert refusal in (reply.content or "")
    assert reply.ephemeral
    assert harness.api.submissions == []
    assert await used_credits(harness, ALICE_ID) == 0


async def test_discord_rejects_out_of_range_options_before_the_bot(harness: Harness) -> None:
    with pytest.raises(ValueError):
        await harness.imagine("x", num_outputs=5)
    with pytest.raises(ValueError):
        await harness.imagine("x", aspect_ratio="7:3")
    with pytest.raises(ValueError):
        await harness.imagine("x" * 1501)


async def test_concurrent_commands_from_several_members(harness: Harness) -> None:
    harness.api.set_duration(0.2)
    members = [ALICE_ID, BOB_ID, CAROL_ID] * 2
    records = await asyncio.gather(
        *(harness.imagine(f"scene {i}", user_id=user) for i, user in enumerate(members))
    )
    # Each answered within Discord's 3 s (the double refuses later acknowledgements) with
    # its public status: admission was decided first.
    assert all(r.response_type == 4 and r.rejected_callbacks == [] for r in records)
    job_ids = [await queued_job_id(harness, r) for r in records]
    assert len(set(job_ids)) == len(members)
    results = await asyncio.gather(*(harness.result_for(j, timeout=20) for j in job_ids))
    assert {r.embeds[0]["description"] for r in results} == {f"scene {i}" for i in range(6)}
    assert len(harness.api.submissions) == len(members)
    for user in (ALICE_ID, BOB_ID, CAROL_ID):
        assert await used_credits(harness, user) == 2


async def test_credits_command_shows_use(harness: Harness) -> None:
    job_id = await queued_job_id(harness, await harness.imagine("a cat", num_outputs=2))
    await harness.result_for(job_id)
    record = await harness.command("credits", user_id=ALICE_ID)
    reply = await harness.reply(record)
    assert reply.ephemeral
    embed = reply.embeds[0]
    assert "8** of 10 credits left" in embed["description"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Used today"] == "2"
    assert f"Job #{job_id}" in fields["Recent jobs"]
    assert fields["Resets"].startswith("<t:")


async def test_a_busy_channel_spends_none_of_its_message_budget_on_jobs(harness: Harness) -> None:
    # Discord allows about 5 message creates and 5 edits per 5 s in a channel; the double
    # enforces that here. A job's message is its interaction's response, edited through the
    # interaction webhook, which Discord limits per token instead.
    harness.double.rate_limit("POST", r"/channels/\d+/messages", limit=5, per=5)
    harness.double.rate_limit("PATCH", r"/channels/\d+/messages/\d+", limit=5, per=5)
    harness.api.set_duration(1.5)
    members = [ALICE_ID, BOB_ID, CAROL_ID] * 2
    records = await asyncio.gather(
        *(harness.imagine(f"busy {i}", user_id=user) for i, user in enumerate(members))
    )
    job_ids = [await queued_job_id(harness, r) for r in records]
    results = await asyncio.gather(*(harness.result_for(j, timeout=20) for j in job_ids))
    assert [r.id for r in results] == [r.original.id for r in records if r.original]
    assert harness.double.requests_to("POST", rf"/channels/{CHANNEL_ID}/messages") == []
    assert harness.double.requests_to("PATCH", rf"/channels/{CHANNEL_ID}/messages/\d+") == []
    progress = harness.double.requests_to("PATCH", r"/webhooks/\d+/[^/]+/messages/@original")
    assert len(progress) > len(job_ids), "members saw progress, not only their results"
    assert harness.double.rate_limited_count == 0


async def test_channel_where_the_bot_cannot_post_refuses_up_front(harness: Harness) -> None:
    channel = harness.double.guilds[GUILD_ID].channel(CHANNEL_ID)
    assert channel is not None
    channel.permission_overwrites.append(
        {"id": str(harness.double.bot_user_id), "type": 1, "allow": "0", "deny": str(1 << 11)}
    )
    reply = await harness.reply(await harness.imagine("nowhere to go"))
    assert "I can't post images in this channel: I'm missing Send Messages" in reply.content
    assert harness.api.submissions == []
    assert await used_credits(harness, ALICE_ID) == 0


async def test_a_channel_out_of_message_budget_still_gets_every_job(harness: Harness) -> None:
    harness.double.rate_limit("POST", rf"/channels/{CHANNEL_ID}/messages", limit=0, per=0.2)
    record = await harness.imagine("busy busy")
    result = await harness.result_for(await queued_job_id(harness, record))
    assert record.original is not None and result.id == record.original.id
    assert harness.double.requests_to("POST", rf"/channels/{CHANNEL_ID}/messages") == []
    assert await used_credits(harness, ALICE_ID) == 1


async def test_a_status_discord_would_not_take_never_costs_the_job(harness: Harness) -> None:
    """The response is refused (here: too late for Discord's 3 s): the job runs anyway, and its
    result gets the one channel message the job then uses."""
    harness.double.interaction_ack_timeout = 0
    record = await harness.double.slash(
        "imagine",
        {"prompt": "late but fine"},
        user_id=ALICE_ID,
        guild_id=GUILD_ID,
        channel_id=CHANNEL_ID,
    )
    await harness.double.wait_until(lambda: bool(record.rejected_callbacks))
    result = await harness.shown_with_images("late but fine")
    assert record.original is None and not result.ephemeral and result.channel_id == CHANNEL_ID
    [post] = harness.double.requests_to("POST", rf"/channels/{CHANNEL_ID}/messages")
    assert post.status == 200
    assert await used_credits(harness, ALICE_ID) == 1
