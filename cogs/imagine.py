"""`/imagine`: parse the interaction and hand it to the generation service."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_ui.errors import set_failure_note
from bot.generation.edit_input import (
    encode_input_image,
    image_option_description,
    validate_input_image,
)
from bot.generation.models import MAX_OUTPUTS, PROMPT_MAX_LENGTH, SEED_MAX, GenerationRequest
from bot.generation.service import NOTHING_CHARGED
from bot.pixeldojo.models import ASPECT_RATIOS
from cogs._launch import build_request, launch

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
        image="An image for Kontext to edit",
    )
    @app_commands.choices(aspect_ratio=RATIO_CHOICES)
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX_LENGTH],
        aspect_ratio: app_commands.Choice[str] | None = None,
        num_outputs: app_commands.Range[int, 1, MAX_OUTPUTS] = 1,
        seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
        image: discord.Attachment | None = None,
    ) -> None:
        set_failure_note(interaction, NOTHING_CHARGED)

        async def prepare() -> GenerationRequest:
            input_image = await self._input_image(image) if image is not None else None
            return build_request(
                interaction,
                prompt=prompt,
                aspect_ratio=aspect_ratio.value if aspect_ratio else "1:1",
                num_outputs=num_outputs,
                seed=seed,
                input_image_url=input_image,
            )

        # Not deferred: admission is decided first, so a refusal stays private and the job's
        # status is this interaction's own public response.
        await launch(self.bot, interaction, prepare)

    async def _input_image(self, image: discord.Attachment) -> str:
        """Check the attachment is what the model's image field takes; return its URL, which is
        all the job stores (inline images are read again from it at submit)."""
        capabilities = await self.bot.services.capabilities.get()
        validate_input_image(
            filename=image.filename,
            content_type=image.content_type,
            size=image.size,
            capabilities=capabilities,
        )
        # Inline models: read the bytes now too, so a file that isn't an image is refused up
        # front instead of after its status message is posted.
        data = await image.read() if capabilities.needs_image_bytes else None
        encode_input_image(capabilities, url=image.url, data=data, content_type=image.content_type)
        return image.url

    async def cog_load(self) -> None:
        # The option's description says what this API allows (or that editing is off). discord.py
        # has no public setter for a parameter description, hence the private `_params`.
        description = image_option_description(self.bot.services.capabilities.capabilities)
        self.imagine._params["image"].description = description


async def setup(bot: PixelDojoBot) -> None:
    await bot.add_cog(Imagine(bot))
