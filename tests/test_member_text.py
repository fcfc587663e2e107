"""Member text the bot echoes (prompts, ban reasons, PixelDojo's errors) never renders as a
link, a mention or formatting: checked on what the Discord double received."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bot.safe_text import escape_member_text
from tests.doubles.discord_double import DiscordDouble, MessageRecord
from tests.doubles.discord_markdown import active_markup, rendered
from tests.helpers import (
    ALICE_ID,
    BOB_ID,
    CHANNEL_ID,
    GUILD_ID,
    LOG_CHANNEL_ID,
    OWNER_ID,
    Harness,
    queued_job_id,
)

HOSTILE = (
    f"[Claim free Nitro](https://evil.example) <@{BOB_ID}> @everyone **now** ||x|| "
    "<https://evil.example/b> https://evil.example/c <t:0:R> `code`\n# Title\n> quote"
)


def sent_texts(double: DiscordDouble) -> Iterator[str]:
    """Every content, embed description and field value the bot sent, edits included."""
    for request in double.requests:
        body: Any = request.body
        if request.method not in ("POST", "PATCH") or not isinstance(body, dict):
            continue
        data = body.get("data") if isinstance(body.get("data"), dict) else body
        if data.get("content"):
            yield data["content"]
        for embed in data.get("embeds") or []:
            if embed.get("description"):
                yield embed["description"]
            for field in embed.get("fields") or []:
                yield field["value"]


def echoes(double: DiscordDouble, marker: str = "Claim free Nitro") -> list[str]:
    texts = [text for text in sent_texts(double) if marker in rendered(text)]
    assert texts, "the bot never echoed the text"
    return texts


def hazards(text: str) -> list[tuple[str, str]]:
    """Markup in `text` the bot itself did not mean (its job links, timestamps, mentions)."""
    own_link = f"https://discord.com/channels/{GUILD_ID}/"
    return [
        (kind, token)
        for kind, token in active_markup(text)
        if not (kind == "link" and token.startswith(own_link))
        and not (
            kind == "mention"
            and token in {f"<@{ALICE_ID}>", f"<@{OWNER_ID}>", f"<#{LOG_CHANNEL_ID}>"}
        )
        and not (kind == "mention" and token.startswith("<t:") and token != "<t:0:R>")
    ]


def test_escaped_text_renders_as_typed_and_inert() -> None:
    escaped = escape_member_text(HOSTILE)
    assert active_markup(escaped) == []
    assert rendered(escaped) == HOSTILE


async def test_prompt_is_inert_in_status_and_result(harness: Harness) -> None:
    job_id = await queued_job_id(harness, await harness.imagine(HOSTILE))
    result = await harness.result_for(job_id)
    await harness.bot.services.runner.wait_finished(job_id)
    description = result.embeds[0]["description"]
    assert rendered(description) == HOSTILE
    assert active_markup(description) == []
    for text in echoes(harness.double):  # the queued and generating status too
        assert hazards(text) == [], text
    assert not result.mentions and not result.mention_everyone


async def test_failure_notice_is_inert(harness: Harness) -> None:
    harness.api.fail_next(error="[Appeal here](https://evil.example/appeal) <@&1>")
    job_id = await queued_job_id(harness, await harness.imagine(HOSTILE))
    failure = await harness.failure_for(job_id)
    embed = failure.embeds[0]
    assert "Appeal here" in rendered(embed["description"])
    assert hazards(embed["description"]) == []
    prompt = next(f["value"] for f in embed["fields"] if f["name"] == "Prompt")
    assert rendered(prompt) == HOSTILE and active_markup(prompt) == []


async def test_history_credits_and_prompt_button_are_inert(harness: Harness) -> None:
    job_id = await queued_job_id(harness, await harness.imagine(HOSTILE))
    result = await harness.result_for(job_id)
    await harness.bot.services.runner.wait_finished(job_id)
    for command in ("history", "credits"):
        reply = await harness.reply(await harness.command(command, user_id=ALICE_ID))
        embed = reply.embeds[0]
        texts = [embed.get("description", "")] + [f["value"] for f in embed.get("fields", [])]
        listing = next(t for t in texts if "Claim free" in rendered(t))
        assert hazards(listing) == [], (command, listing)
        assert f"https://discord.com/channels/{GUILD_ID}/{CHANNEL_ID}/{result.id}" in listing

    click = await harness.double.click(result.id, f"pdj:info:{job_id}", user_id=BOB_ID)
    await click.wait_for_response()
    assert click.original is not None
    details = click.original.embeds[0]["description"]
    assert HOSTILE in details  # verbatim, to copy, but in a code block
    assert active_markup(details) == []


async def ban_reason_echoes(harness: Harness, reason: str) -> list[MessageRecord]:
    await harness.command("mod settings", {"log_channel": LOG_CHANNEL_ID}, user_id=OWNER_ID)
    ban = await harness.command("mod ban", {"user": ALICE_ID, "reason": reason}, user_id=OWNER_ID)
    refused = await harness.imagine("a lighthouse")
    audit = await harness.command("mod audit", user_id=OWNER_ID)
    bans = await harness.command("mod bans", user_id=OWNER_ID)
    replies = [await harness.reply(record) for record in (ban, refused, audit, bans)]
    await harness.double.wait_until(
        lambda: any(
            "Claim free" in rendered(m.content or "")
            for m in harness.double.channel_messages(LOG_CHANNEL_ID)
        )
    )
    return [*replies, *harness.double.channel_messages(LOG_CHANNEL_ID)]


async def test_ban_reason_is_inert_in_audit_log_channel_and_refusal(harness: Harness) -> None:
    reason = "[Claim free Nitro](https://evil.example) @here **appeal**"
    messages = await ban_reason_echoes(harness, reason)
    texts = echoes(harness.double)
    assert len(texts) >= 5  # /mod ban reply, refusal, /mod audit, /mod bans, log channel
    for text in texts:
        assert hazards(text) == [], text
    assert not any(m.mention_everyone for m in messages)


async def test_display_name_is_inert_in_credits_check(harness: Harness) -> None:
    member = harness.double.guilds[GUILD_ID].member(ALICE_ID)
    assert member is not None
    member.nick = "**[Free Nitro](https://evil.example)**"
    check = await harness.command("mod credits check", {"user": ALICE_ID}, user_id=OWNER_ID)
    title = (await harness.reply(check)).embeds[0]["title"]
    assert rendered(title) == "Image credits of **[Free Nitro](https://evil.example)**"
    assert active_markup(title) == []
