"""Posts moderator notices in Discord (which channel and what text: `bot.credits.notices`)."""

from __future__ import annotations

import logging

import discord

from bot.credits.notices import NoticePoster

log = logging.getLogger(__name__)

MESSAGE_MAX_LENGTH = 2000


def log_channel_poster(client: discord.Client) -> NoticePoster:
    """A `NoticePoster` that sends through `client`, pinging nobody; a channel that cannot be
    posted in (deleted, the bot lost access, or Discord unreachable) is logged and skipped."""

    async def post(guild_id: int, channel_id: int, text: str) -> None:
        channel = client.get_partial_messageable(channel_id, guild_id=guild_id)
        try:
            await channel.send(
                text[:MESSAGE_MAX_LENGTH], allowed_mentions=discord.AllowedMentions.none()
            )
        except discord.HTTPException as exc:
            log.warning(
                "guild %d: could not post to log channel %d (%s)", guild_id, channel_id, exc
            )
        except Exception as exc:  # aiohttp.ClientError, OSError, …: a notice is best-effort
            log.warning(
                "guild %d: could not post to log channel %d (%s: %s)",
                guild_id,
                channel_id,
                type(exc).__name__,
                exc,
            )

    return post
