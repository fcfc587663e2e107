"""What a guild's moderators are told in their log channel, and when.

Generations (audited here as they end), moderator actions and admission notices such as the
spend cap nearing. This module decides which channel and what text; posting it is the
`NoticePoster`'s job (`bot.discord_ui.moderator_log` for Discord).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.credits.moderation import ModerationService
from bot.generation.models import Job, JobState
from bot.storage.audit import AuditEntry

log = logging.getLogger(__name__)

NoticePoster = Callable[[int, int, str], Awaitable[None]]
"""Posts a text to channel `channel_id` of guild `guild_id` (in that order); logs, never raises,
when the channel cannot be posted in."""


class ModeratorNotices:
    """Tells a guild's log channel what happened, if the guild configured one.

    Notices are best-effort: they follow an action that is already committed, so a notice that
    cannot be sent is logged and never fails (or "retries") the action it reports.
    """

    def __init__(self, moderation: ModerationService, post: NoticePoster | None = None) -> None:
        self.moderation = moderation
        self.post = post
        """None (the command line): notices are only logged and audited, never posted."""

    async def notify(self, guild_id: int, text: str) -> None:
        """Post to the guild's moderator log channel, if one is configured. Never raises."""
        if self.post is None:
            return
        try:
            settings = await self.moderation.get_settings(guild_id)
            if settings.log_channel_id is not None:
                await self.post(guild_id, settings.log_channel_id, text)
        except Exception:
            log.exception("guild %d: could not tell the moderators", guild_id)

    async def generation_finished(self, job: Job) -> None:
        """Every generation ends in the audit table and, if configured, the log channel."""
        posted = job.state is JobState.POSTED
        entry = await self.moderation.record_generation(
            guild_id=job.guild_id,
            user_id=job.user_id,
            job_id=job.id,
            outcome="posted" if posted else "failed",
            credits=(job.credits_charged or 0) if posted else 0,
        )
        await self.notify(
            job.guild_id, f"{'🎨' if posted else '⚠️'} <@{job.user_id}> {entry.summary}"
        )

    async def moderator_action(self, entry: AuditEntry) -> None:
        """Every moderator action is in the audit table already; also tell the log channel.
        Never raises."""
        log.info("guild %d: moderator %d: %s", entry.guild_id, entry.actor_id or 0, entry.summary)
        await self.notify(entry.guild_id, _action_text(entry))

    async def farewell(self, entry: AuditEntry, channel_id: int) -> None:
        """Tell a log channel that was just turned off (`entry`) so, one last time. Never
        raises."""
        if self.post is None:
            return
        try:
            await self.post(entry.guild_id, channel_id, _action_text(entry))
        except Exception:
            log.exception("guild %d: could not tell the moderators", entry.guild_id)


def _action_text(entry: AuditEntry) -> str:
    return f"🛡️ <@{entry.actor_id}> {entry.summary}"
