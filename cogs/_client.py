"""The bot behind an interaction, typed as `PixelDojoBot` rather than discord.py's `Client`."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import discord

if TYPE_CHECKING:
    from bot.app import PixelDojoBot


def bot_of(interaction: discord.Interaction) -> PixelDojoBot:
    """The bot that received `interaction`.

    discord.py's callbacks take `Interaction[ClientT]` with a per-method type variable, so no
    override can narrow it to this bot; every interaction this process sees is its own."""
    return cast("PixelDojoBot", interaction.client)
