"""`/mod ...` end to end: moderators change the rules through the real discord.py client, and
members' `/imagine` obeys them."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from cogs.moderation import NOT_A_MODERATOR
from tests.doubles.discord_double import InteractionRecord, MessageRecord, Perm
from tests.helpers import (
    ALICE_ID,
    ARTIST_ROLE_ID,
    BOB_ID,
    CAROL_ID,
    CHANNEL_ID,
    GUILD_ID,
    LOG_CHANNEL_ID,
    MOD_ID,
    OTHER_CHANNEL_ID,
    OTHER_GUILD_CHANNEL_ID,
    OTHER_GUILD_ID,
    OTHER_GUILD_OWNER_ID,
    OWNER_ID,
    Harness,
    outcome_text,
    queued_job_id,
)
from tests.python_re_guard import forbid_python_re

NO_PINGS = {"parse": []}


def text_of(message: MessageRecord) -> str:
    """Everything a message shows: content, and each embed's title, description and fields."""
    parts = [message.content or ""]
    for embed in message.embeds:
        parts += [embed.get("title", ""), embed.get("description", "")]
        for field in embed.get("fields", []):
            parts += [field["name"], field["value"]]
    return "\n".join(parts)


def fields_of(message: MessageRecord) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message.embeds[0].get("fields", [])}


async def answer(harness: Harness, record: InteractionRecord) -> MessageRecord:
    """The bot's private answer: the follow-up of a deferred reply, or the direct response."""
    if record.response_type == 5:
        message = await harness.reply(record)
    else:
        assert record.original is not None
        message = record.original
    assert message.ephemeral, text_of(message)
    assert message.allowed_mentions == NO_PINGS
    return message


async def mod(
    harness: Harness,
    name: str,
    options: dict[str, Any] | None = None,
    *,
    user_id: int = OWNER_ID,
    **kwargs: Any,
) -> str:
    """Run a `/mod` command and return the text of the bot's (checked: private, ping-free)
    answer."""
    record = await harness.command(f"mod {name}", options, user_id=user_id, **kwargs)
    return text_of(await answer(harness, record))


async def mod_message(
    harness: Harness,
    name: str,
    options: dict[str, Any] | None = None,
    *,
    user_id: int = OWNER_ID,
    **kwargs: Any,
) -> MessageRecord:
    """Like `mod`, but the answer itself (for its embed)."""
    record = await harness.command(f"mod {name}", options, user_id=user_id, **kwargs)
    return await answer(harness, record)


async def imagine(harness: Harness, prompt: str = "a lighthouse at dawn", **options: Any) -> str:
    """Run `/imagine`: "Job #N" when it started, else why not (`outcome_text`)."""
    return await outcome_text(harness, await harness.imagine(prompt, **options))


def submitted(harness: Harness, text: str) -> bool:
    return any(text in json.dumps(s) for s in harness.api.submissions)


async def audit_count(harness: Harness, guild_id: int = GUILD_ID) -> int:
    row = await harness.bot.services.db.fetchone(
        "SELECT COUNT(*) FROM audit_log WHERE guild_id = ?", (guild_id,)
    )
    return row[0]


# -- the command and who may use it ------------------------------------------------------------


async def test_one_hidden_guild_only_group(harness: Harness) -> None:
    command = harness.double.registered_commands["mod"]
    assert command["default_member_permissions"] == str(Perm.MANAGE_GUILD)
    assert command["dm_permission"] is False
    tree = {
        option["name"]: sorted(sub["name"] for sub in option.get("options", []) if sub["type"] == 1)
        for option in command["options"]
    }
    assert tree == {
        "limits": ["default", "role", "show", "user"],
        "credits": ["check", "grant", "reset"],
        "channels": ["allow", "clear", "list", "remove"],
        "blocklist": ["add", "list", "remove"],
        "ban": [],
        "unban": [],
        "bans": [],
        "settings": [],
        "report": [],
        "audit": [],
    }
    # Discord itself hides it from members without Manage Server...
    with pytest.raises(PermissionError):
        await harness.command("mod limits show", user_id=ALICE_ID)


