"""Durable job records and their state changes, each with its ledger movement in one transaction."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.generation.models import (
    ACTIVE_STATES,
    CREDITS_PER_OUTPUT,
    JOB_COLUMNS,
    GenerationRequest,
    Job,
    JobState,
)
from bot.storage import ledger
from bot.storage.database import Database
from bot.storage.ledger import LedgerKind

log = logging.getLogger(__name__)

_COLUMNS = ", ".join(JOB_COLUMNS)
_LISTED = ", ".join(name for name in JOB_COLUMNS if name != "input_image_url")
"""For lists (/history, /credits, a restart): rows made before input images were stored as
attachment URLs may hold a whole image inline there, so lists never read it."""


@dataclass(frozen=True)
class Admission:
    """What an admission check decided: how many credits to hold, and in which period."""

    credits: int
    period_start: float
    notices: tuple[str, ...] = ()
    """Messages for the moderators' log channel (e.g. the spend cap nearing), sent after commit."""


AdmissionCheck = Callable[[sqlite3.Connection, GenerationRequest, float], Admission]
"""Runs inside the reservation transaction, on the database thread (so it must not block on
anything but SQLite); raises to refuse the request."""


def count_active(conn: sqlite3.Connection, guild_id: int, user_id: int) -> int:
    """The member's unfinished jobs: waiting in the queue, being sent, running or being posted."""
    rows = conn.execute(
        f"""
        SELECT COUNT(*) FROM jobs WHERE guild_id = ? AND user_id = ?
        AND state IN ({",".join("?" for _ in ACTIVE_STATES)})
        """,
        (guild_id, user_id, *(s.value for s in ACTIVE_STATES)),
    )
    return int(next(iter(rows))[0])


def last_created_at(conn: sqlite3.Connection, guild_id: int, user_id: int) -> float | None:
    """When the member's newest job was created; None when they have none."""
    rows = conn.execute(
        "SELECT MAX(created_at) FROM jobs WHERE guild_id = ? AND user_id = ?",
        (guild_id, user_id),
    )
    last: float | None = next(iter(rows))[0]
    return last


def reserve(
    conn: sqlite3.Connection, request: GenerationRequest, admit: AdmissionCheck, now: float
) -> tuple[Job, Admission]:
    """The reservation transaction's body: admit the request and write its job and its ledger
    row. Runs inside `Database.run` (the ledger bench also runs it on a bare connection)."""
    admission = admit(conn, request, now)
    cursor = conn.execute(
        """
        INSERT INTO jobs (guild_id, channel_id, user_id, prompt, aspect_ratio, num_outputs,
                          seed, parent_job_id, state, credits_reserved, created_at,
                          input_image_url)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """,
        (
            request.guild_id,
            request.channel_id,
            request.user_id,
            request.prompt,
            request.aspect_ratio,
            request.num_outputs,
            request.seed,
            request.parent_job_id,
            JobState.QUEUED.value,
            admission.credits,
            now,
            request.input_image_url,
        ),
    )
    job_id = int(cursor.lastrowid or 0)
    ledger.append(
        conn,
        guild_id=request.guild_id,
        user_id=request.user_id,
        kind=LedgerKind.RESERVE,
        amount=admission.credits,
        period_start=admission.period_start,
        now=now,
        job_id=job_id,
    )
    return _get(conn, job_id), admission


