"""Guild settings have one set of defaults, the code's: a new release's defaults reach every
guild whose moderators never chose that setting, and a moderator's choices are kept."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import fields
from pathlib import Path

import pytest

from bot.credits.periods import Period
from bot.errors import RequestRefused
from bot.storage import Database
from bot.storage.guild_settings import GuildSettings
from bot.storage.migrations import MIGRATIONS
from tests.service_env import GUILD, MOD, OTHER_GUILD, Clock, ServiceEnv

NOW = 1_741_793_400.0  # 2025-03-12 15:30 UTC


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[ServiceEnv]:
    db = Database(tmp_path / "settings.sqlite3")
    await db.connect()
    try:
        yield ServiceEnv(db, Clock(NOW))
    finally:
        await db.close()


def release_with_defaults(monkeypatch: pytest.MonkeyPatch, **defaults: object) -> None:
    """Make `GuildSettings` default as a future release's code would."""
    init = GuildSettings.__init__
    names = [f.name for f in fields(GuildSettings) if f.name != "guild_id"]
    current = dict(zip(names, init.__defaults__ or (), strict=True))
    current.update(defaults)
    monkeypatch.setattr(init, "__defaults__", tuple(current[name] for name in names))


async def test_a_new_default_reaches_guilds_that_changed_other_settings(
    env: ServiceEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    await env.mod.set_cooldown(guild_id=GUILD, actor_id=MOD, seconds=30)
    await env.mod.set_period(guild_id=GUILD, actor_id=MOD, period="week")
    await env.mod.set_default_allowance(guild_id=OTHER_GUILD, actor_id=MOD, allowance=None)
    await env.mod.set_spend_cap(guild_id=OTHER_GUILD, actor_id=MOD, cap=None)

    release_with_defaults(
        monkeypatch, max_outputs=2, reset_hour=6, default_allowance=5, spend_cap=100
    )

    settings = await env.mod.get_settings(GUILD)
    assert (settings.max_outputs, settings.reset_hour, settings.default_allowance) == (2, 6, 5)
    assert settings.spend_cap == 100
    assert (settings.cooldown_seconds, settings.period) == (30, Period.WEEK)  # chosen: kept
    with pytest.raises(RequestRefused, match="up to 2 images per request"):
        await env.reserve(outputs=3)
    # Explicit "unlimited" and "no cap" are choices too, not "whatever the default is".
    other = await env.mod.get_settings(OTHER_GUILD)
    assert (other.default_allowance, other.spend_cap, other.max_outputs) == (None, None, 2)


def _version_3_database(path: Path) -> None:
    """A database as the previous release left it: SQL DEFAULTs filled in what no one set."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, statements in enumerate(MIGRATIONS[:3], start=1):
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def audit(guild: int, setting: str, value: object) -> None:
        conn.execute(
            "INSERT INTO audit_log (guild_id, actor_id, action, details, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (guild, MOD, f"settings.{setting}", json.dumps({setting: value}), NOW),
        )

    # GUILD's moderator only ever set the cooldown; every other column is the old DEFAULT.
    conn.execute("INSERT INTO guild_settings (guild_id, cooldown_seconds) VALUES (?, 30)", (GUILD,))
    audit(GUILD, "cooldown_seconds", 30)
    # OTHER_GUILD chose values equal to the defaults, "unlimited" and "no cap"; its
    # max_concurrent was edited by hand (no audit entry) to a value that is not the default.
    conn.execute(
        "INSERT INTO guild_settings (guild_id, default_allowance, max_outputs, max_concurrent) "
        "VALUES (?, NULL, 4, 3)",
        (OTHER_GUILD,),
    )
    audit(OTHER_GUILD, "default_allowance", None)
    audit(OTHER_GUILD, "max_outputs", 4)
    audit(OTHER_GUILD, "spend_cap", None)
    conn.close()


async def test_upgrade_forgets_only_the_values_no_moderator_chose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.sqlite3"
    _version_3_database(path)
    db = Database(path)
    await db.connect()
    try:
        release_with_defaults(
            monkeypatch, max_outputs=2, max_concurrent=1, default_allowance=5, spend_cap=100
        )
        env = ServiceEnv(db, Clock(NOW))
        guild = await env.mod.get_settings(GUILD)
        assert (guild.max_outputs, guild.max_concurrent, guild.default_allowance) == (2, 1, 5)
        assert (guild.spend_cap, guild.cooldown_seconds, guild.period) == (100, 30, Period.DAY)
        other = await env.mod.get_settings(OTHER_GUILD)
        assert (other.max_outputs, other.max_concurrent) == (4, 3)
        assert (other.default_allowance, other.spend_cap) == (None, None)
        # The rebuilt table accepts writes as before.
        await env.mod.set_max_outputs(guild_id=GUILD, actor_id=MOD, value=3)
        assert (await env.mod.get_settings(GUILD)).max_outputs == 3
    finally:
        await db.close()
