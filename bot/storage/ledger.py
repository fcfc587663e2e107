"""The append-only credit ledger: every credit movement is one row.

Amounts count credits *used* in a period: a reservation adds the estimate, a settlement adds
the difference between what PixelDojo charged and the estimate, a refund takes the job's
credits back, a reset cancels a member's use so far. Grants add to the allowance instead.
A member's remaining credits are `allowance + granted - used` for the current period.

Every function is synchronous and runs on the database thread, inside `Database.run` or
`Database.call`, so a transaction is one trip there.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from bot.generation.models import ACTIVE_STATES
from bot.storage.database import transaction_memo


class LedgerKind(StrEnum):
    RESERVE = "reserve"
    SETTLE = "settle"
    REFUND = "refund"
    GRANT = "grant"
    RESET = "reset"


@dataclass(frozen=True)
class Usage:
    """A member's credit use in one period."""

    used: int
    granted: int


def append(
    conn: sqlite3.Connection,
    *,
    guild_id: int,
    user_id: int,
    kind: LedgerKind,
    amount: int,
    period_start: float,
    now: float,
    job_id: int | None = None,
    actor_id: int | None = None,
    note: str | None = None,
) -> bool:
    """Write one movement inside the caller's transaction.

    Returns False (and writes nothing) when this job already has a row of this kind, so a
    retried settle or refund can never move credits twice.
    """
    cursor = conn.execute(
        """
        INSERT OR IGNORE INTO ledger
            (guild_id, user_id, job_id, kind, amount, period_start, actor_id, note, created_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
        """,
        (guild_id, user_id, job_id, kind.value, amount, period_start, actor_id, note, now),
    )
    return cursor.rowcount == 1


def _range(
    start: float, end: float | None, column: str = "period_start"
) -> tuple[str, tuple[float, ...]]:
    if end is None:
        return f"{column} >= ?", (start,)
    return f"{column} >= ? AND {column} < ?", (start, end)


def usage_between(
    conn: sqlite3.Connection,
    guild_id: int,
    user_id: int,
    start: float,
    end: float | None = None,
) -> Usage:
    """Credits a member used and was granted, over every row booked in `[start, end)`.

    A range rather than one exact `period_start`, so changing a guild's period (day → week)
    counts what was booked under the old period that falls inside the new one.
    """
    where, bounds = _range(start, end)
    row = (
        conn.execute(
            f"""
            SELECT
                COALESCE(SUM(CASE WHEN kind != 'grant' THEN amount END), 0),
                COALESCE(SUM(CASE WHEN kind = 'grant' THEN amount END), 0)
            FROM ledger WHERE guild_id = ? AND user_id = ? AND {where}
            """,
            (guild_id, user_id, *bounds),
        )
    ).fetchone()
    return Usage(used=row[0], granted=row[1])


def held_by_active_jobs(conn: sqlite3.Connection, guild_id: int, user_id: int, start: float) -> int:
    """Credits the member's unfinished jobs hold, over rows booked from `start` on."""
    rows = conn.execute(
        f"""
        SELECT COALESCE(SUM(l.amount), 0) FROM ledger l JOIN jobs j ON j.id = l.job_id
        WHERE l.guild_id = ? AND l.user_id = ? AND l.period_start >= ?
          AND j.state IN ({",".join("?" for _ in ACTIVE_STATES)})
        """,
        (guild_id, user_id, start, *(s.value for s in ACTIVE_STATES)),
    )
    return int(next(iter(rows))[0])


_SPEND = "l.amount + COALESCE(j.provider_charged, 0)"
"""A ledger row's share of real spend, over `_SPEND_FROM` (see `guild_spend`)."""
_SPEND_FROM = """ledger l LEFT JOIN jobs j ON l.kind = 'refund' AND j.id = l.job_id"""


def guild_spend(
    conn: sqlite3.Connection, guild_id: int, start: float, end: float | None = None
) -> int:
    """Credits a guild actually spent in `[start, end)`: held by running jobs, charged by
    PixelDojo for finished ones, whether the member paid or was refunded.

    That is the members' reservations, settlements and refunds, plus what PixelDojo charged
    for the jobs that were refunded (their images could not be delivered). A moderator's reset
    forgives a member's use but not the money spent, so resets and grants do not count here.

    Inside a `Database.run` group the sum is taken once and then only the rows added since are
    read: the ledger is append-only, a refunded job's `provider_charged` is final by the time
    its refund row exists, and the group holds the write lock, so nothing else can change it.
    """
    where, bounds = _range(start, end, "l.period_start")
    memo = transaction_memo(conn)
    key = ("guild_spend", guild_id, start, end)
    known = memo.get(key) if memo is not None else None
    newest = "(SELECT COALESCE(MAX(id), 0) FROM ledger)"
    if known is None:
        row = conn.execute(
            f"""
            SELECT COALESCE(SUM({_SPEND}), 0), {newest} FROM {_SPEND_FROM}
            WHERE l.guild_id = ? AND l.kind IN ('reserve', 'settle', 'refund') AND {where}
            """,
            (guild_id, *bounds),
        ).fetchone()
        spent = int(row[0])
    else:
        # NOT INDEXED: walk the few rows after `seen` by id, not the guild's whole period.
        seen, spent = known
        row = conn.execute(
            f"""
            SELECT COALESCE(SUM({_SPEND}), 0), {newest}
            FROM ledger l NOT INDEXED LEFT JOIN jobs j ON l.kind = 'refund' AND j.id = l.job_id
            WHERE l.id > ? AND l.guild_id = ? AND l.kind IN ('reserve', 'settle', 'refund')
              AND {where}
            """,
            (seen, guild_id, *bounds),
        ).fetchone()
        spent += int(row[0])
    if memo is not None:
        memo[key] = (int(row[1]), spent)
    return spent