class JobStore:
    """Reads and writes `jobs` rows. Every state change that moves credits writes its ledger row
    in the same transaction, so a crash can never leave a charge without its job or vice versa.

    Each method is one trip to the database thread (`Database.run` or `Database.call`)."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def create_admitted(
        self, request: GenerationRequest, admit: AdmissionCheck
    ) -> tuple[Job, Admission]:
        """Check the request against the limits and reserve its credits, atomically.

        Also returns the admission, whose `notices` are for the moderators' log channel: the
        transaction has committed when this returns, so they can be sent."""

        return await self.db.run(lambda conn: reserve(conn, request, admit, self.clock()))

    async def get(self, job_id: int) -> Job | None:
        return await self.db.call(lambda conn: _get_or_none(conn, job_id))

    async def active(self) -> list[Job]:
        """Every job not yet posted or failed, oldest first (what a restart must resume). Only
        queued jobs carry their input image: they are still to be sent; the others never are."""
        placeholders = ",".join("?" for _ in ACTIVE_STATES)
        image = "CASE WHEN state = ? THEN input_image_url END AS input_image_url"
        rows = await self.db.fetchall(
            f"SELECT {_LISTED}, {image} FROM jobs WHERE state IN ({placeholders}) ORDER BY id",
            [JobState.QUEUED.value, *(s.value for s in ACTIVE_STATES)],
        )
        return [Job.from_row(row) for row in rows]

    async def recent_durations(self, limit: int) -> list[float]:
        """Seconds from submission to completion of the latest finished jobs, oldest first."""
        rows = await self.db.fetchall(
            """
            SELECT completed_at - submitted_at FROM jobs
            WHERE completed_at IS NOT NULL AND submitted_at IS NOT NULL
            ORDER BY id DESC LIMIT ?
            """,
            (limit,),
        )
        return [row[0] for row in reversed(rows)]

    async def recent_for_user(self, guild_id: int, user_id: int, limit: int = 5) -> list[Job]:
        rows = await self.db.fetchall(
            f"SELECT {_LISTED} FROM jobs WHERE guild_id = ? AND user_id = ? "
            "ORDER BY id DESC LIMIT ?",
            (guild_id, user_id, limit),
        )
        return [Job.from_row(row) for row in rows]

    async def set_status_message(self, job_id: int, message_id: int) -> Job:
        return await self._update(job_id, status_message_id=message_id)

    async def mark_sending(self, job_id: int) -> Job | None:
        """A queued job's turn came: RESERVED from now until PixelDojo answers. None if it is
        no longer queued (cancelled meanwhile), so it must not be sent."""
        return await self._move(job_id, (JobState.QUEUED,), JobState.RESERVED)

    async def requeue(self, job_id: int) -> Job | None:
        """PixelDojo certainly did not take the job (it answered 429): QUEUED again. None if
        it has ended meanwhile."""
        return await self._move(job_id, (JobState.RESERVED, JobState.QUEUED), JobState.QUEUED)

    async def cancel_queued(self, job_id: int, reason: str) -> Job | None:
        """Cancel a job still waiting in the queue, refunding it in the same transaction.
        None if it is not queued (it has started or ended): nothing changes then."""
        started = tuple(state.value for state in JobState if state is not JobState.QUEUED)

        def cancel(conn: sqlite3.Connection) -> Job | None:
            now = self.clock()
            ledger.refund_job(conn, job_id, note=reason[:200], now=now, unless=started)
            rows = conn.execute(
                f"""
                UPDATE jobs SET state = ?, error = ?, credits_charged = 0, finished_at = ?
                WHERE id = ? AND state = ?
                RETURNING {_COLUMNS}
                """,
                (JobState.FAILED.value, reason, now, job_id, JobState.QUEUED.value),
            ).fetchall()
            return Job.from_row(rows[0]) if rows else None

        return await self.db.run(cancel)

    async def _move(
        self, job_id: int, sources: tuple[JobState, ...], target: JobState
    ) -> Job | None:
        """One conditional `UPDATE … RETURNING`: the state changes only from `sources`."""
        placeholders = ", ".join("?" for _ in sources)
        sql = (
            f"UPDATE jobs SET state = ? WHERE id = ? AND state IN ({placeholders}) "
            f"RETURNING {_COLUMNS}"
        )
        params = (target.value, job_id, *(source.value for source in sources))
        rows = await self.db.call(lambda conn: conn.execute(sql, params).fetchall())
        return Job.from_row(rows[0]) if rows else None

    async def mark_submitted(
        self,
        job_id: int,
        *,
        api_job_id: str,
        status_url: str,
        expires_at: float | None,
        charged: int | None = None,
    ) -> Job:
        """PixelDojo accepted the job, and charged for it: `charged` (its `creditCost`) is kept
        as `provider_charged` with the same bounds as at completion (0 to the job's price, else
        the estimate), so the spend cap counts a job that never completes; completion's figure
        replaces it."""
        if isinstance(charged, bool) or not isinstance(charged, int) or not 0 <= charged < 2**62:
            charged = None
        settled = "CASE WHEN ? BETWEEN 0 AND num_outputs * ? THEN ? ELSE credits_reserved END"
        sql = f"""
            UPDATE jobs SET state = ?, api_job_id = ?, status_url = ?, api_expires_at = ?,
                submitted_at = ?, provider_charged = {settled}
            WHERE id = ?
            RETURNING {_COLUMNS}
        """
        params = (
            JobState.SUBMITTED.value,
            api_job_id,
            status_url,
            expires_at,
            self.clock(),
            charged,
            CREDITS_PER_OUTPUT,
            charged,
            job_id,
        )
        rows = await self.db.call(lambda conn: conn.execute(sql, params).fetchall())
        if not rows:
            raise LookupError(f"job {job_id} does not exist")
        return Job.from_row(rows[0])

    async def mark_completed(
        self,
        job_id: int,
        *,
        charged: int | None,
        polls: int | None = None,
        at: float | None = None,
    ) -> Job | None:
        """PixelDojo finished (at `at`, default now): settle the reservation against what it
        charged (`None`: the estimate stands). Returns None, and changes nothing, unless the job
        was SUBMITTED: only the caller that moved it to COMPLETED may deliver it.

        A charge PixelDojo reports is trusted only from 0 to the job's price (`num_outputs` ×
        `CREDITS_PER_OUTPUT`); anything else settles at the estimate, and is logged. The charge
        is also kept as `provider_charged`, which a later refund to the member leaves alone."""
        reported = charged
        if isinstance(charged, bool) or not isinstance(charged, int) or not 0 <= charged < 2**62:
            charged = None  # not even storable; the job is still delivered

        def complete(conn: sqlite3.Connection) -> Job | None:
            now = self.clock() if at is None else at
            settled = "CASE WHEN ? BETWEEN 0 AND num_outputs * ? THEN ? ELSE credits_reserved END"
            rows = conn.execute(
                f"""
                UPDATE jobs SET state = ?, credits_charged = {settled},
                    provider_charged = {settled}, completed_at = ?, polls = COALESCE(?, polls)
                WHERE id = ? AND state = ?
                RETURNING {_COLUMNS}
                """,
                (
                    JobState.COMPLETED.value,
                    *(charged, CREDITS_PER_OUTPUT, charged) * 2,
                    now,
                    polls,
                    job_id,
                    JobState.SUBMITTED.value,
                ),
            ).fetchall()  # all: a RETURNING statement left unfinished would block the COMMIT
            if not rows:
                _get(conn, job_id)  # LookupError if there is no such job
                return None  # not SUBMITTED any more: nothing to settle, nothing to deliver
            job = Job.from_row(rows[0])
            if reported is not None and job.credits_charged != reported:
                log.warning(
                    "job %d: PixelDojo reported a charge of %.40s, outside 0-%d for %d image(s); "
                    "settled at the estimate of %d",
                    job.id,
                    reported,
                    job.num_outputs * CREDITS_PER_OUTPUT,
                    job.num_outputs,
                    job.credits_charged,
                )
            ledger.append_for_job(
                conn,
                job_id,
                kind=LedgerKind.SETTLE,
                amount=(job.credits_charged or 0) - job.credits_reserved,
                now=now,
            )
            return job

        return await self.db.run(complete)

    async def mark_posted(self, job_id: int, *, result_message_id: int) -> Job | None:
        """The result was posted: COMPLETED becomes POSTED. Returns None, and changes nothing,
        if the job is not COMPLETED (e.g. another process failed and refunded it)."""

        def post(conn: sqlite3.Connection) -> Job | None:
            rows = conn.execute(
                f"""
                UPDATE jobs SET state = ?, result_message_id = ?, finished_at = ?
                WHERE id = ? AND state = ?
                RETURNING {_COLUMNS}
                """,
                (
                    JobState.POSTED.value,
                    result_message_id,
                    self.clock(),
                    job_id,
                    JobState.COMPLETED.value,
                ),
            ).fetchall()
            if not rows:
                _get(conn, job_id)  # LookupError if there is no such job
                return None
            return Job.from_row(rows[0])

        return await self.db.call(post)

    async def mark_failed(self, job_id: int, error: str, *, polls: int | None = None) -> Job:
        """The job ended without a result: refund whatever it holds, once. What PixelDojo
        charged (`provider_charged`) stays: the server spent it even though the member didn't."""
        final_states = (JobState.POSTED.value, JobState.FAILED.value)

        def fail(conn: sqlite3.Connection) -> Job:
            now = self.clock()
            ledger.refund_job(conn, job_id, note=error[:200], now=now, unless=final_states)
            rows = conn.execute(
                f"""
                UPDATE jobs SET state = ?, error = ?, credits_charged = 0, finished_at = ?,
                                polls = COALESCE(?, polls)
                WHERE id = ? AND state NOT IN (?, ?)
                RETURNING {_COLUMNS}
                """,
                (JobState.FAILED.value, error, now, polls or None, job_id, *final_states),
            ).fetchall()
            if not rows:
                return _get(conn, job_id)  # already ended: nothing moves
            return Job.from_row(rows[0])

        return await self.db.run(fail)

    async def _update(self, job_id: int, **fields: Any) -> Job:
        """One `UPDATE … RETURNING`: a single statement is atomic on its own."""
        assignments = ", ".join(f"{name} = ?" for name in fields)
        sql = f"UPDATE jobs SET {assignments} WHERE id = ? RETURNING {_COLUMNS}"
        params = (*fields.values(), job_id)
        rows = await self.db.call(lambda conn: conn.execute(sql, params).fetchall())
        if not rows:
            raise LookupError(f"job {job_id} does not exist")
        return Job.from_row(rows[0])


def _get(conn: sqlite3.Connection, job_id: int) -> Job:
    job = _get_or_none(conn, job_id)
    if job is None:
        raise LookupError(f"job {job_id} does not exist")
    return job


def _get_or_none(conn: sqlite3.Connection, job_id: int) -> Job | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return Job.from_row(row) if row is not None else None
