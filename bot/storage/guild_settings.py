"""One guild's credit and moderation settings: a `guild_settings` row, or the defaults.

The `GuildSettings` dataclass holds the only defaults. A NULL column means "the default", so a
guild follows a changed default for every setting its moderators never set; the table has no
SQL `DEFAULT`s. Settings whose value may itself be None (an unlimited default allowance, no
spend cap) store that choice as `NONE_CHOSEN` so it stays distinct from NULL.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields
from typing import Any

from bot.credits.periods import Period


@dataclass(frozen=True)
class GuildSettings:
    """A guild's rules. `None` allowance means unlimited; `None` cap means no cap."""

    guild_id: int
    period: Period = Period.DAY
    reset_hour: int = 0
    default_allowance: int | None = 10
    spend_cap: int | None = None
    max_concurrent: int = 2
    max_queued: int = 5
    """Prompts a member may have waiting beyond `max_concurrent` running."""
    cooldown_seconds: int = 0
    max_outputs: int = 4
    moderator_role_id: int | None = None
    log_channel_id: int | None = None
    cap_warned_period: float | None = None
    cap_paused_period: float | None = None


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(GuildSettings) if f.name != "guild_id")

NONE_CHOSEN = -1
"""Stored for a moderator's explicit None in `NONE_CHOSEN_COLUMNS` (NULL is the default)."""
NONE_CHOSEN_COLUMNS = frozenset({"default_allowance", "spend_cap"})


def _to_column(name: str, value: Any) -> Any:
    if value is None:
        return NONE_CHOSEN if name in NONE_CHOSEN_COLUMNS else None
    return value.value if isinstance(value, Period) else value


def _from_column(name: str, value: Any) -> Any:
    if name in NONE_CHOSEN_COLUMNS and value == NONE_CHOSEN:
        return None
    return Period(value) if name == "period" else value


def load(conn: sqlite3.Connection, guild_id: int) -> GuildSettings:
    """The guild's settings: what its moderators set, the defaults for the rest."""
    row = (
        conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM guild_settings WHERE guild_id = ?", (guild_id,)
        )
    ).fetchone()
    if row is None:
        return GuildSettings(guild_id=guild_id)
    stored = {
        name: _from_column(name, value)
        for name, value in zip(COLUMNS, row, strict=True)
        if value is not None
    }
    return GuildSettings(guild_id=guild_id, **stored)


def save(conn: sqlite3.Connection, guild_id: int, **values: Any) -> None:
    """Set some columns of the guild's row, creating it (the rest left at their defaults)."""
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise KeyError(f"unknown guild setting(s): {', '.join(sorted(unknown))}")
    names = list(values)
    params = [_to_column(name, value) for name, value in values.items()]
    conn.execute(
        f"""
        INSERT INTO guild_settings (guild_id, {", ".join(names)})
        VALUES (?, {", ".join("?" for _ in names)})
        ON CONFLICT (guild_id) DO UPDATE SET
            {", ".join(f"{name} = excluded.{name}" for name in names)}
        """,
        (guild_id, *params),
    )
