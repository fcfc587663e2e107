"""What the bot reads off the member behind an interaction: their roles and moderator rights."""

from __future__ import annotations

import discord

from bot.credits.moderation import ModerationService


def role_ids_of(user: discord.abc.User) -> tuple[int, ...]:
    """The role ids of a guild member (none for a plain user), for limits and permissions."""
    return tuple(role.id for role in getattr(user, "roles", ()))


async def can_moderate(moderation: ModerationService, interaction: discord.Interaction) -> bool:
    """Manage Server, or the guild's configured moderator role."""
    member = interaction.user
    if interaction.guild_id is None or not isinstance(member, discord.Member):
        return False
    return await moderation.is_moderator(
        interaction.guild_id,
        role_ids_of(member),
        member.guild_permissions.manage_guild,
    )
