"""`/credits`: what a member has used and has left."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_ui import embeds
from bot.discord_ui.members import role_ids_of

if TYPE_CHECKING:
    from bot.app import PixelDojoBot


class Credits(commands.Cog):
    """Credit balance commands."""

    def __init__(self, bot: PixelDojoBot) -> None:
        self.bot = bot

    @app_commands.command(name="credits", description="See your image credits and recent jobs")
    @app_commands.guild_only()
    async def credits(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        member = interaction.user
        balance, recent = await self.bot.services.credit_summaries.for_member(
            interaction.guild_id or 0, member.id, role_ids_of(member)
        )
        await interaction.followup.send(
            embed=embeds.credits(balance, recent),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )


async def setup(bot: PixelDojoBot) -> None:
    await bot.add_cog(Credits(bot))
