"""A guild's rule tables: role and member allowances, allowed channels, blocked terms, bans.

Every function runs on a connection the caller holds,
so a check and the write it guards can share one transaction. They are synchronous (a
`sqlite3.Connection`, on the database thread inside `Database.run` or `call`), so each
transaction is one trip there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Allowance:
    """A stored allowance: credits per period, `credits` None meaning unlimited."""

    credits: int | None


@dataclass(frozen=True)
class BlockedTerm:
    """A blocked word, phrase or regular expression (for moderators' eyes only)."""

    id: int
    pattern: str
    is_regex: bool
    actor_id: int | None
    created_at: float


@dataclass(frozen=True)
class Ban:
    """A member barred from generating; `until` None means permanently."""

    user_id: int
    until: float | None
    reason: str | None
    actor_id: int | None
    created_at: float


# -- allowances --------------------------------------------------------------------------


def role_allowances(conn: sqlite3.Connection, guild_id: int) -> dict[int, int | None]:
    """Role id → allowance per period (None = unlimited), by role id."""
    rows = conn.execute(
        "SELECT role_id, allowance FROM role_allowances WHERE guild_id = ? ORDER BY role_id",
        (guild_id,),
    )
    return {row[0]: row[1] for row in rows}


def role_allowances_among(
    conn: sqlite3.Connection, guild_id: int, role_ids: Sequence[int]
) -> list[int | None]:
    """The allowances of those of `role_ids` that have one (None = unlimited)."""
    if not role_ids:
        return []
    rows = conn.execute(
        f"""
        SELECT allowance FROM role_allowances
        WHERE guild_id = ? AND role_id IN ({",".join("?" for _ in role_ids)})
        """,
        (guild_id, *role_ids),
    )
    return [row[0] for row in rows]


def set_role_allowance(
    conn: sqlite3.Connection, guild_id: int, role_id: int, allowance: int | None
) -> None:
    """Give a role its allowance, replacing any it had."""
    conn.execute(
        "INSERT INTO role_allowances (guild_id, role_id, allowance) VALUES (?, ?, ?) "
        "ON CONFLICT (guild_id, role_id) DO UPDATE SET allowance = excluded.allowance",
        (guild_id, role_id, allowance),
    )


def clear_role_allowance(conn: sqlite3.Connection, guild_id: int, role_id: int) -> bool:
    """Remove a role's allowance; False when it had none."""
    cursor = conn.execute(
        "DELETE FROM role_allowances WHERE guild_id = ? AND role_id = ?", (guild_id, role_id)
    )
    return cursor.rowcount > 0


def user_allowances(conn: sqlite3.Connection, guild_id: int) -> dict[int, int | None]:
    """Member id → allowance override per period (None = unlimited), by member id."""
    rows = conn.execute(
        "SELECT user_id, allowance FROM user_allowances WHERE guild_id = ? ORDER BY user_id",
        (guild_id,),
    )
    return {row[0]: row[1] for row in rows}


def user_allowance(conn: sqlite3.Connection, guild_id: int, user_id: int) -> Allowance | None:
    """The member's own allowance, or None when they have no override."""
    rows = conn.execute(
        "SELECT allowance FROM user_allowances WHERE guild_id = ? AND user_id = ?",
        (guild_id, user_id),
    )
    return next((Allowance(row[0]) for row in rows), None)


def set_user_allowance(
    conn: sqlite3.Connection, guild_id: int, user_id: int, allowance: int | None
) -> None:
    """Give a member their own allowance, replacing any they had."""
    conn.execute(
        "INSERT INTO user_allowances (guild_id, user_id, allowance) VALUES (?, ?, ?) "
        "ON CONFLICT (guild_id, user_id) DO UPDATE SET allowance = excluded.allowance",
        (guild_id, user_id, allowance),
    )


def clear_user_allowance(conn: sqlite3.Connection, guild_id: int, user_id: int) -> bool:
    """Remove a member's own allowance; False when they had none."""
    cursor = conn.execute(
        "DELETE FROM user_allowances WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
    )
    return cursor.rowcount > 0


# -- allowed channels --------------------------------------------------------------------


def allowed_channels(conn: sqlite3.Connection, guild_id: int) -> list[int]:
    """Channels generation is limited to, by id; empty means everywhere."""
    rows = conn.execute(
        "SELECT channel_id FROM allowed_channels WHERE guild_id = ? ORDER BY channel_id",
        (guild_id,),
    )
    return [row[0] for row in rows]


def allow_channel(conn: sqlite3.Connection, guild_id: int, channel_id: int) -> bool:
    """Add an allowed channel; False when it already was one."""
    cursor = conn.execute(
        "INSERT OR IGNORE INTO allowed_channels (guild_id, channel_id) VALUES (?, ?)",
        (guild_id, channel_id),
    )
    return cursor.rowcount > 0


def disallow_channel(conn: sqlite3.Connection, guild_id: int, channel_id: int) -> bool:
    """Remove an allowed channel; False when it wasn't one."""
    cursor = conn.execute(
        "DELETE FROM allowed_channels WHERE guild_id = ? AND channel_id = ?",
        (guild_id, channel_id),
    )
    return cursor.rowcount > 0


def count_allowed_channels(conn: sqlite3.Connection, guild_id: int) -> int:
    """How many channels generation is limited to (0: every channel is allowed)."""
    rows = conn.execute("SELECT COUNT(*) FROM allowed_channels WHERE guild_id = ?", (guild_id,))
    return int(next(iter(rows))[0])


def clear_allowed_channels(conn: sqlite3.Connection, guild_id: int) -> int:
    """Remove every allowed channel; returns how many there were."""
    cursor = conn.execute("DELETE FROM allowed_channels WHERE guild_id = ?", (guild_id,))
    return cursor.rowcount


# -- blocked terms -----------------------------------------------------------------------

_TERM_COLUMNS = "id, pattern, is_regex, actor_id, created_at"


def _term(row: Any) -> BlockedTerm:
    return BlockedTerm(row[0], row[1], bool(row[2]), row[3], row[4])


def blocked_terms(conn: sqlite3.Connection, guild_id: int) -> list[BlockedTerm]:
    """The guild's blocklist, oldest first."""
    rows = conn.execute(
        f"SELECT {_TERM_COLUMNS} FROM blocked_terms WHERE guild_id = ? ORDER BY id", (guild_id,)
    )
    return [_term(row) for row in rows]


def blocked_terms_signature(conn: sqlite3.Connection, guild_id: int) -> tuple[int, int]:
    """(count, newest id) of the guild's blocked terms: ids are never reused (AUTOINCREMENT),
    so any add or remove changes it."""
    rows = conn.execute(
        "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM blocked_terms WHERE guild_id = ?",
        (guild_id,),
    )
    count, newest = next(iter(rows))
    return int(count), int(newest)


def blocked_regexes(conn: sqlite3.Connection, guild_id: int) -> list[str]:
    """The patterns of the guild's blocked regular expressions."""
    rows = conn.execute(
        "SELECT pattern FROM blocked_terms WHERE guild_id = ? AND is_regex = 1", (guild_id,)
    )
    return [row[0] for row in rows]


def blocked_term_by_id(conn: sqlite3.Connection, guild_id: int, term_id: int) -> BlockedTerm | None:
    """The guild's blocked term with this id, if any."""
    rows = conn.execute(
        f"SELECT {_TERM_COLUMNS} FROM blocked_terms WHERE guild_id = ? AND id = ?",
        (guild_id, term_id),
    )
    return next((_term(row) for row in rows), None)


def blocked_term_by_pattern(
    conn: sqlite3.Connection, guild_id: int, patterns: Sequence[str]
) -> BlockedTerm | None:
    """The oldest of the guild's blocked terms stored as one of `patterns`, if any."""
    if not patterns:
        return None
    rows = conn.execute(
        f"""
        SELECT {_TERM_COLUMNS} FROM blocked_terms
        WHERE guild_id = ? AND pattern IN ({",".join("?" for _ in patterns)}) ORDER BY id LIMIT 1
        """,
        (guild_id, *patterns),
    )
    return next((_term(row) for row in rows), None)


def add_blocked_term(
    conn: sqlite3.Connection,
    guild_id: int,
    pattern: str,
    *,
    is_regex: bool,
    actor_id: int,
    now: float,
) -> int | None:
    """Block a (cleaned) pattern; returns its new id, or None when it was already blocked."""
    cursor = conn.execute(
        "INSERT OR IGNORE INTO blocked_terms "
        "(guild_id, pattern, is_regex, actor_id, created_at) VALUES (?, ?, ?, ?, ?)",
        (guild_id, pattern, int(is_regex), actor_id, now),
    )
    return int(cursor.lastrowid or 0) if cursor.rowcount else None


def remove_blocked_term(conn: sqlite3.Connection, guild_id: int, term_id: int) -> None:
    """Unblock the guild's term with this id."""
    conn.execute("DELETE FROM blocked_terms WHERE guild_id = ? AND id = ?", (guild_id, term_id))


# -- bans --------------------------------------------------------------------------------

_BAN_COLUMNS = "user_id, until, reason, actor_id, created_at"


def ban_of(conn: sqlite3.Connection, guild_id: int, user_id: int) -> Ban | None:
    """The member's ban row, even an expired one (the caller compares `until` with now)."""
    rows = conn.execute(
        f"SELECT {_BAN_COLUMNS} FROM bans WHERE guild_id = ? AND user_id = ?",
        (guild_id, user_id),
    )
    return next((Ban(*row) for row in rows), None)


def bans_in_force(conn: sqlite3.Connection, guild_id: int, now: float) -> list[Ban]:
    """Bans in force at `now` (expired ones are left out), oldest first."""
    rows = conn.execute(
        f"SELECT {_BAN_COLUMNS} FROM bans "
        "WHERE guild_id = ? AND (until IS NULL OR until > ?) ORDER BY created_at, user_id",
        (guild_id, now),
    )
    return [Ban(*row) for row in rows]


def put_ban(
    conn: sqlite3.Connection,
    guild_id: int,
    user_id: int,
    *,
    until: float | None,
    reason: str | None,
    actor_id: int,
    now: float,
) -> None:
    """Ban a member, replacing any ban they had."""
    conn.execute(
        """
        INSERT INTO bans (guild_id, user_id, until, reason, actor_id, created_at)
        VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (guild_id, user_id) DO UPDATE SET until = excluded.until,
            reason = excluded.reason, actor_id = excluded.actor_id,
            created_at = excluded.created_at
        """,
        (guild_id, user_id, until, reason, actor_id, now),
    )


def lift_ban(conn: sqlite3.Connection, guild_id: int, user_id: int, now: float) -> bool:
    """Remove the member's ban in force at `now`; False when they had none."""
    cursor = conn.execute(
        "DELETE FROM bans WHERE guild_id = ? AND user_id = ? AND (until IS NULL OR until > ?)",
        (guild_id, user_id, now),
    )
    return cursor.rowcount > 0