async def test_plain_member_is_refused_and_nothing_changes(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # ...and the bot checks again when a server admin overrides that in Discord.
    caplog.set_level(logging.WARNING, logger="cogs.moderation")
    attempts = [
        ("limits default", {"credits": 0}),
        ("limits user", {"user": ALICE_ID, "unlimited": True}),
        ("credits grant", {"user": ALICE_ID, "amount": 50}),
        ("ban", {"user": BOB_ID}),
        ("channels allow", {"channel": OTHER_CHANNEL_ID}),
        ("blocklist list", {}),
        ("settings", {"moderator_role": ARTIST_ROLE_ID}),
        ("report", {}),
        ("audit", {}),
    ]
    for name, options in attempts:
        record = await harness.command(
            f"mod {name}", options, user_id=ALICE_ID, enforce_permissions=False
        )
        assert record.response_type == 4  # refused at once, not deferred
        assert (await answer(harness, record)).content == NOT_A_MODERATOR
    assert await audit_count(harness) == 0
    assert f"refused /mod ban to user {ALICE_ID}" in caplog.text
    assert "of 10 credits left" in (await mod(harness, "credits check", {"user": ALICE_ID}))
    assert "Nobody is banned" in await mod(harness, "bans")
    assert (await imagine(harness)).startswith("Job #")


async def test_moderator_role_without_manage_server_is_allowed(harness: Harness) -> None:
    as_bob = {"user_id": BOB_ID, "enforce_permissions": False}  # Artist role, no Manage Server
    options = {"user": CAROL_ID, "credits": 3}
    assert await mod(harness, "limits user", options, **as_bob) == NOT_A_MODERATOR

    reply = await mod(harness, "settings", {"moderator_role": ARTIST_ROLE_ID})
    assert reply.startswith(f"✅ You set the moderator role to <@&{ARTIST_ROLE_ID}>.\n")
    reply = await mod(harness, "limits user", options, **as_bob)
    assert reply == f"✅ You set <@{CAROL_ID}>'s allowance to 3 credits per day."
    # Manage Server (the Moderator role here) works as before, as does the owner.
    assert "Member overrides" in await mod(harness, "limits show", user_id=MOD_ID)

    await mod(harness, "settings", {"no_moderator_role": True})
    assert await mod(harness, "limits user", options, **as_bob) == NOT_A_MODERATOR
    reply = await mod(harness, "settings", {"moderator_role": GUILD_ID})  # @everyone
    assert reply == "⚠️ Pick a role other than @everyone as moderator role."
    assert await mod(harness, "limits user", options, **as_bob) == NOT_A_MODERATOR


async def test_setting_a_moderator_role_says_how_to_show_it_mod(harness: Harness) -> None:
    # Discord hides /mod from the role's members (it needs Manage Server by default) and a bot
    # cannot change that, so the bot tells the moderator where a server admin can.
    with pytest.raises(PermissionError):
        await harness.command("mod limits show", user_id=BOB_ID)
    reply = await mod(harness, "settings", {"moderator_role": ARTIST_ROLE_ID, "cooldown": 5})
    lines = reply.splitlines()
    assert lines[1] == f"✅ You set the moderator role to <@&{ARTIST_ROLE_ID}>."
    assert lines[2] == (
        f"Discord still shows `/mod` only to members with Manage Server. To show it to "
        f"<@&{ARTIST_ROLE_ID}> too: Server Settings → Integrations → "
        f"{harness.bot.user.name} → Manage → `/mod` → Add Roles or Members → <@&{ARTIST_ROLE_ID}>."
    )
    assert "Integrations" not in await mod(harness, "settings", {"no_moderator_role": True})


# -- allowances, grants and resets -------------------------------------------------------------


async def test_default_limit_refuses_beyond_it(harness: Harness) -> None:
    reply = await mod(harness, "limits default", {"credits": 2, "period": "week"})
    assert reply.splitlines() == [
        "✅ You set the credit period to per week, resetting at 00:00 UTC.",
        "✅ You set the default allowance to 2 credits per week.",
    ]
    assert (await imagine(harness, "two cats", num_outputs=2)).startswith("Job #")
    refusal = await imagine(harness, "one too many")
    assert refusal.startswith("You have 0 of 2 credits left this week; they reset <t:")
    assert not submitted(harness, "one too many")
    # Only the given options change: the reset hour keeps the period, credits stay.
    await mod(harness, "limits default", {"reset_hour": 6})
    rules = fields_of(await mod_message(harness, "limits show"))
    assert rules["Credits reset"] == "every week at 06:00 UTC"
    assert rules["Default allowance"] == "2 credits per week"


async def test_role_allowance_and_user_override(harness: Harness) -> None:
    await mod(harness, "limits default", {"credits": 1})
    reply = await mod(harness, "limits role", {"role": ARTIST_ROLE_ID, "credits": 3})
    assert reply == f"✅ You set <@&{ARTIST_ROLE_ID}>'s allowance to 3 credits per day."
    check = await mod_message(harness, "credits check", {"user": BOB_ID})
    assert check.embeds[0]["description"] == "**3** of 3 credits left"
    assert (await imagine(harness, "bob's triptych", user_id=BOB_ID, num_outputs=3)).startswith(
        "Job #"
    )
    refusal = await imagine(harness, "alice's triptych", num_outputs=3)
    assert refusal.startswith("This request needs 3 credits, but you have 1 of 1 left today")

    await mod(harness, "limits user", {"user": ALICE_ID, "unlimited": True})
    assert (await imagine(harness, "alice's triptych", num_outputs=3)).startswith("Job #")
    check = await mod_message(harness, "credits check", {"user": ALICE_ID})
    assert check.embeds[0]["description"].startswith("**Unlimited** credits")
    assert check.embeds[0]["title"] == "Image credits of alice"

    reply = await mod(harness, "limits user", {"user": ALICE_ID, "clear": True})
    assert reply == f"✅ You removed <@{ALICE_ID}>'s own allowance."
    assert (await imagine(harness, "more")).startswith("You have 0 of 1 credit left today")
    reply = await mod(harness, "limits user", {"user": ALICE_ID, "clear": True})
    assert reply == f"⚠️ <@{ALICE_ID}> has no allowance of their own to clear."
    reply = await mod(harness, "limits role", {"role": ARTIST_ROLE_ID, "credits": 5, "clear": True})
    assert reply == "⚠️ Give one of `credits`, `unlimited:True` or `clear:True`."
    await mod(harness, "limits role", {"role": ARTIST_ROLE_ID, "clear": True})
    check = await mod_message(harness, "credits check", {"user": BOB_ID})
    assert check.embeds[0]["description"] == "**0** of 1 credits left"


async def test_grant_then_imagine_succeeds(harness: Harness) -> None:
    await mod(harness, "limits default", {"credits": 0})
    assert (await imagine(harness)).startswith("This server doesn't give you any image credits")
    reply = await mod(
        harness, "credits grant", {"user": ALICE_ID, "amount": 2, "note": "contest winner"}
    )
    assert reply == f"✅ You granted <@{ALICE_ID}> 2 extra credits today."
    assert (await imagine(harness, "prize", num_outputs=2)).startswith("Job #")
    check = fields_of(await mod_message(harness, "credits check", {"user": ALICE_ID}))
    assert check["Granted by moderators"] == "2"


async def test_reset_gives_used_credits_back(harness: Harness) -> None:
    await mod(harness, "limits default", {"credits": 1})
    record = await harness.imagine("first")
    await harness.result_for(await queued_job_id(harness, record))
    assert (await imagine(harness, "second")).startswith("You have 0 of 1 credit left today")
    reply = await mod(harness, "credits reset", {"user": ALICE_ID})
    assert reply == f"✅ You reset <@{ALICE_ID}>'s usage today (1 credit given back)."
    assert (await imagine(harness, "second")).startswith("Job #")


# -- bans, channels, blocked terms ------------------------------------------------------------


async def test_ban_then_unban(harness: Harness) -> None:
    reply = await mod(harness, "ban", {"user": ALICE_ID, "hours": 2, "reason": "spamming"})
    assert reply.startswith(f"✅ You banned <@{ALICE_ID}> from generating for 2 hours (until <t:")
    refusal = await imagine(harness)
    assert refusal.startswith("You can't generate images here until <t:")
    assert "(reason: spamming)" in refusal
    await mod(harness, "ban", {"user": BOB_ID})
    assert (await imagine(harness, user_id=BOB_ID)).startswith(
        "You can't generate images in this server"
    )
    bans = (await mod_message(harness, "bans")).embeds[0]
    assert bans["title"] == "🚫 Generation bans (2)"
    alice, bob = bans["description"].splitlines()
    assert alice.startswith(f"<@{ALICE_ID}> until <t:") and alice.endswith(
        f"by <@{OWNER_ID}> · spamming"
    )
    assert bob == f"<@{BOB_ID}> permanently · by <@{OWNER_ID}>"

    assert await mod(harness, "unban", {"user": ALICE_ID}) == (
        f"✅ You lifted <@{ALICE_ID}>'s generation ban."
    )
    assert (await imagine(harness)).startswith("Job #")
    assert await mod(harness, "unban", {"user": ALICE_ID}) == (
        f"⚠️ <@{ALICE_ID}> isn't banned from generating."
    )
    assert not submitted(harness, "spamming")


async def test_allowed_channels(harness: Harness) -> None:
    reply = await mod(harness, "channels allow", {"channel": CHANNEL_ID})
    assert reply == f"✅ You allowed generating images in <#{CHANNEL_ID}>."
    refusal = await imagine(harness, "off topic", channel_id=OTHER_CHANNEL_ID)
    assert refusal == f"Images can only be generated in <#{CHANNEL_ID}>."
    assert not submitted(harness, "off topic")
    assert (await imagine(harness, "on topic")).startswith("Job #")
    assert await mod(harness, "channels list") == (
        f"Images can only be generated in:\n<#{CHANNEL_ID}>"
    )
    assert await mod(harness, "channels allow", {"channel": CHANNEL_ID}) == (
        f"⚠️ <#{CHANNEL_ID}> is already an allowed channel."
    )
    reply = await mod(harness, "channels remove", {"channel": CHANNEL_ID})
    assert reply.endswith("images can now be generated in any channel.")
    assert (await imagine(harness, "anywhere", channel_id=OTHER_CHANNEL_ID)).startswith("Job #")
    assert await mod(harness, "channels clear") == (
        "⚠️ There are no channel rules; every channel is allowed."
    )


async def test_blocked_terms_are_refused_without_echoing_them(harness: Harness) -> None:
    await mod(harness, "settings", {"log_channel": LOG_CHANNEL_ID})
    assert await mod(harness, "blocklist add", {"term": "Dragon"}) == (
        "✅ You added blocked term #1."
    )
    refusal = await imagine(harness, "a red DRAGON at dusk")
    assert refusal == "Your prompt contains a term this server doesn't allow. Please rephrase it."
    assert not submitted(harness, "DRAGON")
    assert (await imagine(harness, "a dragonfly at dusk")).startswith("Job #")  # whole words

    await mod(harness, "blocklist add", {"term": "gr[iy]ffin", "regex": True})
    assert (await imagine(harness, "a gryffin")).startswith("Your prompt contains a term")
    reply = await mod(harness, "blocklist add", {"term": "(", "regex": True})
    assert reply.startswith("⚠️ That is not a valid regular expression")

    listing = (await mod_message(harness, "blocklist list")).embeds[0]
    assert listing["title"] == "🚧 Blocked terms (2)"
    assert listing["description"].startswith("```\n#1     dragon\n#2     gr[iy]ffin  (regex)")

    assert await mod(harness, "blocklist remove", {"term": "dragon"}) == (
        "✅ You removed blocked term #1."
    )
    assert await mod(harness, "blocklist remove", {"term": "#2"}) == (
        "✅ You removed blocked pattern #2."
    )
    assert (await imagine(harness, "a red dragon and a gryffin")).startswith("Job #")
    # The log channel, which members may read, names the entries, never the terms.
    log = "\n".join(m.content or "" for m in harness.double.channel_messages(LOG_CHANNEL_ID))
    assert "blocked term #1" in log and "blocked pattern #2" in log
    assert "dragon" not in log.lower() and "ffin" not in log


async def test_a_stored_pattern_re2_cannot_run_is_listed_as_not_enforced(
    harness: Harness,
) -> None:
    await mod(harness, "blocklist add", {"term": "gr[iy]ffin", "regex": True})
    async with harness.bot.services.db.transaction() as conn:  # stored before RE2
        await conn.execute(
            "INSERT INTO blocked_terms (guild_id, pattern, is_regex, actor_id, created_at) "
            "VALUES (?, ?, 1, ?, 0)",
            (GUILD_ID, r"(?<!\w)dragon", OWNER_ID),
        )
    assert (await imagine(harness, "a dragon")).startswith("Job #")  # indeed not enforced
    listing = (await mod_message(harness, "blocklist list")).embeds[0]
    assert listing["description"].splitlines()[1:3] == [
        "#1     gr[iy]ffin  (regex)",
        "#2     (?<!\\w)dragon  (regex)  (not enforced: RE2 can't run this pattern)",
    ]
    assert "remove it and add it in RE2 syntax" in listing["footer"]["text"]


async def test_a_backtracking_pattern_cannot_freeze_the_bot(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Python's re, `(.|.)*Z` against a 30-word prompt blocks the event loop for hours."""
    patterns = [r"(.|.)*Z", r"(.|\s)*badword"]
    forbid_python_re(monkeypatch, patterns)
    for number, pattern in enumerate(patterns, start=1):
        assert await mod(harness, "blocklist add", {"term": pattern, "regex": True}) == (
            f"✅ You added blocked pattern #{number}."
        )
    thirty_words = " ".join(["a lighthouse on a cliff at dawn"] * 5)
    refusal = "Your prompt contains a term this server doesn't allow. Please rephrase it."
    assert (await imagine(harness, thirty_words)).startswith("Job #")
    assert await imagine(harness, thirty_words + " in a blizzard") == refusal
    assert await imagine(harness, thirty_words + " and a badword") == refusal
    reply = await mod(harness, "blocklist add", {"term": r"(\w+) \1", "regex": True})
    assert reply == (
        "⚠️ Backreferences like `\\1` aren't supported: patterns run on RE2, which matches in "
        "linear time. Rewrite it without them."
    )


async def test_invisible_and_look_alike_characters_do_not_slip_past(harness: Harness) -> None:
    assert await mod(harness, "blocklist add", {"term": "Dragon"}) == (
        "✅ You added blocked term #1."
    )
    assert await mod(harness, "blocklist add", {"term": "ばか"}) == "✅ You added blocked term #2."
    refusal = "Your prompt contains a term this server doesn't allow. Please rephrase it."
    for prompt in [
        "a red drаgon",  # Cyrillic а
        "a red DRАGОN",  # Cyrillic capitals
        "a red dra\ufe0fgon",  # variation selector
        "a red dra\U000e0067gon",  # tag character
        "a red dra\u180bgon",  # Mongolian variation selector
        "a red dra\u0308g\u0301on",  # combining marks
        "お前は ばか だ",
    ]:
        assert await imagine(harness, prompt) == refusal, prompt
    assert not submitted(harness, "gon")
    assert (await imagine(harness, "はかない 夢、ドラゴン 🐉")).startswith("Job #")
    listing = (await mod_message(harness, "blocklist list")).embeds[0]
    assert listing["description"].startswith("```\n#1     dragon\n#2     ばか")


# -- per-member and server-wide settings ------------------------------------------------------


async def test_concurrency_cooldown_and_outputs(harness: Harness) -> None:
    harness.api.set_duration(3600)  # "slow one" runs until released below
    reply = await mod(harness, "settings", {"concurrency": 1, "queue": 1, "max_outputs": 1})
    assert reply.splitlines() == [
        "✅ You set the limit to 1 generation at a time per member.",
        "✅ You set the limit to 1 waiting prompt per member.",
        "✅ You set the most images per request to 1.",
    ]
    record = await harness.imagine("slow one")
    job_id = await queued_job_id(harness, record)
    waiting = await queued_job_id(harness, await harness.imagine("patient"))  # waits its turn
    refusal = await imagine(harness, "impatient")
    assert refusal == (
        "You already have 1 prompt waiting; this server allows 1. "
        "Cancel one or wait for one to start."
    )
    assert (await imagine(harness, "someone else's", user_id=BOB_ID)).startswith("Job #")
    harness.api.set_duration(0.05)  # "patient" is sent once "slow one" made room
    harness.api.finish_jobs()
    await harness.result_for(job_id)
    await harness.result_for(waiting)

    assert await mod(harness, "settings", {"cooldown": 60}) == (
        "✅ You set the cooldown between a member's generations to 1 minute."
    )
    refusal = await imagine(harness, "again")
    assert refusal.startswith("This server has a 60-second cooldown between generations.")
    assert (await imagine(harness, "two", user_id=CAROL_ID, num_outputs=2)) == (
        "This server allows only 1 image per request."
    )
    assert not any(submitted(harness, p) for p in ("impatient", "again", "two"))


async def test_settings_need_consistent_options(harness: Harness) -> None:
    reply = await mod(harness, "settings", {"spend_cap": 5, "no_spend_cap": True})
    assert reply == "⚠️ Give either `spend_cap` or `no_spend_cap`, not both."
    assert (await mod(harness, "settings")).startswith("⚠️ Nothing to change")
    assert (await mod(harness, "limits default")).startswith("⚠️ Nothing to change")
    assert await audit_count(harness) == 0


async def test_log_channel_gets_a_line_for_each_action(harness: Harness) -> None:
    await mod(harness, "credits grant", {"user": ALICE_ID, "amount": 1})
    assert harness.double.channel_messages(LOG_CHANNEL_ID) == []  # none configured yet

    await mod(harness, "settings", {"log_channel": LOG_CHANNEL_ID, "spend_cap": 100})
    await mod(harness, "limits default", {"credits": 5})
    await mod(harness, "limits role", {"role": ARTIST_ROLE_ID, "unlimited": True})
    await mod(harness, "credits grant", {"user": ALICE_ID, "amount": 3, "note": "thanks"})
    await mod(harness, "credits reset", {"user": BOB_ID})
    await mod(harness, "ban", {"user": CAROL_ID, "hours": 0.5})
    await mod(harness, "unban", {"user": CAROL_ID})
    await mod(harness, "channels allow", {"channel": CHANNEL_ID})
    await mod(harness, "channels clear")
    await mod(harness, "blocklist add", {"term": "secret"})
    await mod(harness, "settings", {"no_log_channel": True})
    await mod(harness, "unban", {"user": CAROL_ID})  # refused: no audit entry, no log line
    await mod(harness, "settings", {"cooldown": 5})  # logged nowhere: the channel is off

    entries = await harness.bot.services.moderation.audit_entries(GUILD_ID, limit=100)
    posted = [entry for entry in reversed(entries)][1:-1]  # after configuring, before off
    assert len(posted) == 12
    messages = harness.double.channel_messages(LOG_CHANNEL_ID)
    assert [m.content for m in messages] == [f"🛡️ <@{OWNER_ID}> {e.summary}" for e in posted]
    assert all(m.allowed_mentions == NO_PINGS and not m.mentions for m in messages)
    first = f"🛡️ <@{OWNER_ID}> set the moderation log channel to <#{LOG_CHANNEL_ID}>"
    assert messages[0].content == first
    assert messages[-1].content.endswith("turned off the moderation log channel")


# -- reading back: rules, report, audit -------------------------------------------------------


async def test_report_shows_spending(harness: Harness) -> None:
    report = fields_of(await mod_message(harness, "report"))
    assert report["Credits spent"] == "0"
    assert "PixelDojo account" not in report  # no OPERATOR_GUILD_ID (see its own tests)
    assert report["Top members"] == "nobody yet"

    await mod(harness, "settings", {"spend_cap": 10})
    # One after the other: the account balance shown is the one PixelDojo reported last.
    for prompt, outputs, user in (("two", 2, ALICE_ID), ("one", 1, BOB_ID)):
        job_id = await queued_job_id(
            harness, await harness.imagine(prompt, num_outputs=outputs, user_id=user)
        )
        await harness.result_for(job_id)
    message = await mod_message(harness, "report")
    report = fields_of(message)
    assert message.embeds[0]["title"] == "📊 Usage report · day"
    assert report["Credits spent"] == "3"
    assert report["Previous period"] == "0"
    assert report["Spend cap"] == "3 of 10 (30%)"
    assert report["Jobs"] == "2 posted · 0 failed · 0 running"
    assert report["Top members"].splitlines() == [
        f"1. <@{ALICE_ID}> · 2 credits · 1 job",
        f"2. <@{BOB_ID}> · 1 credit · 1 job",
    ]
    previous = fields_of(await mod_message(harness, "report", {"period": "previous"}))
    assert previous["Credits spent"] == "0" and previous["Top members"] == "nobody yet"

    await mod(harness, "limits default", {"period": "none"})
    assert await mod(harness, "report", {"period": "previous"}) == (
        "Credits never reset in this server, so there is no previous period."
    )


async def test_audit_shows_recent_actions(harness: Harness) -> None:
    assert (await mod_message(harness, "audit")).embeds[0]["description"] == (
        "Nothing recorded yet."
    )
    await mod(harness, "credits grant", {"user": ALICE_ID, "amount": 4})
    await mod(harness, "ban", {"user": BOB_ID}, user_id=MOD_ID)
    await mod(harness, "blocklist add", {"term": "forbidden"})
    lines = (await mod_message(harness, "audit", {"limit": 2})).embeds[0]["description"]
    newest, older = lines.splitlines()
    assert newest.startswith("<t:") and newest.endswith(f"<@{OWNER_ID}> added blocked term #1")
    assert older.endswith(f":R> <@{MOD_ID}> banned <@{BOB_ID}> from generating permanently")
    everything = (await mod_message(harness, "audit")).embeds[0]["description"]
    assert len(everything.splitlines()) == 3
    assert everything.splitlines()[-1].endswith(f"granted <@{ALICE_ID}> 4 extra credits today")


async def test_long_lists_stay_within_discord_limits(harness: Harness) -> None:
    service = harness.bot.services.moderation
    for n in range(1, 81):
        await service.set_user_allowance(
            guild_id=GUILD_ID, actor_id=OWNER_ID, user_id=10**17 + n, allowance=n
        )
        await service.allow_channel(guild_id=GUILD_ID, actor_id=OWNER_ID, channel_id=10**17 + n)
        await service.add_blocked_term(
            guild_id=GUILD_ID, actor_id=OWNER_ID, term=f"term{n:03d} " + "x" * 150
        )
    rules = await mod_message(harness, "limits show")  # the double rejects oversized embeds
    overrides = fields_of(rules)["Member overrides"]
    assert len(overrides) <= 1024 and overrides.splitlines()[-1].startswith("…and ")
    listed = overrides.splitlines()
    assert len(listed) - 1 + int(listed[-1].split()[1]) == 80
    assert fields_of(rules)["Allowed channels"].splitlines()[-1].startswith("…and ")

    terms = (await mod_message(harness, "blocklist list")).embeds[0]["description"]
    assert len(terms) <= 4096 and terms.endswith(" more\n```")
    audit = (await mod_message(harness, "audit", {"limit": 100})).embeds[0]["description"]
    assert len(audit) <= 4096 and audit.splitlines()[-1].startswith("…and ")
    channels = await mod(harness, "channels list")
    assert len(channels) <= 2000 and channels.count("<#") == 80


# -- guilds are separate -----------------------------------------------------------------------


async def test_settings_in_one_guild_do_not_affect_another(harness: Harness) -> None:
    await mod(harness, "limits default", {"credits": 0})
    await mod(harness, "ban", {"user": ALICE_ID})
    await mod(harness, "channels allow", {"channel": CHANNEL_ID})
    await mod(harness, "blocklist add", {"term": "lighthouse"})
    await mod(harness, "settings", {"max_outputs": 1, "moderator_role": ARTIST_ROLE_ID})
    assert (await imagine(harness)).startswith("You can't generate images in this server")

    elsewhere = {"guild_id": OTHER_GUILD_ID, "channel_id": OTHER_GUILD_CHANNEL_ID}
    assert (await imagine(harness, num_outputs=2, **elsewhere)).startswith("Job #")
    rules = fields_of(
        await mod_message(harness, "limits show", user_id=OTHER_GUILD_OWNER_ID, **elsewhere)
    )
    assert rules["Default allowance"] == "10 credits per day"
    assert rules["Generation bans"] == "0" and rules["Blocked terms"] == "0"
    assert rules["Allowed channels"] == "every channel"
    assert rules["Moderator role"] == "none (Manage Server only)"
    assert await audit_count(harness, OTHER_GUILD_ID) == 0
