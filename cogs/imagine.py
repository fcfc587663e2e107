"""`/imagine`: parse the interaction and hand it to the generation service."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import RequestRefused
from bot.jobs import MAX_OUTPUTS, PROMPT_MAX_LENGTH, SEED_MAX
from bot.pixeldojo import ASPECT_RATIOS
from cogs.launching import NO_MENTIONS, build_request, launch

if TYPE_CHECKING:
    from bot.app import PixelDojoBot

RATIO_CHOICES = [app_commands.Choice(name=ratio, value=ratio) for ratio in ASPECT_RATIOS]


class Imagine(commands.Cog):
    """Image generation commands."""

    def __init__(self, bot: PixelDojoBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Generate images with Flux Kontext Pro")
    @app_commands.guild_only()
    @app_commands.describe(
        prompt="What to generate",
        aspect_ratio="Shape of the image (default 1:1)",
        num_outputs=f"How many images (1-{MAX_OUTPUTS}, 1 credit each)",
        seed="Fix the seed to reproduce a result",
    )
    @app_commands.choices(aspect_ratio=RATIO_CHOICES)
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX_LENGTH],
        aspect_ratio: app_commands.Choice[str] | None = None,
        num_outputs: app_commands.Range[int, 1, MAX_OUTPUTS] = 1,
        seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
    ) -> None:
        # Acknowledge first: everything after this may take longer than Discord's 3 s.
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            request = build_request(
                interaction,
                prompt=prompt,
                aspect_ratio=aspect_ratio.value if aspect_ratio else "1:1",
                num_outputs=num_outputs,
                seed=seed,
            )
        except RequestRefused as refusal:
            await interaction.followup.send(
                str(refusal), ephemeral=True, allowed_mentions=NO_MENTIONS
            )
            return
        await launch(self.bot, interaction, request)


async def setup(bot: PixelDojoBot) -> None:
    await bot.add_cog(Imagine(bot))
