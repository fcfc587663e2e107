"""The guild's single-value settings: member limits, spend cap, moderator role, log channel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.credits.moderation._base import (
    ModerationBase,
    check_id,
    check_range,
    duration,
    per_period,
    plural,
)
from bot.generation.models import MAX_OUTPUTS
from bot.storage import SyncConnection, guild_settings
from bot.storage.audit import AuditEntry
from bot.storage.guild_settings import GuildSettings

MAX_CONCURRENT_MAX = 10
MAX_QUEUED_MAX = 50
COOLDOWN_MAX = 86_400
SPEND_CAP_MAX = 10_000_000


class SettingActions(ModerationBase):
    """Setting and reading the guild's limits, spend cap, moderator role and log channel."""

    async def is_moderator(
        self, guild_id: int, role_ids: Sequence[int], has_manage_guild: bool
    ) -> bool:
        """Manage Server, or the guild's configured moderator role."""
        if has_manage_guild:
            return True
        settings = await self.get_settings(guild_id)
        return settings.moderator_role_id is not None and settings.moderator_role_id in role_ids

    async def get_settings(self, guild_id: int) -> GuildSettings:
        """The guild's rules (defaults when none were changed)."""
        return await self.limits.settings(guild_id)

    async def set_max_concurrent(self, *, guild_id: int, actor_id: int, value: int) -> AuditEntry:
        """How many generations one member may have running at once."""
        check_range(value, 1, MAX_CONCURRENT_MAX, "The number of generations at once")
        return await self._set(
            guild_id,
            actor_id,
            "max_concurrent",
            value,
            f"set the limit to {plural(value, 'generation')} at a time per member",
        )

    async def set_max_queued(self, *, guild_id: int, actor_id: int, value: int) -> AuditEntry:
        """How many prompts one member may have waiting beyond those running."""
        check_range(value, 1, MAX_QUEUED_MAX, "The number of waiting prompts")
        return await self._set(
            guild_id,
            actor_id,
            "max_queued",
            value,
            f"set the limit to {plural(value, 'waiting prompt')} per member",
        )

    async def set_cooldown(self, *, guild_id: int, actor_id: int, seconds: int) -> AuditEntry:
        """Seconds a member waits between starting generations (0 = no cooldown)."""
        check_range(seconds, 0, COOLDOWN_MAX, "The cooldown in seconds")
        summary = (
            "turned off the cooldown between generations"
            if seconds == 0
            else f"set the cooldown between a member's generations to {duration(seconds)}"
        )
        return await self._set(guild_id, actor_id, "cooldown_seconds", seconds, summary)

    async def set_max_outputs(self, *, guild_id: int, actor_id: int, value: int) -> AuditEntry:
        """Most images one request may ask for (1-4)."""
        check_range(value, 1, MAX_OUTPUTS, "The number of images per request")
        return await self._set(
            guild_id,
            actor_id,
            "max_outputs",
            value,
            f"set the most images per request to {value}",
        )

    async def set_spend_cap(self, *, guild_id: int, actor_id: int, cap: int | None) -> AuditEntry:
        """Credits the whole server may spend per period (None = no cap)."""
        if cap is not None:
            check_range(cap, 1, SPEND_CAP_MAX, "The spend cap")
        settings = await self.limits.settings(guild_id)
        summary = (
            "removed the server spend cap"
            if cap is None
            else f"set the server spend cap to {per_period(cap, settings)}"
        )
        # A new cap deserves fresh 80% / 100% notices this period.
        return await self._set(
            guild_id,
            actor_id,
            "spend_cap",
            cap,
            summary,
            cap_warned_period=None,
            cap_paused_period=None,
        )

    async def set_moderator_role(
        self, *, guild_id: int, actor_id: int, role_id: int | None
    ) -> AuditEntry:
        """The role whose members may moderate, besides Manage Server (None = none)."""
        if role_id is not None:
            check_id(role_id, "role")
        summary = (
            "removed the moderator role"
            if role_id is None
            else f"set the moderator role to <@&{role_id}>"
        )
        return await self._set(guild_id, actor_id, "moderator_role_id", role_id, summary)

    async def set_log_channel(
        self, *, guild_id: int, actor_id: int, channel_id: int | None
    ) -> AuditEntry:
        """Where the audit log and spend-cap notices are posted (None = nowhere)."""
        if channel_id is not None:
            check_id(channel_id, "channel")
        summary = (
            "turned off the moderation log channel"
            if channel_id is None
            else f"set the moderation log channel to <#{channel_id}>"
        )
        return await self._set(guild_id, actor_id, "log_channel_id", channel_id, summary)

    async def _set(
        self,
        guild_id: int,
        actor_id: int,
        column: str,
        value: Any,
        summary: str,
        **also: Any,
    ) -> AuditEntry:
        """Set one guild setting (and `also` others, unaudited), auditing the old value."""

        def write(conn: SyncConnection) -> AuditEntry:
            settings = guild_settings.load(conn, guild_id)
            guild_settings.save(conn, guild_id, **{column: value}, **also)
            return self._audit(
                conn,
                guild_id,
                actor_id,
                f"settings.{column}",
                None,
                {column: value, "previous": getattr(settings, column)},
                summary,
            )

        return await self.db.run(write)
