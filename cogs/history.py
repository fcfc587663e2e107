"""`/history`: a member's recent generations, with links to the results."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_ui import embeds
from bot.discord_ui.members import can_moderate

if TYPE_CHECKING:
    from bot.app import PixelDojoBot

HISTORY_LENGTH = 15


class History(commands.Cog):
    """Generation history."""

    def __init__(self, bot: PixelDojoBot) -> None:
        self.bot = bot

    @app_commands.command(name="history", description="Your recent generations")
    @app_commands.guild_only()
    @app_commands.describe(member="Whose history (moderators only)")
    async def history(
        self, interaction: discord.Interaction, member: discord.Member | None = None
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        target = member or interaction.user
        services = self.bot.services
        if target.id != interaction.user.id and not await can_moderate(
            services.moderation, interaction
        ):
            await interaction.followup.send(
                "Only moderators can see other members' history.", ephemeral=True
            )
            return
        jobs = await services.generation.recent_jobs(
            interaction.guild_id or 0, target.id, limit=HISTORY_LENGTH
        )
        await interaction.followup.send(
            embed=embeds.history(target.id, jobs),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )


async def setup(bot: PixelDojoBot) -> None:
    await bot.add_cog(History(bot))
