"""The audit log: one row per moderator action and per generation, never edited."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AuditEntry:
    """One audit row. `summary` is a sentence without its actor, e.g. "set <@1>'s allowance to
    50 credits per day", for the log channel to prefix with the actor's mention."""

    id: int
    guild_id: int
    actor_id: int | None
    action: str
    target_id: int | None
    details: dict[str, Any] = field(hash=False)
    created_at: float
    summary: str

    @classmethod
    def from_row(cls, row: Any) -> AuditEntry:
        data = dict(row)
        data["details"] = json.loads(data["details"] or "{}")
        return cls(**data)


def write(
    conn: sqlite3.Connection,
    *,
    guild_id: int,
    actor_id: int | None,
    action: str,
    target_id: int | None,
    details: dict[str, Any],
    summary: str,
    now: float,
) -> AuditEntry:
    """Append one entry inside the caller's transaction and return it."""
    cursor = conn.execute(
        """
        INSERT INTO audit_log (guild_id, actor_id, action, target_id, details, summary, created_at)
        VALUES (?, ?, ?, ?, ?, ?, ?)
        """,
        (guild_id, actor_id, action, target_id, json.dumps(details, sort_keys=True), summary, now),
    )
    return AuditEntry(
        id=int(cursor.lastrowid or 0),
        guild_id=guild_id,
        actor_id=actor_id,
        action=action,
        target_id=target_id,
        details=details,
        created_at=now,
        summary=summary,
    )


def entries(
    conn: sqlite3.Connection, guild_id: int, limit: int, before_id: int | None = None
) -> list[AuditEntry]:
    """The guild's newest entries first, optionally only those older than `before_id`."""
    rows = (
        conn.execute(
            """
            SELECT id, guild_id, actor_id, action, target_id, details, created_at, summary
            FROM audit_log WHERE guild_id = ? AND id < ? ORDER BY id DESC LIMIT ?
            """,
            (guild_id, before_id if before_id is not None else 2**63 - 1, limit),
        )
    ).fetchall()
    return [AuditEntry.from_row(row) for row in rows]
