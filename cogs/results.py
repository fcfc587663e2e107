"""Buttons on result messages: Reroll, Vary, Show prompt, Delete.

They are `DynamicItem`s: the job id lives in the custom id and everything else comes from
SQLite, so the buttons keep working after a restart without re-registering any view.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot import embeds
from bot.errors import RequestRefused
from bot.generation import NOTHING_CHARGED
from bot.interaction_errors import (
    reply_privately,
    report_failure,
    reporting_failures,
    set_failure_note,
)
from bot.jobs import PROMPT_MAX_LENGTH, Job
from cogs.launching import NO_MENTIONS, build_request, launch

if TYPE_CHECKING:
    from bot.app import PixelDojoBot

log = logging.getLogger(__name__)


async def _load_job(interaction: discord.Interaction, job_id: int) -> Job | None:
    bot: PixelDojoBot = interaction.client  # type: ignore[assignment]
    job = await bot.store.get(job_id)
    if job is None or job.guild_id != interaction.guild_id:
        await reply_privately(interaction, "That job is no longer in my records.")
        return None
    return job


ACTIONS: dict[str, tuple[str, str, discord.ButtonStyle]] = {
    "reroll": ("Reroll", "🎲", discord.ButtonStyle.primary),
    "vary": ("Vary", "✏️", discord.ButtonStyle.secondary),
    "info": ("Prompt", "📝", discord.ButtonStyle.secondary),
    "delete": ("Delete", "🗑️", discord.ButtonStyle.danger),
}
"""Result button actions: label, emoji, style."""


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"pdj:(?P<action>[a-z]+):(?P<job_id>[0-9]+)",
):
    """A result button. The action and the job id are parsed back out of the custom id."""

    def __init__(self, action: str, job_id: int) -> None:
        label, emoji, style = ACTIONS[action]
        super().__init__(
            discord.ui.Button(
                label=label, emoji=emoji, style=style, custom_id=f"pdj:{action}:{job_id}"
            )
        )
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> JobButton:
        action = match["action"]
        if action not in ACTIONS:
            raise ValueError(f"unknown result action {action!r}")
        return cls(action, int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        # discord.py only logs what a DynamicItem callback raises: answer the member instead.
        async with reporting_failures(interaction):
            await self._act(interaction)

    async def _act(self, interaction: discord.Interaction) -> None:
        if self.action == "reroll":
            set_failure_note(interaction, NOTHING_CHARGED)
        job = await _load_job(interaction, self.job_id)
        if job is None:
            return
        bot: PixelDojoBot = interaction.client  # type: ignore[assignment]
        if self.action == "reroll":
            await interaction.response.defer(ephemeral=True, thinking=True)
            await _generate(bot, interaction, job, prompt=job.prompt, seed=None)
        elif self.action == "vary":
            await interaction.response.send_modal(VaryModal(job))
        elif self.action == "info":
            await interaction.response.send_message(
                embed=embeds.job_details(job), ephemeral=True, allowed_mentions=NO_MENTIONS
            )
        elif self.action == "delete":
            await _delete(bot, interaction, job)


async def _generate(
    bot: PixelDojoBot, interaction: discord.Interaction, job: Job, *, prompt: str, seed: int | None
) -> None:
    try:
        request = build_request(
            interaction,
            prompt=prompt,
            aspect_ratio=job.aspect_ratio,
            num_outputs=job.num_outputs,
            seed=seed,
            parent_job_id=job.id,
            input_image_url=job.input_image_url,
        )
    except RequestRefused as refusal:
        await interaction.followup.send(str(refusal), ephemeral=True, allowed_mentions=NO_MENTIONS)
        return
    await launch(bot, interaction, request)


async def _delete(bot: PixelDojoBot, interaction: discord.Interaction, job: Job) -> None:
    is_author = interaction.user.id == job.user_id
    if not is_author and not await bot.can_moderate(interaction):
        log.info("job %d: user %d may not delete this result", job.id, interaction.user.id)
        await interaction.response.send_message(
            "Only the person who asked for these images or a moderator can delete them.",
            ephemeral=True,
        )
        return
    await interaction.response.defer(ephemeral=True)
    if interaction.message is not None:
        await interaction.message.delete()
    log.info("job %d: result deleted by user %d", job.id, interaction.user.id)
    if not is_author:  # a moderator action: audited and announced like the others
        entry = await bot.moderation.record_result_deletion(
            guild_id=job.guild_id,
            actor_id=interaction.user.id,
            job_id=job.id,
            author_id=job.user_id,
        )
        await bot.log_moderator_action(entry)
    await interaction.followup.send("Deleted.", ephemeral=True)


class VaryModal(discord.ui.Modal, title="Vary this image"):
    """Asks for a tweaked prompt; the variation keeps the original seed."""

    def __init__(self, job: Job) -> None:
        super().__init__(timeout=600)
        self.job = job
        self.prompt: discord.ui.TextInput[VaryModal] = discord.ui.TextInput(
            label="Prompt",
            style=discord.TextStyle.paragraph,
            default=job.prompt[:PROMPT_MAX_LENGTH],
            max_length=PROMPT_MAX_LENGTH,
        )
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        set_failure_note(interaction, NOTHING_CHARGED)
        await interaction.response.defer(ephemeral=True, thinking=True)
        bot: PixelDojoBot = interaction.client  # type: ignore[assignment]
        await _generate(bot, interaction, self.job, prompt=self.prompt.value, seed=self.job.seed)

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await report_failure(interaction, error)


def result_view(job: Job) -> discord.ui.View:
    """The buttons attached to a job's result message."""
    view = discord.ui.View(timeout=None)
    for action in ACTIONS:
        view.add_item(JobButton(action, job.id))
    return view


class Results(commands.Cog):
    """Registers the result buttons so they work on every result message, old ones included."""

    def __init__(self, bot: PixelDojoBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(JobButton)
        self.bot.presenter.view_factory = result_view

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(JobButton)
        self.bot.presenter.view_factory = None


async def setup(bot: PixelDojoBot) -> None:
    await bot.add_cog(Results(bot))
