"""The state a Discord test double serves, and its JSON renderings.

:class:`World` owns the guild specs, the stored messages, interactions and attachments, computes
permissions the way Discord does, and renders every object in the JSON shape discord.py parses.
It does no I/O; :class:`tests.doubles.discord_double.DiscordDouble` serves it over HTTP.
"""

from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from .discord_models import (
    DEFAULT_EVERYONE_PERMISSIONS,
    MIB,
    AttachmentRecord,
    ChannelSpec,
    GuildSpec,
    InteractionRecord,
    MemberSpec,
    MessageRecord,
    Perm,
    RoleSpec,
    SnowflakeFactory,
    snowflake_time,
)
from .discord_validation import unknown

INTERACTION_APPLICATION_COMMAND = 2
DM_PERMISSIONS = (
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.ATTACH_FILES
    | Perm.EMBED_LINKS
    | Perm.READ_MESSAGE_HISTORY
)


class World:
    """Guilds, users, channels and everything stored, plus Discord-shaped JSON for them."""

    def __init__(
        self,
        *,
        guilds: Iterable[GuildSpec],
        application_id: int,
        bot_user_id: int,
        bot_name: str,
        base_url: Callable[[], str],
    ) -> None:
        self.application_id = application_id
        self.bot_user_id = bot_user_id
        self.bot_name = bot_name
        self.snowflakes = SnowflakeFactory()
        self.guilds: dict[int, GuildSpec] = {}
        self.messages: dict[int, MessageRecord] = {}
        self.interactions: dict[int, InteractionRecord] = {}
        self.attachments: dict[int, AttachmentRecord] = {}
        self.dm_channels: dict[int, int] = {}  # channel id -> recipient user id
        self.joined_at = datetime.now(UTC) - timedelta(days=30)
        self._base_url = base_url
        for guild in guilds:
            self.add_guild(guild)

    # -- lookups ---------------------------------------------------------------------------------

    def add_guild(self, guild: GuildSpec) -> None:
        """Serve ``guild``, adding ``@everyone`` and the bot (with its managed role) if absent."""
        if guild.role(guild.id) is None:
            guild.roles.insert(
                0, RoleSpec(guild.id, "@everyone", DEFAULT_EVERYONE_PERMISSIONS, position=0)
            )
        if guild.member(self.bot_user_id) is None:
            role = RoleSpec(
                self.snowflakes.next(),
                self.bot_name,
                guild.bot_permissions,
                position=max((r.position for r in guild.roles), default=0) + 1,
                managed=True,
                bot_id=self.bot_user_id,
            )
            guild.roles.append(role)
            guild.members.append(MemberSpec(self.bot_user_id, self.bot_name, [role.id], bot=True))
        self.guilds[guild.id] = guild

    def guild(self, guild_id: int) -> GuildSpec:
        """The guild with ``guild_id`` (LookupError if unknown: a test mistake)."""
        try:
            return self.guilds[guild_id]
        except KeyError:
            raise LookupError(f"unknown guild {guild_id}") from None

    def channel(self, channel_id: int) -> tuple[GuildSpec | None, ChannelSpec]:
        """A guild or DM channel; an API 404 (Unknown Channel) if there is none."""
        for guild in self.guilds.values():
            channel = guild.channel(channel_id)
            if channel is not None:
                return guild, channel
        if channel_id in self.dm_channels:
            return None, ChannelSpec(channel_id, "", type=1)
        raise unknown("Channel", 10003)

    def guild_channel(self, guild: GuildSpec, channel_id: int) -> ChannelSpec:
        """A channel of ``guild`` (LookupError if it has none with that id)."""
        channel = guild.channel(channel_id)
        if channel is None:
            raise LookupError(f"unknown channel {channel_id} in guild {guild.id}")
        return channel

    def user(self, user_id: int) -> MemberSpec | None:
        """The bot or any member of any guild with ``user_id``."""
        if user_id == self.bot_user_id:
            return MemberSpec(self.bot_user_id, self.bot_name, bot=True)
        for guild in self.guilds.values():
            member = guild.member(user_id)
            if member is not None:
                return member
        return None

    def dm_channel_for(self, user_id: int) -> int:
        """The DM channel id with ``user_id``, created on first use."""
        for channel_id, recipient in self.dm_channels.items():
            if recipient == user_id:
                return channel_id
        channel_id = self.snowflakes.next()
        self.dm_channels[channel_id] = user_id
        return channel_id

    def filesize_limit(self, guild: GuildSpec | None) -> int:
        """Upload limit per file in a guild (10 MiB in DMs)."""
        return guild.filesize_limit if guild is not None else 10 * MIB

    def store_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None,
        description: str | None = None,
    ) -> AttachmentRecord:
        """Keep a file and give it a URL under the double."""
        attachment_id = self.snowflakes.next()
        quoted = urllib.parse.quote(filename)
        attachment = AttachmentRecord(
            id=attachment_id,
            filename=filename,
            data=data,
            content_type=content_type,
            description=description,
            url=f"{self._base_url()}/attachments/{channel_id}/{attachment_id}/{quoted}",
        )
        self.attachments[attachment_id] = attachment
        return attachment

    # -- permissions -----------------------------------------------------------------------------

    def base_permissions(self, guild: GuildSpec, user_id: int) -> int:
        """Guild-level permissions of a member (owner and ADMINISTRATOR get everything)."""
        if user_id == guild.owner_id:
            return Perm.ALL
        member = guild.member(user_id)
        everyone = guild.role(guild.id)
        permissions = everyone.permissions if everyone else 0
        for role_id in member.roles if member else []:
            role = guild.role(role_id)
            if role is not None:
                permissions |= role.permissions
        return Perm.ALL if permissions & Perm.ADMINISTRATOR else permissions

    def channel_permissions(self, guild: GuildSpec, channel: ChannelSpec, user_id: int) -> int:
        """A member's permissions in a channel: base permissions, then the @everyone, role and
        member overwrites, then Discord's implicit denials."""
        permissions = self.base_permissions(guild, user_id)
        if permissions & Perm.ADMINISTRATOR:
            return Perm.ALL
        member = guild.member(user_id)
        member_roles = {str(r) for r in (member.roles if member else [])}
        overwrites = {str(o["id"]): o for o in channel.permission_overwrites}

        def apply(entries: Iterable[dict[str, Any]]) -> None:
            nonlocal permissions
            allow = deny = 0
            for entry in entries:
                allow |= int(entry.get("allow", 0))
                deny |= int(entry.get("deny", 0))
            permissions = (permissions & ~deny) | allow

        apply([overwrites[str(guild.id)]] if str(guild.id) in overwrites else [])
        apply(o for k, o in overwrites.items() if k in member_roles and int(o.get("type", 0)) == 0)
        member_overwrite = overwrites.get(str(user_id))
        if member_overwrite is not None and int(member_overwrite.get("type", 1)) == 1:
            apply([member_overwrite])
        if not permissions & Perm.VIEW_CHANNEL:
            return 0
        if not permissions & Perm.SEND_MESSAGES:
            permissions &= ~(Perm.EMBED_LINKS | Perm.ATTACH_FILES | Perm.MENTION_EVERYONE)
        return permissions

    def bot_permissions(self, guild: GuildSpec | None, channel: ChannelSpec) -> int:
        """The bot's permissions in a channel (DMs allow the usual messaging permissions)."""
        if guild is None:
            return DM_PERMISSIONS
        return self.channel_permissions(guild, channel, self.bot_user_id)

    # -- JSON --------------------------------------------------------------------------------------

    def user_json(self, user_id: int) -> dict[str, Any]:
        """The user object for ``user_id``."""
        spec = self.user(user_id)
        name = spec.name if spec else f"user{user_id}"
        return {
            "id": str(user_id),
            "username": name,
            "global_name": None if spec is None or spec.bot else name,
            "discriminator": "0",
            "avatar": None,
            "bot": bool(spec and spec.bot),
            "system": False,
            "public_flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
        }

    def bot_user_json(self) -> dict[str, Any]:
        """The bot's own user object (``GET /users/@me``, READY)."""
        return {
            **self.user_json(self.bot_user_id),
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
            "email": None,
        }

    def member_json(self, guild: GuildSpec, member: MemberSpec) -> dict[str, Any]:
        """A guild member object (with ``user``)."""
        return {
            "user": self.user_json(member.id),
            "nick": member.nick,
            "avatar": None,
            "banner": None,
            "roles": [str(r) for r in member.roles if r != guild.id],
            "joined_at": self.joined_at.isoformat(),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }

    @staticmethod
    def role_json(role: RoleSpec) -> dict[str, Any]:
        """A role object."""
        data: dict[str, Any] = {
            "id": str(role.id),
            "name": role.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": role.position,
            "permissions": str(role.permissions),
            "managed": role.managed,
            "mentionable": False,
            "flags": 0,
        }
        if role.bot_id is not None:
            data["tags"] = {"bot_id": str(role.bot_id)}
        return data

    def channel_json(self, guild: GuildSpec | None, channel: ChannelSpec) -> dict[str, Any]:
        """A guild text channel or DM channel object."""
        last = max(
            (m.id for m in self.messages.values() if m.channel_id == channel.id), default=None
        )
        last_message_id = str(last) if last else None
        if guild is None:
            recipient = self.dm_channels.get(channel.id, 0)
            return {
                "id": str(channel.id),
                "type": 1,
                "last_message_id": last_message_id,
                "recipients": [self.user_json(recipient)],
                "flags": 0,
            }
        return {
            "id": str(channel.id),
            "type": channel.type,
            "guild_id": str(guild.id),
            "name": channel.name,
            "position": channel.position,
            "permission_overwrites": channel.permission_overwrites,
            "nsfw": False,
            "topic": channel.topic,
            "last_message_id": last_message_id,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }

    def guild_json(self, guild: GuildSpec) -> dict[str, Any]:
        """A guild object as ``GET /guilds/{id}`` returns it."""
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(guild.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [self.role_json(r) for r in guild.roles],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "max_members": 500000,
            "vanity_url_code": None,
            "premium_tier": guild.premium_tier,
            "premium_subscription_count": 0,
            "preferred_locale": guild.locale,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
        }

    def guild_create_json(self, guild: GuildSpec) -> dict[str, Any]:
        """The GUILD_CREATE dispatch: the guild with channels, every member and empty extras."""
        return {
            **self.guild_json(guild),
            "joined_at": self.joined_at.isoformat(),
            "large": False,
            "unavailable": False,
            "member_count": len(guild.members),
            "voice_states": [],
            "members": [self.member_json(guild, m) for m in guild.members],
            "channels": [self.channel_json(guild, c) for c in guild.channels],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    @staticmethod
    def attachment_json(attachment: AttachmentRecord) -> dict[str, Any]:
        """An attachment object."""
        data: dict[str, Any] = {
            "id": str(attachment.id),
            "filename": attachment.filename,
            "size": attachment.size,
            "url": attachment.url,
            "proxy_url": attachment.url,
            "content_type": attachment.content_type,
            "flags": 0,
        }
        if attachment.description is not None:
            data["description"] = attachment.description
        return data

    def message_json(self, message: MessageRecord, *, with_nonce: bool = False) -> dict[str, Any]:
        """The message object Discord would return for ``message``. Discord keeps a nonce only
        briefly: it is in the answer to the create request and in MESSAGE_CREATE
        (``with_nonce``), never in history or later fetches."""
        data: dict[str, Any] = {
            "id": str(message.id),
            "channel_id": str(message.channel_id),
            "author": self.user_json(message.author_id),
            "content": message.content or "",
            "timestamp": snowflake_time(message.id).isoformat(),
            "edited_timestamp": message.edited_timestamp,
            "tts": message.tts,
            "mention_everyone": message.mention_everyone,
            "mentions": [self.user_json(u) for u in message.mentions],
            "mention_roles": [str(r) for r in message.mention_roles],
            "attachments": [self.attachment_json(a) for a in message.attachments],
            "embeds": message.embeds,
            "components": message.components,
            "reactions": [
                {
                    "emoji": {"id": None, "name": emoji},
                    "count": 1,
                    "count_details": {"burst": 0, "normal": 1},
                    "me": True,
                    "me_burst": False,
                    "burst_colors": [],
                }
                for emoji in message.reactions
            ],
            "pinned": False,
            "type": message.type,
            "flags": message.flags,
        }
        if message.guild_id is not None:
            data["guild_id"] = str(message.guild_id)
        if with_nonce and message.nonce is not None:
            data["nonce"] = message.nonce
        if message.message_reference is not None:
            data["message_reference"] = message.message_reference
        if message.webhook:
            data["webhook_id"] = str(self.application_id)
            data["application_id"] = str(self.application_id)
        record = self.interactions.get(message.interaction_id or 0)
        if record is not None:
            data["interaction_metadata"] = self._interaction_metadata(record, message)
        return data

    def _interaction_metadata(
        self, record: InteractionRecord, message: MessageRecord
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "id": str(record.id),
            "type": record.type,
            "user": self.user_json(record.user_id),
            "authorizing_integration_owners": record.payload["authorizing_integration_owners"],
        }
        if record.type == INTERACTION_APPLICATION_COMMAND:
            metadata["name"] = record.payload["data"]["name"]
            metadata["command_type"] = record.payload["data"].get("type", 1)
        if record.original is not None and record.original is not message:
            metadata["original_response_message_id"] = str(record.original.id)
        if record.message_id is not None:
            metadata["interacted_message_id"] = str(record.message_id)
        return metadata

    def interaction_payload(
        self,
        kind: int,
        data: dict[str, Any],
        *,
        user_id: int,
        guild: GuildSpec,
        channel_id: int,
        locale: str,
    ) -> dict[str, Any]:
        """A complete INTERACTION_CREATE payload with a fresh id and token."""
        channel = self.guild_channel(guild, channel_id)
        member = guild.member(user_id)
        if member is None:
            raise LookupError(f"user {user_id} is not a member of guild {guild.id}")
        permissions = str(self.channel_permissions(guild, channel, user_id))
        return {
            "id": str(self.snowflakes.next()),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": guild.locale, "features": []},
            "channel_id": str(channel_id),
            "channel": {**self.channel_json(guild, channel), "permissions": permissions},
            "member": {**self.member_json(guild, member), "permissions": permissions},
            "token": "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96),
            "version": 1,
            "app_permissions": str(self.bot_permissions(guild, channel)),
            "locale": locale,
            "guild_locale": guild.locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": guild.filesize_limit,
        }

    # -- `resolved` entries for interactions ------------------------------------------------------

    def resolve_user(
        self, guild: GuildSpec, channel_id: int, user_id: int, resolved: dict[str, Any]
    ) -> None:
        """Add a user (and, if a member, the member with channel permissions) to ``resolved``."""
        if self.user(user_id) is None:
            raise ValueError(f"unknown user {user_id}")
        resolved.setdefault("users", {})[str(user_id)] = self.user_json(user_id)
        member = guild.member(user_id)
        channel = guild.channel(channel_id)
        if member is not None and channel is not None:
            data = self.member_json(guild, member)
            data.pop("user")
            data["permissions"] = str(self.channel_permissions(guild, channel, user_id))
            resolved.setdefault("members", {})[str(user_id)] = data

    def resolve_role(self, guild: GuildSpec, role_id: int, resolved: dict[str, Any]) -> None:
        """Add a role to ``resolved``."""
        role = guild.role(role_id)
        if role is None:
            raise ValueError(f"unknown role {role_id} in guild {guild.id}")
        resolved.setdefault("roles", {})[str(role_id)] = self.role_json(role)

    def resolve_channel(
        self, guild: GuildSpec, channel_id: int, resolved: dict[str, Any]
    ) -> ChannelSpec:
        """Add a (partial) channel to ``resolved``."""
        channel = guild.channel(channel_id)
        if channel is None:
            raise ValueError(f"unknown channel {channel_id} in guild {guild.id}")
        resolved.setdefault("channels", {})[str(channel_id)] = {
            "id": str(channel.id),
            "name": channel.name,
            "type": channel.type,
            "permissions": str(self.bot_permissions(guild, channel)),
            "parent_id": None,
            "flags": 0,
        }
        return channel

    def resolve_attachment(
        self, channel_id: int, value: tuple[str, bytes, str], resolved: dict[str, Any]
    ) -> AttachmentRecord:
        """Store a user's upload ``(filename, data, content_type)`` and add it to ``resolved``."""
        filename, data, content_type = value
        attachment = self.store_attachment(channel_id, filename, data, content_type)
        resolved.setdefault("attachments", {})[str(attachment.id)] = {
            **self.attachment_json(attachment),
            "ephemeral": True,
        }
        return attachment
