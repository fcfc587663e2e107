"""What the bot reads off the member behind an interaction: their roles and moderator rights."""

from __future__ import annotations

import discord


def role_ids_of(user: discord.abc.User) -> tuple[int, ...]:
    """The role ids of a guild member (none for a plain user), for limits and permissions."""
    return tuple(role.id for role in getattr(user, "roles", ()))
