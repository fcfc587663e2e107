"""What happened in a guild: the audit log, the usage report, generations' audit entries."""

from __future__ import annotations

from bot.credits.moderation._base import ModerationBase, plural
from bot.credits.report import UsageReport, build_usage_report
from bot.storage import SyncConnection, audit, guild_settings
from bot.storage.audit import AuditEntry

AUDIT_PAGE_MAX = 100


class ActivityRecords(ModerationBase):
    """Reading the audit log and the usage report; auditing generations and deleted results."""

    async def audit_entries(
        self, guild_id: int, limit: int = 20, before_id: int | None = None
    ) -> list[AuditEntry]:
        """Newest first; pass the last entry's id as `before_id` for the next page."""
        limit = max(1, min(limit, AUDIT_PAGE_MAX))

        def read(conn: SyncConnection) -> list[AuditEntry]:
            return audit.entries(conn, guild_id, limit, before_id)

        return await self.db.call(read)

    async def usage_report(
        self, guild_id: int, period_start: float | None = None, top: int = 10
    ) -> UsageReport:
        """Who used what in a period (the current one unless `period_start` is given)."""
        now = self.clock()
        return await self.db.call(
            lambda conn: build_usage_report(
                conn, guild_settings.load(conn, guild_id), now=now, start=period_start, top=top
            )
        )

    async def record_generation(
        self, *, guild_id: int, user_id: int, job_id: int, outcome: str, credits: int
    ) -> AuditEntry:
        """Audit one generation's end (`outcome` e.g. "posted" or "failed")."""

        def write(conn: SyncConnection) -> AuditEntry:
            return self._audit(
                conn,
                guild_id,
                user_id,
                f"generation.{outcome}",
                job_id,
                {"job_id": job_id, "user_id": user_id, "outcome": outcome, "credits": credits},
                f"ran generation #{job_id}: {outcome}, {plural(credits, 'credit')}",
            )

        return await self.db.run(write)

    async def record_cancel(
        self, *, guild_id: int, actor_id: int, job_id: int, author_id: int
    ) -> AuditEntry:
        """Audit a moderator cancelling another member's queued prompt."""
        return await self._record_on_job(
            guild_id,
            actor_id,
            job_id,
            author_id,
            "job.cancelled",
            f"cancelled <@{author_id}>'s queued generation #{job_id}",
        )

    async def record_result_deletion(
        self, *, guild_id: int, actor_id: int, job_id: int, author_id: int
    ) -> AuditEntry:
        """Audit a moderator deleting another member's result."""
        return await self._record_on_job(
            guild_id,
            actor_id,
            job_id,
            author_id,
            "result.deleted",
            f"deleted <@{author_id}>'s result of generation #{job_id}",
        )

    async def _record_on_job(
        self, guild_id: int, actor_id: int, job_id: int, author_id: int, action: str, summary: str
    ) -> AuditEntry:
        """Audit a moderator acting on another member's job, in one trip to the database."""

        def write(conn: SyncConnection) -> AuditEntry:
            return self._audit(
                conn,
                guild_id,
                actor_id,
                action,
                job_id,
                {"job_id": job_id, "author_id": author_id},
                summary,
            )

        return await self.db.run(write)
