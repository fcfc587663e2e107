"""One guild's credit and moderation settings: a `guild_settings` row, or the defaults."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import aiosqlite

from bot.periods import Period


@dataclass(frozen=True)
class GuildSettings:
    """A guild's rules. `None` allowance means unlimited; `None` cap means no cap."""

    guild_id: int
    period: Period = Period.DAY
    reset_hour: int = 0
    default_allowance: int | None = 10
    spend_cap: int | None = None
    max_concurrent: int = 2
    cooldown_seconds: int = 0
    max_outputs: int = 4
    moderator_role_id: int | None = None
    log_channel_id: int | None = None
    cap_warned_period: float | None = None
    cap_paused_period: float | None = None

    @classmethod
    def from_row(cls, row: Any) -> GuildSettings:
        data = dict(row)
        data["period"] = Period(data["period"])
        return cls(**data)


COLUMNS = frozenset(field.name for field in fields(GuildSettings)) - {"guild_id"}


async def load(conn: aiosqlite.Connection, guild_id: int) -> GuildSettings:
    """The guild's settings, or the defaults when no moderator has changed any."""
    row = await (
        await conn.execute("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,))
    ).fetchone()
    return GuildSettings.from_row(row) if row is not None else GuildSettings(guild_id=guild_id)


async def update(conn: aiosqlite.Connection, guild_id: int, **values: Any) -> None:
    """Set some columns of the guild's row, creating it with defaults for the rest."""
    unknown = set(values) - COLUMNS
    if unknown:
        raise KeyError(f"unknown guild setting(s): {', '.join(sorted(unknown))}")
    names = list(values)
    params = [value.value if isinstance(value, Period) else value for value in values.values()]
    await conn.execute(
        f"""
        INSERT INTO guild_settings (guild_id, {", ".join(names)})
        VALUES (?, {", ".join("?" for _ in names)})
        ON CONFLICT (guild_id) DO UPDATE SET
            {", ".join(f"{name} = excluded.{name}" for name in names)}
        """,
        (guild_id, *params),
    )
