"""Allowed channels: where generation is limited to (none means every channel)."""

from __future__ import annotations

from bot.credits.moderation._base import InvalidSetting, ModerationBase, check_id
from bot.storage import SyncConnection, rules
from bot.storage.audit import AuditEntry


class ChannelActions(ModerationBase):
    """Allowing and disallowing channels, and the channels allowed."""

    async def allowed_channels(self, guild_id: int) -> list[int]:
        """Channels generation is limited to; empty means everywhere."""
        return await self.db.call(lambda conn: rules.allowed_channels(conn, guild_id))

    async def allow_channel(self, *, guild_id: int, actor_id: int, channel_id: int) -> AuditEntry:
        """Add a channel to those generation is limited to (the first one turns the limit on)."""
        check_id(channel_id, "channel")

        def write(conn: SyncConnection) -> AuditEntry:
            if not rules.allow_channel(conn, guild_id, channel_id):
                raise InvalidSetting(f"<#{channel_id}> is already an allowed channel.")
            return self._audit(
                conn,
                guild_id,
                actor_id,
                "channel.allow",
                channel_id,
                {"channel_id": channel_id},
                f"allowed generating images in <#{channel_id}>",
            )

        return await self.db.run(write)

    async def disallow_channel(
        self, *, guild_id: int, actor_id: int, channel_id: int
    ) -> AuditEntry:
        """Remove a channel from the allowed ones (none left means every channel is allowed)."""

        def write(conn: SyncConnection) -> AuditEntry:
            if not rules.disallow_channel(conn, guild_id, channel_id):
                raise InvalidSetting(f"<#{channel_id}> isn't one of the allowed channels.")
            left = rules.count_allowed_channels(conn, guild_id)
            tail = "" if left else "; images can now be generated in any channel"
            return self._audit(
                conn,
                guild_id,
                actor_id,
                "channel.disallow",
                channel_id,
                {"channel_id": channel_id, "remaining": left},
                f"removed <#{channel_id}> from the allowed channels{tail}",
            )

        return await self.db.run(write)

    async def clear_channel_rules(self, *, guild_id: int, actor_id: int) -> AuditEntry:
        """Allow generation in every channel again."""

        def write(conn: SyncConnection) -> AuditEntry:
            removed = rules.clear_allowed_channels(conn, guild_id)
            if removed == 0:
                raise InvalidSetting("There are no channel rules; every channel is allowed.")
            return self._audit(
                conn,
                guild_id,
                actor_id,
                "channel.clear",
                None,
                {"removed": removed},
                "cleared the channel rules; images can be generated in any channel",
            )

        return await self.db.run(write)
