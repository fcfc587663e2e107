"""The credit services wired to a file-backed database and a clock the test moves by hand."""

from __future__ import annotations

from bot.credits.admission import Limits
from bot.credits.moderation import ModerationService
from bot.generation.models import GenerationRequest, Job
from bot.storage import Database, guild_settings
from bot.storage.jobs import JobStore

GUILD = 1000
OTHER_GUILD = 2000
MOD = 1
MEMBER = 42
CHANNEL = 500


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ServiceEnv:
    """JobStore, Limits and ModerationService sharing one database and one clock."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.store = JobStore(db, clock)
        self.limits = Limits(db, clock)
        self.mod = ModerationService(db, self.limits, clock)
        self.notices: dict[int, tuple[str, ...]] = {}
        """Each admitted job's notices for the log channel, as the cog gets them."""

    async def reserve(
        self,
        prompt: str = "a lighthouse at dusk",
        *,
        user: int = MEMBER,
        guild: int = GUILD,
        channel: int = CHANNEL,
        outputs: int = 1,
        roles: tuple[int, ...] = (),
    ) -> Job:
        """Admit and reserve a job as `/imagine` would."""
        request = GenerationRequest(
            guild_id=guild,
            channel_id=channel,
            user_id=user,
            prompt=prompt,
            aspect_ratio="1:1",
            num_outputs=outputs,
            role_ids=roles,
        )
        job, admission = await self.store.create_admitted(request, self.limits.admit)
        self.notices[job.id] = admission.notices
        return job

    async def finish(self, job: Job, charged: int | None = None) -> Job:
        """Take a reserved job through submission, completion and posting."""
        await self.store.mark_submitted(
            job.id, api_job_id=f"a{job.id}", status_url="u", expires_at=None
        )
        await self.store.mark_completed(job.id, charged=charged)
        return await self.store.mark_posted(job.id, result_message_id=job.id)

    async def settings(self, guild: int = GUILD, **values: object) -> None:
        """Write settings directly, bypassing the moderators' validation ranges."""
        await self.db.run(lambda conn: guild_settings.save(conn, guild, **values))

    async def audit_count(self, guild: int = GUILD) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM audit_log WHERE guild_id = ?", (guild,))
        return int(row[0])
