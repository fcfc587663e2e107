"""The Cancel button on a queued job's status message.

A `DynamicItem` like the result buttons (`cogs.results`): the job id lives in the custom id,
so the button works after a restart. Not an extension: `PixelDojoBot.setup_hook` registers
`CancelButton` and hands `queued_view` to the presenter.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord

from bot.discord_ui.errors import reporting_failures
from bot.discord_ui.members import can_moderate
from cogs._client import bot_of
from cogs._launch import NO_MENTIONS
from cogs.results import _load_job

if TYPE_CHECKING:
    from bot.generation.models import Job

log = logging.getLogger(__name__)

ALREADY_STARTED = (
    "Job #{job_id} has already started, and PixelDojo can't stop a job once it is running. "
    "You are only charged if it posts images."
)


class CancelButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"pdj:cancel:(?P<job_id>[0-9]+)",
):
    """Cancels a job that is still waiting for its turn, refunding it at once."""

    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel",
                emoji="✖️",
                style=discord.ButtonStyle.secondary,
                custom_id=f"pdj:cancel:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> CancelButton:
        return cls(int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        async with reporting_failures(interaction):
            await self._cancel(interaction)

    async def _cancel(self, interaction: discord.Interaction) -> None:
        job = await _load_job(interaction, self.job_id)
        if job is None:
            return
        bot = bot_of(interaction)
        services = bot.services
        is_author = interaction.user.id == job.user_id
        if not is_author and not await can_moderate(services.moderation, interaction):
            await interaction.response.send_message(
                "Only the person who asked for this or a moderator can cancel it.", ephemeral=True
            )
            return
        await interaction.response.defer(ephemeral=True)
        cancelled = await services.generation.cancel(job.id, by_moderator=not is_author)
        if cancelled is None:
            current = await services.generation.job(job.id)
            text = (
                f"Job #{job.id} has already ended."
                if current is not None and current.state.is_final
                else ALREADY_STARTED.format(job_id=job.id)
            )
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        log.info("job %d: cancelled by user %d", job.id, interaction.user.id)
        await bot.presenter.show_cancelled(cancelled)
        if not is_author:  # a moderator action: audited and announced like the others
            entry = await services.moderation.record_cancel(
                guild_id=job.guild_id,
                actor_id=interaction.user.id,
                job_id=job.id,
                author_id=job.user_id,
            )
            await services.notices.moderator_action(entry)
        held = cancelled.credits_reserved
        await interaction.followup.send(
            f"Cancelled job #{job.id}; {held} credit{'' if held == 1 else 's'} "
            f"{'is' if held == 1 else 'are'} back.",
            ephemeral=True,
            allowed_mentions=NO_MENTIONS,
        )


def queued_view(job: Job) -> discord.ui.View:
    """The button on a waiting job's status message."""
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job.id))
    return view