def refunded_spend(
    conn: sqlite3.Connection, guild_id: int, start: float, end: float | None = None
) -> int:
    """Of `guild_spend`, what PixelDojo charged for jobs whose members were refunded."""
    where, bounds = _range(start, end, "l.period_start")
    row = (
        conn.execute(
            f"""
            SELECT COALESCE(SUM(j.provider_charged), 0) FROM {_SPEND_FROM}
            WHERE l.guild_id = ? AND l.kind = 'refund' AND {where}
            """,
            (guild_id, *bounds),
        )
    ).fetchone()
    return int(row[0])


def top_spenders(
    conn: sqlite3.Connection, guild_id: int, start: float, end: float | None, *, limit: int
) -> list[tuple[int, int, int]]:
    """(member id, credits spent as in `guild_spend`, jobs started) in `[start, end)`, the
    biggest spenders first."""
    where, bounds = _range(start, end, "l.period_start")
    rows = conn.execute(
        f"""
        SELECT l.user_id,
               COALESCE(SUM({_SPEND}), 0) AS credits,
               SUM(CASE WHEN l.kind = 'reserve' THEN 1 ELSE 0 END) AS jobs
        FROM {_SPEND_FROM}
        WHERE l.guild_id = ? AND {where} AND l.kind IN ('reserve', 'settle', 'refund')
        GROUP BY l.user_id
        ORDER BY credits DESC, jobs DESC, l.user_id
        LIMIT ?
        """,
        (guild_id, *bounds, limit),
    )
    return [(int(row[0]), int(row[1]), int(row[2])) for row in rows]


def spend_by_time(
    conn: sqlite3.Connection,
    guild_id: int,
    start: float,
    end: float | None,
    *,
    origin: float,
    step: float,
    count: int,
) -> list[int]:
    """Of `guild_spend` in `[start, end)`, the credits of each of `count` spans of `step`
    seconds from `origin`, by when each job was reserved (its settlement and refund count
    where its reservation does, as they do for the period). Rows outside the spans are left
    out."""
    where, bounds = _range(start, end, "l.period_start")
    reserved = "COALESCE(j.created_at, l.created_at)"
    rows = conn.execute(
        f"""
        SELECT CAST(({reserved} - ?) / ? AS INTEGER) AS span,
               COALESCE(SUM(l.amount + CASE WHEN l.kind = 'refund'
                                            THEN COALESCE(j.provider_charged, 0) ELSE 0 END), 0)
        FROM ledger l LEFT JOIN jobs j ON j.id = l.job_id
        WHERE l.guild_id = ? AND {where} AND l.kind IN ('reserve', 'settle', 'refund')
          AND {reserved} >= ? AND {reserved} < ?
        GROUP BY span
        """,
        (origin, step, guild_id, *bounds, origin, origin + step * count),
    )
    spans = [0] * count
    for span, credits in rows:
        if 0 <= int(span) < count:
            spans[int(span)] = int(credits)
    return spans


def job_states(
    conn: sqlite3.Connection, guild_id: int, start: float, end: float | None
) -> dict[str, int]:
    """Job state → how many of the jobs reserved in `[start, end)` are in it."""
    where, bounds = _range(start, end, "l.period_start")
    rows = conn.execute(
        f"""
        SELECT j.state, COUNT(*) FROM jobs j
        JOIN ledger l ON l.job_id = j.id AND l.kind = 'reserve'
        WHERE l.guild_id = ? AND {where} GROUP BY j.state
        """,
        (guild_id, *bounds),
    )
    return {row[0]: int(row[1]) for row in rows}


_RESERVED_PERIOD = (
    "COALESCE((SELECT period_start FROM ledger WHERE job_id = ? AND kind = 'reserve'), 0)"
)


def append_for_job(
    conn: sqlite3.Connection, job_id: int, *, kind: LedgerKind, amount: int, now: float
) -> bool:
    """A job's settle-style movement, booked in the period of its reservation (one statement).

    Returns False when the job already has a row of this kind."""
    cursor = conn.execute(
        f"""
        INSERT OR IGNORE INTO ledger
            (guild_id, user_id, job_id, kind, amount, period_start, created_at)
        SELECT guild_id, user_id, id, ?, ?, {_RESERVED_PERIOD}, ?
        FROM jobs WHERE id = ?
        """,
        (kind.value, amount, job_id, now, job_id),
    )
    return cursor.rowcount == 1


def refund_job(
    conn: sqlite3.Connection, job_id: int, *, note: str, now: float, unless: tuple[str, ...]
) -> bool:
    """Give back everything the job holds according to the ledger (its reservation plus any
    settlement), unless the job is in one of the `unless` states. One statement."""
    placeholders = ", ".join("?" for _ in unless)
    cursor = conn.execute(
        f"""
        INSERT OR IGNORE INTO ledger
            (guild_id, user_id, job_id, kind, amount, period_start, note, created_at)
        SELECT guild_id, user_id, id, 'refund',
               -COALESCE((SELECT SUM(amount) FROM ledger
                          WHERE job_id = jobs.id AND kind IN ('reserve', 'settle')), 0),
               {_RESERVED_PERIOD}, ?, ?
        FROM jobs WHERE id = ? AND state NOT IN ({placeholders})
        """,
        (job_id, note, now, job_id, *unless),
    )
    return cursor.rowcount == 1
