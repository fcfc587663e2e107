"""Bans: members barred from generating, for a while or until a moderator lifts it."""

from __future__ import annotations

from bot.credits.moderation._base import (
    InvalidSetting,
    ModerationBase,
    check_id,
    check_range,
    check_reason,
    duration,
)
from bot.credits.periods import discord_time
from bot.safe_text import escape_member_text
from bot.storage import SyncConnection, rules
from bot.storage.audit import AuditEntry
from bot.storage.rules import Ban

BAN_MIN_SECONDS = 60
BAN_MAX_SECONDS = 10 * 366 * 86_400


class BanActions(ModerationBase):
    """Banning and unbanning members, and the bans in force."""

    async def bans(self, guild_id: int) -> list[Ban]:
        """Bans in force now (expired ones are left out)."""

        def read(conn: SyncConnection) -> list[Ban]:
            return rules.bans_in_force(conn, guild_id, self.clock())

        return await self.db.call(read)

    async def ban(
        self,
        *,
        guild_id: int,
        actor_id: int,
        user_id: int,
        duration_seconds: int | None = None,
        reason: str | None = None,
    ) -> AuditEntry:
        """Bar a member from generating, for a while or (duration None) until unbanned."""
        check_id(user_id, "member")
        if duration_seconds is not None:
            check_range(
                duration_seconds, BAN_MIN_SECONDS, BAN_MAX_SECONDS, "A ban's length in seconds"
            )
        reason = check_reason(reason)

        def write(conn: SyncConnection) -> AuditEntry:
            now = self.clock()
            until = None if duration_seconds is None else now + duration_seconds
            rules.put_ban(
                conn, guild_id, user_id, until=until, reason=reason, actor_id=actor_id, now=now
            )
            length = (
                "permanently"
                if duration_seconds is None
                else f"for {duration(duration_seconds)} (until {discord_time(until or now, 'f')})"
            )
            because = f": {escape_member_text(reason)}" if reason else ""
            return self._audit(
                conn,
                guild_id,
                actor_id,
                "ban.add",
                user_id,
                {"user_id": user_id, "until": until, "reason": reason},
                f"banned <@{user_id}> from generating {length}{because}",
            )

        return await self.db.run(write)

    async def unban(self, *, guild_id: int, actor_id: int, user_id: int) -> AuditEntry:
        """Lift a member's generation ban."""

        def write(conn: SyncConnection) -> AuditEntry:
            if not rules.lift_ban(conn, guild_id, user_id, self.clock()):
                raise InvalidSetting(f"<@{user_id}> isn't banned from generating.")
            return self._audit(
                conn,
                guild_id,
                actor_id,
                "ban.remove",
                user_id,
                {"user_id": user_id},
                f"lifted <@{user_id}>'s generation ban",
            )

        return await self.db.run(write)
