"""Periods, admission rules and balances, with an injected clock and a file-backed database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.credits.admission import Limits
from bot.credits.blocklist import TermMatcher, clean_plain_term, normalize
from bot.credits.moderation import InvalidSetting, ModerationService
from bot.credits.periods import Period, next_reset, period_start, previous_period_start
from bot.errors import RequestRefused
from bot.generation.models import GenerationRequest, Job
from bot.storage import Database
from tests.python_re_guard import forbid_python_re
from tests.service_env import CHANNEL, GUILD, MEMBER, MOD, OTHER_GUILD, Clock, ServiceEnv


def at(*parts: int) -> float:
    """Epoch seconds of a UTC date-time."""
    return datetime(*parts, tzinfo=UTC).timestamp()


WEDNESDAY = at(2025, 3, 12, 15, 30)  # 2025-03-12 is a Wednesday


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[ServiceEnv]:
    db = Database(tmp_path / "limits.sqlite3")
    await db.connect()
    try:
        yield ServiceEnv(db, Clock(WEDNESDAY))
    finally:
        await db.close()


# -- periods ---------------------------------------------------------------------------------


def test_day_period_starts_at_reset_hour() -> None:
    assert period_start("day", 0, WEDNESDAY) == at(2025, 3, 12)
    assert next_reset("day", 0, WEDNESDAY) == at(2025, 3, 13)
    # Before today's reset hour, the period began yesterday at that hour.
    assert period_start("day", 18, WEDNESDAY) == at(2025, 3, 11, 18)
    assert next_reset("day", 18, WEDNESDAY) == at(2025, 3, 12, 18)
    # Exactly at the reset, the new period has begun.
    assert period_start("day", 15, at(2025, 3, 12, 15)) == at(2025, 3, 12, 15)
    assert previous_period_start("day", 0, WEDNESDAY) == at(2025, 3, 11)


def test_week_period_starts_monday_at_reset_hour() -> None:
    assert period_start("week", 0, WEDNESDAY) == at(2025, 3, 10)
    assert next_reset("week", 0, WEDNESDAY) == at(2025, 3, 17)
    monday_early = at(2025, 3, 10, 5)
    assert period_start("week", 6, monday_early) == at(2025, 3, 3, 6)
    assert next_reset("week", 6, monday_early) == at(2025, 3, 10, 6)
    assert previous_period_start("week", 0, WEDNESDAY) == at(2025, 3, 3)


def test_month_period_starts_on_the_first() -> None:
    assert period_start("month", 0, WEDNESDAY) == at(2025, 3, 1)
    assert next_reset("month", 0, WEDNESDAY) == at(2025, 4, 1)
    new_year = at(2025, 1, 1, 3)
    assert period_start("month", 4, new_year) == at(2024, 12, 1, 4)
    assert next_reset("month", 4, new_year) == at(2025, 1, 1, 4)
    assert next_reset("month", 0, at(2024, 12, 31, 23)) == at(2025, 1, 1)
    assert previous_period_start("month", 0, WEDNESDAY) == at(2025, 2, 1)


def test_none_period_never_resets() -> None:
    assert period_start(Period.NONE, 0, WEDNESDAY) == 0.0
    assert next_reset(Period.NONE, 0, WEDNESDAY) is None
    assert previous_period_start(Period.NONE, 0, WEDNESDAY) is None
    with pytest.raises(ValueError):
        period_start("fortnight", 0, WEDNESDAY)


# -- allowances and balances ----------------------------------------------------------------


async def test_default_allowance_reserves_in_the_current_period(env: ServiceEnv) -> None:
    job = await env.reserve(outputs=3)
    assert job.credits_reserved == 3
    balance = await env.limits.balance(GUILD, MEMBER, ())
    assert (balance.allowance, balance.used, balance.remaining) == (10, 3, 7)
    assert balance.period_start == at(2025, 3, 12)
    assert balance.resets_at == at(2025, 3, 13)
    assert balance.active_jobs == 1


async def test_allowance_refusal_says_what_is_left_and_resets_with_time(env: ServiceEnv) -> None:
    await env.settings(default_allowance=2)
    await env.finish(await env.reserve(outputs=2))
    with pytest.raises(RequestRefused) as refused:
        await env.reserve()
    reset = int(at(2025, 3, 13))
    assert str(refused.value) == (
        f"You have 0 of 2 credits left today; they reset <t:{reset}:R>. "
        "A moderator can grant you more."
    )
    env.clock.now = at(2025, 3, 13, 0, 0, 1)
    job = await env.reserve()
    assert job.credits_reserved == 1
    balance = await env.limits.balance(GUILD, MEMBER, ())
    assert (balance.used, balance.remaining) == (1, 1)


async def test_partial_allowance_asks_for_fewer_images(env: ServiceEnv) -> None:
    await env.settings(default_allowance=3)
    await env.finish(await env.reserve(outputs=2))
    with pytest.raises(RequestRefused, match=r"needs 2 credits, but you have 1 of 3 left today"):
        await env.reserve(outputs=2)


async def test_zero_allowance_says_so(env: ServiceEnv) -> None:
    await env.settings(default_allowance=0)
    with pytest.raises(RequestRefused, match="doesn't give you any image credits"):
        await env.reserve()


async def test_most_generous_role_and_user_override_win(env: ServiceEnv) -> None:
    await env.mod.set_role_allowance(guild_id=GUILD, actor_id=MOD, role_id=7, allowance=20)
    await env.mod.set_role_allowance(guild_id=GUILD, actor_id=MOD, role_id=8, allowance=50)
    await env.mod.set_role_allowance(guild_id=GUILD, actor_id=MOD, role_id=9, allowance=None)
    assert (await env.limits.balance(GUILD, MEMBER, ())).allowance == 10
    assert (await env.limits.balance(GUILD, MEMBER, (7,))).allowance == 20
    assert (await env.limits.balance(GUILD, MEMBER, (7, 8))).allowance == 50
    unlimited = await env.limits.balance(GUILD, MEMBER, (7, 8, 9))
    assert unlimited.allowance is None and unlimited.remaining is None and unlimited.unlimited
    # A member's own allowance beats every role, even an unlimited one.
    await env.mod.set_user_allowance(guild_id=GUILD, actor_id=MOD, user_id=MEMBER, allowance=1)
    assert (await env.limits.balance(GUILD, MEMBER, (7, 8, 9))).allowance == 1
    await env.reserve(roles=(9,))
    with pytest.raises(RequestRefused, match="0 of 1 credit left"):
        await env.reserve(roles=(9,))
    await env.mod.set_user_allowance(guild_id=GUILD, actor_id=MOD, user_id=MEMBER, allowance=None)
    assert (await env.limits.balance(GUILD, MEMBER, ())).allowance is None
    await env.mod.clear_user_allowance(guild_id=GUILD, actor_id=MOD, user_id=MEMBER)
    assert (await env.limits.balance(GUILD, MEMBER, (7,))).allowance == 20


async def test_unlimited_default(env: ServiceEnv) -> None:
    await env.mod.set_default_allowance(guild_id=GUILD, actor_id=MOD, allowance=None)
    await env.settings(max_concurrent=50)
    for _ in range(30):
        await env.reserve(outputs=4)
    balance = await env.limits.balance(GUILD, MEMBER, ())
    assert balance.used == 120 and balance.remaining is None


async def test_grants_add_and_resets_forgive(env: ServiceEnv) -> None:
    await env.settings(default_allowance=2)
    await env.finish(await env.reserve(outputs=2))
    await env.mod.grant_credits(guild_id=GUILD, actor_id=MOD, user_id=MEMBER, amount=3)
    balance = await env.limits.balance(GUILD, MEMBER, ())
    assert (balance.granted, balance.used, balance.remaining) == (3, 2, 3)
    await env.finish(await env.reserve(outputs=3))
    with pytest.raises(RequestRefused, match="0 of 5 credits left"):
        await env.reserve()
    await env.mod.reset_usage(guild_id=GUILD, actor_id=MOD, user_id=MEMBER)
    assert (await env.limits.balance(GUILD, MEMBER, ())).remaining == 5
    # Grants belong to their period: tomorrow only the allowance is left.
    env.clock.now = at(2025, 3, 13, 1)
    balance = await env.limits.balance(GUILD, MEMBER, ())
    assert (balance.granted, balance.used, balance.remaining) == (0, 0, 2)


async def test_refund_restores_the_balance(env: ServiceEnv) -> None:
    job = await env.reserve(outputs=4)
    assert (await env.limits.balance(GUILD, MEMBER, ())).remaining == 6
    await env.store.mark_failed(job.id, "PixelDojo rejected the prompt")
    await env.store.mark_failed(job.id, "retried")  # a second refund moves nothing
    balance = await env.limits.balance(GUILD, MEMBER, ())
    assert (balance.used, balance.remaining, balance.active_jobs) == (0, 10, 0)


async def test_refund_after_midnight_goes_to_the_jobs_period(env: ServiceEnv) -> None:
    env.clock.now = at(2025, 3, 12, 23, 59)
    job = await env.reserve(outputs=4)
    env.clock.now = at(2025, 3, 13, 0, 1)
    await env.store.mark_failed(job.id, "timed out")
    assert (await env.limits.balance(GUILD, MEMBER, ())).remaining == 10


async def test_settle_charges_what_pixeldojo_reported(env: ServiceEnv) -> None:
    await env.finish(await env.reserve(outputs=4), charged=3)
    balance = await env.limits.balance(GUILD, MEMBER, ())
    assert (balance.used, balance.remaining) == (3, 7)
    await env.finish(await env.reserve(outputs=2), charged=0)
    assert (await env.limits.balance(GUILD, MEMBER, ())).remaining == 7
    # More than the images' price is not a charge PixelDojo can mean: the estimate stands.
    await env.finish(await env.reserve(outputs=2), charged=5)
    assert (await env.limits.balance(GUILD, MEMBER, ())).remaining == 5


async def test_overdrawn_balance_shows_zero_left(env: ServiceEnv) -> None:
    await env.finish(await env.reserve(outputs=4))
    await env.settings(default_allowance=2)  # a moderator lowers it after the member used 4
    balance = await env.limits.balance(GUILD, MEMBER, ())
    assert (balance.used, balance.remaining) == (4, 0)


# -- concurrency ----------------------------------------------------------------------------


async def _burst(env: ServiceEnv, count: int = 200) -> tuple[int, list[str]]:
    results = await asyncio.gather(
        *(env.reserve(prompt=f"burst {i}") for i in range(count)), return_exceptions=True
    )
    admitted = sum(isinstance(result, Job) for result in results)
    errors = [str(r) for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, Job | RequestRefused) for r in results)
    return admitted, errors


async def test_200_concurrent_requests_at_the_allowance_never_over_spend(env: ServiceEnv) -> None:
    await env.settings(default_allowance=7, max_concurrent=10)
    admitted, errors = await _burst(env)
    assert admitted == 7
    assert len(errors) == 193 and all("0 of 7 credits left" in e for e in errors)
    balance = await env.limits.balance(GUILD, MEMBER, ())
    assert (balance.used, balance.remaining, balance.active_jobs) == (7, 0, 7)
    row = await env.db.fetchone(
        "SELECT COUNT(*), SUM(amount) FROM ledger WHERE guild_id = ? AND kind = 'reserve'",
        (GUILD,),
    )
    assert tuple(row) == (7, 7)


async def test_200_concurrent_requests_at_the_queue_cap(env: ServiceEnv) -> None:
    # 2 may run and 5 may wait: the rest are refused, atomically, however the burst interleaves.
    await env.settings(default_allowance=None, max_concurrent=2, max_queued=5)
    admitted, errors = await _burst(env)
    assert admitted == 7
    assert len(errors) == 193 and set(errors) == {
        "You already have 5 prompts waiting; this server allows 5. "
        "Cancel one or wait for one to start."
    }


async def test_200_concurrent_requests_against_the_spend_cap(env: ServiceEnv) -> None:
    await env.settings(default_allowance=None, max_concurrent=1, spend_cap=25)
    requests = [env.reserve(prompt=f"p{i}", user=10_000 + i, outputs=2) for i in range(200)]
    results = await asyncio.gather(*requests, return_exceptions=True)
    assert sum(isinstance(result, Job) for result in results) == 12  # 24 of 25 credits
    report = await env.mod.usage_report(GUILD)
    assert report.total_credits == 24 <= 25


# -- the server spend cap -------------------------------------------------------------------


async def test_spend_cap_warns_at_80_percent_once_and_pauses_at_100(env: ServiceEnv) -> None:
    await env.settings(default_allowance=None, max_concurrent=10, spend_cap=10)
    users = iter(range(100, 200))
    notices = []
    for outputs in (4, 3, 1, 1, 1):  # 4, 7, 8 (80%), 9, 10 (100%)
        job = await env.reserve(user=next(users), outputs=outputs)
        await env.finish(job)
        notices.append(env.notices[job.id])
    assert notices[:2] == [(), ()]
    assert len(notices[2]) == 1
    assert "80%" in notices[2][0] and "8 of its 10 credits" in notices[2][0]
    assert notices[3] == ()
    assert len(notices[4]) == 1 and "paused" in notices[4][0]
    with pytest.raises(RequestRefused, match="Image generation is paused") as refused:
        await env.reserve(user=next(users))
    assert f"<t:{int(at(2025, 3, 13))}:R>" in str(refused.value)
    # Next day: the cap starts over and the notices can fire again.
    env.clock.now = at(2025, 3, 13, 9)
    job = await env.reserve(user=next(users), outputs=4)
    assert env.notices[job.id] == ()
    job = await env.reserve(user=next(users), outputs=4)
    assert "80%" in env.notices[job.id][0]


async def test_spend_cap_request_too_big_for_what_is_left(env: ServiceEnv) -> None:
    await env.settings(default_allowance=None, max_concurrent=10, spend_cap=5)
    await env.reserve(user=5, outputs=4)
    with pytest.raises(RequestRefused, match="only 1 credit left under its spend cap today"):
        await env.reserve(user=6, outputs=2)


async def test_refused_request_does_not_use_up_the_cap_notice(env: ServiceEnv) -> None:
    await env.settings(default_allowance=1, max_concurrent=10, spend_cap=10)
    with pytest.raises(RequestRefused, match="left today"):
        await env.reserve(outputs=4)  # would reach 80%, but the allowance refuses it
    settings = await env.limits.settings(GUILD)
    assert settings.cap_warned_period is None


# -- bans, channels, outputs, cooldown ------------------------------------------------------


async def test_ban_with_expiry(env: ServiceEnv) -> None:
    await env.mod.ban(
        guild_id=GUILD, actor_id=MOD, user_id=MEMBER, duration_seconds=3600, reason="spamming"
    )
    with pytest.raises(RequestRefused) as refused:
        await env.reserve()
    until = int(WEDNESDAY + 3600)
    assert str(refused.value) == (
        f"You can't generate images here until <t:{until}:f>, <t:{until}:R> (reason: spamming)."
    )
    await env.reserve(user=MEMBER + 1)  # others are unaffected
    env.clock.advance(3600)
    await env.reserve()


async def test_permanent_ban_until_unbanned(env: ServiceEnv) -> None:
    await env.mod.ban(guild_id=GUILD, actor_id=MOD, user_id=MEMBER)
    env.clock.advance(86400 * 400)
    with pytest.raises(RequestRefused, match="can't generate images in this server"):
        await env.reserve()
    await env.mod.unban(guild_id=GUILD, actor_id=MOD, user_id=MEMBER)
    await env.reserve()


async def test_allowed_channels(env: ServiceEnv) -> None:
    await env.reserve(channel=999)  # no rules: anywhere
    await env.mod.allow_channel(guild_id=GUILD, actor_id=MOD, channel_id=501)
    await env.mod.allow_channel(guild_id=GUILD, actor_id=MOD, channel_id=502)
    with pytest.raises(RequestRefused) as refused:
        await env.reserve(channel=999)
    assert str(refused.value) == "Images can only be generated in <#501>, <#502>."
    await env.reserve(channel=502)
    await env.mod.clear_channel_rules(guild_id=GUILD, actor_id=MOD)
    await env.settings(max_concurrent=5)
    await env.reserve(channel=999)


async def test_max_outputs(env: ServiceEnv) -> None:
    await env.mod.set_max_outputs(guild_id=GUILD, actor_id=MOD, value=2)
    with pytest.raises(RequestRefused, match="up to 2 images per request"):
        await env.reserve(outputs=3)
    assert (await env.reserve(outputs=2)).credits_reserved == 2
    await env.mod.set_max_outputs(guild_id=GUILD, actor_id=MOD, value=1)
    with pytest.raises(RequestRefused, match="allows only 1 image per request"):
        await env.reserve(outputs=2, user=7)


async def test_cooldown(env: ServiceEnv) -> None:
    await env.mod.set_cooldown(guild_id=GUILD, actor_id=MOD, seconds=30)
    await env.finish(await env.reserve())
    env.clock.advance(10)
    with pytest.raises(RequestRefused) as refused:
        await env.reserve()
    assert f"<t:{int(WEDNESDAY + 30)}:R>" in str(refused.value)
    assert "30-second cooldown" in str(refused.value)
    await env.reserve(user=MEMBER + 1)
    env.clock.advance(20)
    await env.reserve()


async def test_rules_are_checked_in_order(env: ServiceEnv) -> None:
    await env.mod.ban(guild_id=GUILD, actor_id=MOD, user_id=MEMBER)
    await env.mod.allow_channel(guild_id=GUILD, actor_id=MOD, channel_id=501)
    await env.mod.add_blocked_term(guild_id=GUILD, actor_id=MOD, term="dragon")
    with pytest.raises(RequestRefused, match="can't generate"):
        await env.reserve("dragon", channel=999)
    with pytest.raises(RequestRefused, match="only be generated"):
        await env.reserve("dragon", channel=999, user=7)
    with pytest.raises(RequestRefused, match="doesn't allow"):
        await env.reserve("dragon", channel=501, user=7)


# -- blocked terms --------------------------------------------------------------------------


async def _block(env: ServiceEnv, term: str, is_regex: bool = False, guild: int = GUILD) -> None:
    await env.mod.add_blocked_term(guild_id=guild, actor_id=MOD, term=term, is_regex=is_regex)


async def _refused(env: ServiceEnv, prompt: str, guild: int = GUILD) -> bool:
    try:
        job = await env.reserve(prompt, guild=guild)
    except RequestRefused as exc:
        assert str(exc) == (
            "Your prompt contains a term this server doesn't allow. Please rephrase it."
        )
        return True
    await env.store.mark_failed(job.id, "test cleanup")
    return False


async def test_blocked_plain_terms_match_whole_words_in_any_case(env: ServiceEnv) -> None:
    await _block(env, "ass")
    await _block(env, "Blood Bath")
    assert await _refused(env, "a wild ASS in the desert")
    assert await _refused(env, "ass.")
    assert not await _refused(env, "a class photo")
    assert not await _refused(env, "assassin's creed")
    assert await _refused(env, "a BLOOD   bath\nat noon")
    assert not await _refused(env, "blood on the bathroom floor")


async def test_blocked_terms_resist_unicode_tricks(env: ServiceEnv) -> None:
    await _block(env, "gore")
    assert await _refused(env, "g\u200bore everywhere")  # zero-width space
    assert await _refused(env, "go\u00adre")  # soft hyphen
    assert await _refused(env, "g\u200do\u2060re\ufeff")
    assert await _refused(env, "ＧＯＲＥ")  # full-width letters, NFKC
    assert not await _refused(env, "gorge")


async def test_blocked_terms_resist_invisible_and_look_alike_characters(env: ServiceEnv) -> None:
    await _block(env, "badword")
    for prompt in [
        "bad\ufe0fword",  # emoji variation selector
        "b\ufe00adword",  # variation selector 1
        "bad\U000e0062\U000e007fword",  # tag characters
        "ba\u180bdword",  # Mongolian free variation selector
        "b\u0301a\u0308dword\u20e3",  # combining marks
        "bádwörd",
        "bаdword",  # Cyrillic а (U+0430)
        "BАDWОRD",  # Cyrillic А and О, capitals
        "ВADWORD",  # Cyrillic В: a capital B, though its small letter в is not a b
        "ｂａｄ\u200dｗｏｒｄ",
    ]:
        assert await _refused(env, f"a {prompt} here"), prompt
    assert not await _refused(env, "badwords")
    assert not await _refused(env, "a bad word")


async def test_regex_terms_match_the_normalised_prompt_and_its_skeleton(env: ServiceEnv) -> None:
    await _block(env, r"bad\s*w[o0]rd", is_regex=True)
    await _block(env, r"ду?рак", is_regex=True)  # a non-Latin pattern is folded the same way
    assert await _refused(env, "a bаd wоrd")  # Cyrillic а and о
    assert await _refused(env, "b\u0336a\u0336d\ufe0f w0rd")
    assert await _refused(env, "ты дурак")
    assert await _refused(env, "ТЫ ДРАК")
    assert await _refused(env, "ты дурaк")  # a Latin a among Cyrillic letters
    assert not await _refused(env, "ты друг")


async def test_non_latin_terms_and_prompts(env: ServiceEnv) -> None:
    for term in ["дурак", "ばか", "حمار", "🍆"]:
        await _block(env, term)
    for prompt in [
        "ты ДУРАК",
        "ты дурaк",  # Latin a
        "ты ду\u0301рак",
        "お前は ばか だ",
        "يا حمار",
        "يا حِمَار",  # vowel marks are optional in Arabic
        "a 🍆\ufe0f please",
    ]:
        assert await _refused(env, prompt), prompt
    for prompt in [
        "はか",  # the dakuten is part of the word
        "ты друг",
        "кошка на крыше",
        "猫が屋根の上で寝ている、ばかりではない",
        "مرحبا بالعالم، قطة على السطح",
        "नमस्ते दुनिया, छत पर एक बिल्ली",
        "❤️ 👍🏽 🍕 🏳️\u200d🌈 1️⃣",
        "a gift for my 👨\u200d👩\u200d👧",
    ]:
        assert not await _refused(env, prompt), prompt


async def test_blocked_regex_terms(env: ServiceEnv) -> None:
    await _block(env, r"n[a@]ked", is_regex=True)
    assert await _refused(env, "N@KED statue")
    assert await _refused(env, "naked")
    assert not await _refused(env, "a knocked vase")


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(unclosed", "not a valid regular expression"),
        (".*", "match empty text"),
        ("a|", "match empty text"),
        (r"\b", "match empty text"),
        ("x?", "match empty text"),
        (r"(?=x)y", "Lookahead and lookbehind"),
        (r"(?<!a)b", "Lookahead and lookbehind"),
        (r"(a)\1", "Backreferences like"),
        (r".{1000}", "too complex"),
        ("a" * 201, "too long"),
        ("   ", "empty"),
    ],
)
async def test_invalid_regex_terms_are_refused(env: ServiceEnv, pattern: str, reason: str) -> None:
    with pytest.raises(InvalidSetting, match=reason):
        await _block(env, pattern, is_regex=True)
    assert await env.mod.blocked_terms(GUILD) == []


# Each backtracks exponentially in Python's re on the prompts below.
BACKTRACKING = (r"(.|.)*Z", r"(.|\s)*badword", r"(a+)+$", r"(a|a)*b", r"(x+x+)+y")


async def test_backtracking_patterns_are_accepted_and_answer_long_prompts(
    env: ServiceEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_python_re(monkeypatch, BACKTRACKING)
    for pattern in BACKTRACKING:
        await _block(env, pattern, is_regex=True)
    long_prompt = " ".join(["a lighthouse on a cliff at dawn"] * 48)  # no b, x, y or z
    assert len(long_prompt) > 1400
    assert not await _refused(env, long_prompt)
    assert await _refused(env, long_prompt + " in a blizzard")
    assert await _refused(env, long_prompt + "\nBADWORD")
    assert not await _refused(env, "a" * 1400 + "!")
    assert await _refused(env, "a" * 1400)
    assert not await _refused(env, "x" * 1400 + "!")
    assert await _refused(env, "x" * 1400 + "y")


async def test_a_servers_patterns_share_a_complexity_budget(env: ServiceEnv) -> None:
    for letter in "abcdefghij":
        await _block(env, f".{{240}}{letter}", is_regex=True)
    with pytest.raises(InvalidSetting, match="patterns together are as complex as they may be"):
        await _block(env, ".{240}k", is_regex=True)
    await _block(env, "plain terms don't count")
    await _block(env, ".{240}k", is_regex=True, guild=OTHER_GUILD)  # each server its own
    await env.mod.remove_blocked_term(guild_id=GUILD, actor_id=MOD, term=".{240}a")
    await _block(env, ".{240}k", is_regex=True)


async def test_stored_patterns_re2_rejects_are_skipped_and_logged(
    env: ServiceEnv, caplog: pytest.LogCaptureFixture
) -> None:
    await _block(env, "wyvern")
    async with env.db.transaction() as conn:  # stored before patterns ran on RE2
        await conn.execute(
            "INSERT INTO blocked_terms (guild_id, pattern, is_regex, actor_id, created_at) "
            "VALUES (?, ?, 1, ?, 0)",
            (GUILD, r"(?<!\w)dragon", MOD),
        )
    await _block(env, r"gr[iy]ffin", is_regex=True)
    with caplog.at_level(logging.WARNING, logger="bot.credits.admission"):
        assert not await _refused(env, "a dragon")
        assert await _refused(env, "a wyvern")
        assert await _refused(env, "a gryffin")
        assert not await _refused(env, "a lighthouse")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per compile of the guild's terms, not once per prompt
    assert warnings[0].startswith(f"Guild {GUILD}: blocked pattern #2 is not enforced: Lookahead")


async def test_blocklist_cache_is_invalidated_on_change(env: ServiceEnv) -> None:
    assert not await _refused(env, "a dragon")  # caches an empty matcher
    await _block(env, "dragon")
    assert await _refused(env, "a dragon")
    await env.mod.remove_blocked_term(guild_id=GUILD, actor_id=MOD, term="Dragon")
    assert not await _refused(env, "a dragon")


async def test_blocked_terms_survive_a_restart_and_other_writers(env: ServiceEnv) -> None:
    await _block(env, "dragon")
    fresh = Limits(env.db, env.clock)  # a new process: nothing in memory
    request = GenerationRequest(GUILD, CHANNEL, MEMBER, "DRAGON wyrm", "1:1")
    with pytest.raises(RequestRefused):
        await env.store.create_admitted(request, fresh.admit)
    # Another process (its own Limits) removes one term and adds another: `fresh` notices.
    other = ModerationService(env.db, Limits(env.db, env.clock), env.clock)
    await other.remove_blocked_term(guild_id=GUILD, actor_id=MOD, term="dragon")
    await other.add_blocked_term(guild_id=GUILD, actor_id=MOD, term="wyvern")
    await env.store.create_admitted(request, fresh.admit)
    await other.add_blocked_term(guild_id=GUILD, actor_id=MOD, term="wyrm")
    with pytest.raises(RequestRefused):
        await env.store.create_admitted(request, fresh.admit)


async def test_changing_the_period_counts_usage_inside_the_new_period(env: ServiceEnv) -> None:
    await env.settings(max_concurrent=10)
    env.clock.now = at(2025, 3, 10, 12)  # Monday
    await env.finish(await env.reserve(outputs=4))
    env.clock.now = WEDNESDAY
    await env.finish(await env.reserve(outputs=3))
    assert (await env.limits.balance(GUILD, MEMBER, ())).used == 3
    await env.mod.set_period(guild_id=GUILD, actor_id=MOD, period="week")
    balance = await env.limits.balance(GUILD, MEMBER, ())
    assert (balance.used, balance.period_start, balance.resets_at) == (
        7,
        at(2025, 3, 10),
        at(2025, 3, 17),
    )
    await env.mod.set_period(guild_id=GUILD, actor_id=MOD, period="none")
    balance = await env.limits.balance(GUILD, MEMBER, ())
    assert (balance.used, balance.period_start, balance.resets_at) == (7, 0.0, None)
    await env.settings(default_allowance=7)
    with pytest.raises(RequestRefused) as refused:
        await env.reserve()
    assert str(refused.value) == (
        "You have 0 of 7 credits left in total; they don't reset. A moderator can grant you more."
    )


def test_matcher_and_normalisation_units() -> None:
    assert normalize("  Ｆｏｏ\u200b  BAR\tbaz ") == "foo bar baz"
    assert clean_plain_term(" Bad\u200bWord ") == "badword"
    matcher = TermMatcher.build([("c++", False), ("x{2}y", True)])
    assert matcher.matches("I like C++ a lot")
    assert not matcher.matches("abc++")
    assert matcher.matches("XXY")
    assert not TermMatcher.build([]).matches("anything")


# -- guild isolation ------------------------------------------------------------------------


async def test_one_guilds_rules_and_usage_never_reach_another(env: ServiceEnv) -> None:
    await env.mod.set_default_allowance(guild_id=GUILD, actor_id=MOD, allowance=1)
    await env.mod.set_role_allowance(guild_id=GUILD, actor_id=MOD, role_id=7, allowance=99)
    await env.mod.set_user_allowance(guild_id=GUILD, actor_id=MOD, user_id=MEMBER, allowance=3)
    await env.mod.ban(guild_id=GUILD, actor_id=MOD, user_id=MEMBER + 1)
    await env.mod.allow_channel(guild_id=GUILD, actor_id=MOD, channel_id=501)
    await _block(env, "dragon")
    await env.mod.set_spend_cap(guild_id=GUILD, actor_id=MOD, cap=1)
    await env.reserve(channel=501, outputs=1)

    balance = await env.limits.balance(OTHER_GUILD, MEMBER, (7,))
    assert (balance.allowance, balance.used, balance.active_jobs) == (10, 0, 0)
    assert not await _refused(env, "a dragon", guild=OTHER_GUILD)
    other = await env.reserve("a dragon", guild=OTHER_GUILD, user=MEMBER + 1, channel=999)
    assert other.credits_reserved == 1
    assert (await env.limits.settings(OTHER_GUILD)).spend_cap is None
