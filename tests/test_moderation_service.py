"""Moderator actions: validation, their audit entries, reports and guild isolation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.credits.admission import Limits
from bot.credits.moderation import AuditEntry, InvalidSetting, ModerationService
from bot.credits.periods import Period
from bot.storage import Database
from tests.service_env import GUILD, MEMBER, MOD, OTHER_GUILD, Clock, ServiceEnv

NOW = datetime(2025, 3, 12, 15, 30, tzinfo=UTC).timestamp()  # a Wednesday
TODAY = datetime(2025, 3, 12, tzinfo=UTC).timestamp()
YESTERDAY = datetime(2025, 3, 11, 12, tzinfo=UTC).timestamp()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[ServiceEnv]:
    db = Database(tmp_path / "moderation.sqlite3")
    await db.connect()
    try:
        yield ServiceEnv(db, Clock(NOW))
    finally:
        await db.close()


Action = Callable[[ModerationService], Awaitable[AuditEntry]]

# Every moderator action, in an order where each one is valid, with its action name and summary.
ACTIONS: list[tuple[str, str, Action]] = [
    (
        "settings.period",
        "set the credit period to per week, resetting at 06:00 UTC",
        lambda m: m.set_period(guild_id=GUILD, actor_id=MOD, period="week", reset_hour=6),
    ),
    (
        "settings.period",
        "set the credit period to per day, resetting at 06:00 UTC",
        lambda m: m.set_period(guild_id=GUILD, actor_id=MOD, period="day"),
    ),
    (
        "settings.default_allowance",
        "set the default allowance to 20 credits per day",
        lambda m: m.set_default_allowance(guild_id=GUILD, actor_id=MOD, allowance=20),
    ),
    (
        "settings.default_allowance",
        "set the default allowance to unlimited",
        lambda m: m.set_default_allowance(guild_id=GUILD, actor_id=MOD, allowance=None),
    ),
    (
        "allowance.role.set",
        "set <@&7>'s allowance to 50 credits per day",
        lambda m: m.set_role_allowance(guild_id=GUILD, actor_id=MOD, role_id=7, allowance=50),
    ),
    (
        "allowance.role.clear",
        "cleared <@&7>'s allowance",
        lambda m: m.clear_role_allowance(guild_id=GUILD, actor_id=MOD, role_id=7),
    ),
    (
        "allowance.user.set",
        "set <@42>'s allowance to 50 credits per day",
        lambda m: m.set_user_allowance(guild_id=GUILD, actor_id=MOD, user_id=MEMBER, allowance=50),
    ),
    (
        "allowance.user.clear",
        "removed <@42>'s own allowance",
        lambda m: m.clear_user_allowance(guild_id=GUILD, actor_id=MOD, user_id=MEMBER),
    ),
    (
        "credits.grant",
        "granted <@42> 5 extra credits today",
        lambda m: m.grant_credits(guild_id=GUILD, actor_id=MOD, user_id=MEMBER, amount=5),
    ),
    (
        "credits.reset",
        "reset <@42>'s usage today (0 credits given back)",
        lambda m: m.reset_usage(guild_id=GUILD, actor_id=MOD, user_id=MEMBER),
    ),
    (
        "ban.add",
        f"banned <@42> from generating for 2 hours (until <t:{int(NOW) + 7200}:f>): spam",
        lambda m: m.ban(
            guild_id=GUILD, actor_id=MOD, user_id=MEMBER, duration_seconds=7200, reason="  spam "
        ),
    ),
    (
        "ban.remove",
        "lifted <@42>'s generation ban",
        lambda m: m.unban(guild_id=GUILD, actor_id=MOD, user_id=MEMBER),
    ),
    (
        "channel.allow",
        "allowed generating images in <#501>",
        lambda m: m.allow_channel(guild_id=GUILD, actor_id=MOD, channel_id=501),
    ),
    (
        "channel.allow",
        "allowed generating images in <#502>",
        lambda m: m.allow_channel(guild_id=GUILD, actor_id=MOD, channel_id=502),
    ),
    (
        "channel.disallow",
        "removed <#501> from the allowed channels",
        lambda m: m.disallow_channel(guild_id=GUILD, actor_id=MOD, channel_id=501),
    ),
    (
        "channel.clear",
        "cleared the channel rules; images can be generated in any channel",
        lambda m: m.clear_channel_rules(guild_id=GUILD, actor_id=MOD),
    ),
    (
        "blocklist.add",
        "added blocked term #1",
        lambda m: m.add_blocked_term(guild_id=GUILD, actor_id=MOD, term="Dragon"),
    ),
    (
        "blocklist.add",
        "added blocked pattern #2",
        lambda m: m.add_blocked_term(guild_id=GUILD, actor_id=MOD, term="wy?rm", is_regex=True),
    ),
    (
        "blocklist.remove",
        "removed blocked term #1",
        lambda m: m.remove_blocked_term(guild_id=GUILD, actor_id=MOD, term="DRAGON"),
    ),
    (
        "blocklist.remove",
        "removed blocked pattern #2",
        lambda m: m.remove_blocked_term(guild_id=GUILD, actor_id=MOD, term="#2"),
    ),
    (
        "settings.max_concurrent",
        "set the limit to 3 generations at a time per member",
        lambda m: m.set_max_concurrent(guild_id=GUILD, actor_id=MOD, value=3),
    ),
    (
        "settings.cooldown_seconds",
        "set the cooldown between a member's generations to 1 minute",
        lambda m: m.set_cooldown(guild_id=GUILD, actor_id=MOD, seconds=60),
    ),
    (
        "settings.cooldown_seconds",
        "turned off the cooldown between generations",
        lambda m: m.set_cooldown(guild_id=GUILD, actor_id=MOD, seconds=0),
    ),
    (
        "settings.max_outputs",
        "set the most images per request to 2",
        lambda m: m.set_max_outputs(guild_id=GUILD, actor_id=MOD, value=2),
    ),
    (
        "settings.spend_cap",
        "set the server spend cap to 500 credits per day",
        lambda m: m.set_spend_cap(guild_id=GUILD, actor_id=MOD, cap=500),
    ),
    (
        "settings.spend_cap",
        "removed the server spend cap",
        lambda m: m.set_spend_cap(guild_id=GUILD, actor_id=MOD, cap=None),
    ),
    (
        "settings.moderator_role_id",
        "set the moderator role to <@&77>",
        lambda m: m.set_moderator_role(guild_id=GUILD, actor_id=MOD, role_id=77),
    ),
    (
        "settings.log_channel_id",
        "set the moderation log channel to <#600>",
        lambda m: m.set_log_channel(guild_id=GUILD, actor_id=MOD, channel_id=600),
    ),
    (
        "settings.log_channel_id",
        "turned off the moderation log channel",
        lambda m: m.set_log_channel(guild_id=GUILD, actor_id=MOD, channel_id=None),
    ),
]


async def test_every_moderator_action_writes_one_audit_row(env: ServiceEnv) -> None:
    for expected_action, expected_summary, action in ACTIONS:
        before = await env.audit_count()
        entry = await action(env.mod)
        assert await env.audit_count() == before + 1, expected_action
        assert (entry.action, entry.summary) == (expected_action, expected_summary)
        assert (entry.guild_id, entry.actor_id, entry.created_at) == (GUILD, MOD, NOW)
        stored = (await env.mod.audit_entries(GUILD, limit=1))[0]
        assert stored == entry
    assert await env.audit_count(OTHER_GUILD) == 0


async def test_audit_details_record_the_change(env: ServiceEnv) -> None:
    entry = await env.mod.set_user_allowance(
        guild_id=GUILD, actor_id=MOD, user_id=MEMBER, allowance=None
    )
    assert entry.target_id == MEMBER
    assert entry.details == {"user_id": MEMBER, "allowance": None}
    entry = await env.mod.set_max_outputs(guild_id=GUILD, actor_id=MOD, value=3)
    assert entry.details == {"max_outputs": 3, "previous": 4}


INVALID: list[tuple[str, Action]] = [
    ("period must be one of", lambda m: m.set_period(guild_id=GUILD, actor_id=MOD, period="year")),
    (
        "reset hour",
        lambda m: m.set_period(guild_id=GUILD, actor_id=MOD, period="day", reset_hour=24),
    ),
    ("allowance", lambda m: m.set_default_allowance(guild_id=GUILD, actor_id=MOD, allowance=-1)),
    (
        "allowance",
        lambda m: m.set_role_allowance(guild_id=GUILD, actor_id=MOD, role_id=7, allowance=10**9),
    ),
    (
        "no allowance of its own",
        lambda m: m.clear_role_allowance(guild_id=GUILD, actor_id=MOD, role_id=7),
    ),
    (
        "no allowance of their own",
        lambda m: m.clear_user_allowance(guild_id=GUILD, actor_id=MOD, user_id=MEMBER),
    ),
    ("grant", lambda m: m.grant_credits(guild_id=GUILD, actor_id=MOD, user_id=MEMBER, amount=0)),
    (
        "grant",
        lambda m: m.grant_credits(guild_id=GUILD, actor_id=MOD, user_id=MEMBER, amount=10_001),
    ),
    ("grant", lambda m: m.grant_credits(guild_id=GUILD, actor_id=MOD, user_id=MEMBER, amount=-5)),
    (
        "ban's length",
        lambda m: m.ban(guild_id=GUILD, actor_id=MOD, user_id=MEMBER, duration_seconds=5),
    ),
    ("reason", lambda m: m.ban(guild_id=GUILD, actor_id=MOD, user_id=MEMBER, reason="x" * 201)),
    ("isn't banned", lambda m: m.unban(guild_id=GUILD, actor_id=MOD, user_id=MEMBER)),
    (
        "isn't one of the allowed",
        lambda m: m.disallow_channel(guild_id=GUILD, actor_id=MOD, channel_id=501),
    ),
    ("no channel rules", lambda m: m.clear_channel_rules(guild_id=GUILD, actor_id=MOD)),
    ("empty", lambda m: m.add_blocked_term(guild_id=GUILD, actor_id=MOD, term=" \u200b ")),
    (
        "match empty text",
        lambda m: m.add_blocked_term(guild_id=GUILD, actor_id=MOD, term=".*", is_regex=True),
    ),
    (
        "isn't on this server's blocklist",
        lambda m: m.remove_blocked_term(guild_id=GUILD, actor_id=MOD, term="dragon"),
    ),
    ("at once", lambda m: m.set_max_concurrent(guild_id=GUILD, actor_id=MOD, value=0)),
    ("cooldown", lambda m: m.set_cooldown(guild_id=GUILD, actor_id=MOD, seconds=-1)),
    ("images per request", lambda m: m.set_max_outputs(guild_id=GUILD, actor_id=MOD, value=5)),
    ("spend cap", lambda m: m.set_spend_cap(guild_id=GUILD, actor_id=MOD, cap=0)),
    ("valid role", lambda m: m.set_moderator_role(guild_id=GUILD, actor_id=MOD, role_id=0)),
    ("valid channel", lambda m: m.set_log_channel(guild_id=GUILD, actor_id=MOD, channel_id=-3)),
]


@pytest.mark.parametrize(("message", "action"), INVALID)
async def test_invalid_input_is_refused_and_not_audited(
    env: ServiceEnv, message: str, action: Action
) -> None:
    with pytest.raises(InvalidSetting, match=message):
        await action(env.mod)
    assert await env.audit_count() == 0
    assert issubclass(InvalidSetting, ValueError)


async def test_duplicates_are_refused(env: ServiceEnv) -> None:
    await env.mod.allow_channel(guild_id=GUILD, actor_id=MOD, channel_id=501)
    with pytest.raises(InvalidSetting, match="already an allowed channel"):
        await env.mod.allow_channel(guild_id=GUILD, actor_id=MOD, channel_id=501)
    await env.mod.add_blocked_term(guild_id=GUILD, actor_id=MOD, term="Dragon")
    with pytest.raises(InvalidSetting, match="already blocked"):
        await env.mod.add_blocked_term(guild_id=GUILD, actor_id=MOD, term="  DRAGON ")
    assert await env.audit_count() == 2


async def test_settings_persist_across_a_restart(env: ServiceEnv, tmp_path: Path) -> None:
    await env.mod.set_period(guild_id=GUILD, actor_id=MOD, period="month", reset_hour=3)
    await env.mod.set_default_allowance(guild_id=GUILD, actor_id=MOD, allowance=None)
    await env.mod.set_moderator_role(guild_id=GUILD, actor_id=MOD, role_id=77)
    await env.db.close()
    db = Database(tmp_path / "moderation.sqlite3")
    await db.connect()
    try:
        mod = ModerationService(db, Limits(db, env.clock), env.clock)
        settings = await mod.get_settings(GUILD)
        assert (settings.period, settings.reset_hour) == (Period.MONTH, 3)
        assert settings.default_allowance is None and settings.moderator_role_id == 77
        defaults = await mod.get_settings(OTHER_GUILD)
        assert (defaults.period, defaults.default_allowance, defaults.max_concurrent) == (
            Period.DAY,
            10,
            2,
        )
    finally:
        await db.close()
        await env.db.connect()  # so the fixture can close it


async def test_is_moderator(env: ServiceEnv) -> None:
    assert await env.mod.is_moderator(GUILD, (), has_manage_guild=True)
    assert not await env.mod.is_moderator(GUILD, (77,), has_manage_guild=False)
    await env.mod.set_moderator_role(guild_id=GUILD, actor_id=MOD, role_id=77)
    assert await env.mod.is_moderator(GUILD, (5, 77), has_manage_guild=False)
    assert not await env.mod.is_moderator(OTHER_GUILD, (77,), has_manage_guild=False)


async def test_reset_keeps_credits_held_by_running_jobs(env: ServiceEnv) -> None:
    await env.finish(await env.reserve(outputs=3))
    running = await env.reserve(outputs=4)
    entry = await env.mod.reset_usage(guild_id=GUILD, actor_id=MOD, user_id=MEMBER)
    assert entry.details["forgiven"] == 3
    assert (await env.limits.balance(GUILD, MEMBER, ())).remaining == 6
    await env.store.mark_failed(running.id, "timed out")
    balance = await env.limits.balance(GUILD, MEMBER, ())
    assert (balance.used, balance.remaining) == (0, 10)  # not 14: the refund isn't doubled


async def test_audit_entries_page_backwards(env: ServiceEnv) -> None:
    for hour in range(5):
        await env.mod.set_period(guild_id=GUILD, actor_id=MOD, period="day", reset_hour=hour)
    first = await env.mod.audit_entries(GUILD, limit=2)
    assert [e.details["reset_hour"] for e in first] == [4, 3]
    second = await env.mod.audit_entries(GUILD, limit=2, before_id=first[-1].id)
    assert [e.details["reset_hour"] for e in second] == [2, 1]
    assert len(await env.mod.audit_entries(GUILD, limit=1000)) == 5


async def test_record_generation(env: ServiceEnv) -> None:
    job = await env.finish(await env.reserve(outputs=2))
    entry = await env.mod.record_generation(
        guild_id=GUILD, user_id=MEMBER, job_id=job.id, outcome="posted", credits=2
    )
    assert (entry.action, entry.actor_id, entry.target_id) == ("generation.posted", MEMBER, job.id)
    assert entry.summary == f"ran generation #{job.id}: posted, 2 credits"
    assert entry.details == {"job_id": job.id, "user_id": MEMBER, "outcome": "posted", "credits": 2}


async def test_usage_report(env: ServiceEnv) -> None:
    await env.mod.set_spend_cap(guild_id=GUILD, actor_id=MOD, cap=40)
    env.clock.now = YESTERDAY
    await env.finish(await env.reserve(user=5, outputs=4))
    env.clock.now = NOW
    await env.finish(await env.reserve(user=5, outputs=4), charged=3)
    await env.finish(await env.reserve(user=6, outputs=4))
    await env.finish(await env.reserve(user=6, outputs=4))
    failed = await env.reserve(user=7, outputs=4)
    await env.store.mark_failed(failed.id, "rejected")
    await env.reserve(user=8, outputs=1)  # still running
    await env.mod.reset_usage(guild_id=GUILD, actor_id=MOD, user_id=6)  # forgiven, still spent
    await env.reserve(user=9, outputs=1, guild=OTHER_GUILD)

    report = await env.mod.usage_report(GUILD)
    assert (report.period, report.period_start) == (Period.DAY, TODAY)
    assert report.period_end == TODAY + 86400
    assert report.total_credits == 3 + 8 + 0 + 1
    assert report.previous_period_start == TODAY - 86400
    assert report.previous_total_credits == 4
    assert [(u.user_id, u.credits, u.jobs) for u in report.top_users] == [
        (6, 8, 2),
        (5, 3, 1),
        (8, 1, 1),
        (7, 0, 1),
    ]
    assert (report.jobs_posted, report.jobs_failed, report.jobs_active) == (3, 1, 1)
    assert (report.spend_cap, report.cap_used, report.cap_fraction) == (40, 12, 0.3)

    past = await env.mod.usage_report(GUILD, period_start=YESTERDAY)
    assert (past.period_start, past.total_credits, past.jobs_posted) == (TODAY - 86400, 4, 1)
    assert past.previous_total_credits == 0
    assert (await env.mod.usage_report(GUILD, top=1)).top_users[0].user_id == 6


async def test_guild_isolation_of_moderation(env: ServiceEnv) -> None:
    await env.finish(await env.reserve(user=5))
    await env.mod.add_blocked_term(guild_id=GUILD, actor_id=MOD, term="dragon")
    await env.mod.ban(guild_id=GUILD, actor_id=MOD, user_id=MEMBER)
    await env.mod.allow_channel(guild_id=GUILD, actor_id=MOD, channel_id=501)
    await env.mod.set_role_allowance(guild_id=GUILD, actor_id=MOD, role_id=7, allowance=5)
    await env.mod.set_user_allowance(guild_id=GUILD, actor_id=MOD, user_id=MEMBER, allowance=5)
    await env.mod.grant_credits(guild_id=GUILD, actor_id=MOD, user_id=MEMBER, amount=9)

    assert await env.mod.blocked_terms(OTHER_GUILD) == []
    assert await env.mod.bans(OTHER_GUILD) == []
    assert await env.mod.allowed_channels(OTHER_GUILD) == []
    assert await env.mod.role_allowances(OTHER_GUILD) == {}
    assert await env.mod.user_allowances(OTHER_GUILD) == {}
    assert await env.mod.audit_entries(OTHER_GUILD) == []
    other = await env.mod.usage_report(OTHER_GUILD)
    assert (other.total_credits, other.top_users, other.jobs_posted) == (0, (), 0)
    assert (await env.limits.balance(OTHER_GUILD, MEMBER, ())).granted == 0
    # Another guild's moderators cannot reach into this guild's rows by id either.
    with pytest.raises(InvalidSetting):
        await env.mod.remove_blocked_term(guild_id=OTHER_GUILD, actor_id=MOD, term=1)
    with pytest.raises(InvalidSetting):
        await env.mod.unban(guild_id=OTHER_GUILD, actor_id=MOD, user_id=MEMBER)
    with pytest.raises(InvalidSetting):
        await env.mod.disallow_channel(guild_id=OTHER_GUILD, actor_id=MOD, channel_id=501)
    assert len(await env.mod.blocked_terms(GUILD)) == 1
    assert [b.user_id for b in await env.mod.bans(GUILD)] == [MEMBER]


async def test_listings(env: ServiceEnv) -> None:
    await env.mod.add_blocked_term(guild_id=GUILD, actor_id=MOD, term="Blood  Bath")
    await env.mod.add_blocked_term(guild_id=GUILD, actor_id=MOD, term="g[o0]re", is_regex=True)
    terms = await env.mod.blocked_terms(GUILD)
    assert [(t.id, t.pattern, t.is_regex, t.actor_id) for t in terms] == [
        (1, "blood bath", False, MOD),
        (2, "g[o0]re", True, MOD),
    ]
    await env.mod.ban(guild_id=GUILD, actor_id=MOD, user_id=5, duration_seconds=60)
    await env.mod.ban(guild_id=GUILD, actor_id=MOD, user_id=6, reason="spam")
    bans = await env.mod.bans(GUILD)
    assert [(b.user_id, b.until, b.reason) for b in bans] == [
        (5, NOW + 60, None),
        (6, None, "spam"),
    ]
    env.clock.now += 61
    assert [b.user_id for b in await env.mod.bans(GUILD)] == [6]
