"""Buttons on result messages: Reroll, Vary, Show prompt, Delete; and the Vary form.

The buttons are `DynamicItem`s: the job id lives in the custom id and everything else comes
from SQLite, so they keep working after a restart without re-registering any view. The Vary
form works the same way: its custom id names the job, and `answer_vary_form` answers its
submit, so a form opened before a restart (or left open for an hour) still works.
Not an extension: `PixelDojoBot.setup_hook` registers `JobButton` and `answer_vary_form` and
hands `result_view` to the presenter, so no extension's load state can take them away.
Every handler runs under `bot.discord_ui.errors`, so an error never leaves a member waiting.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import discord

from bot.discord_ui import embeds
from bot.discord_ui.errors import reply_privately, reporting_failures, set_failure_note
from bot.discord_ui.members import can_moderate
from bot.generation.models import PROMPT_MAX_LENGTH, GenerationRequest, Job
from bot.generation.service import NOTHING_CHARGED
from cogs._client import bot_of
from cogs._launch import NO_MENTIONS, build_request, launch

if TYPE_CHECKING:
    from bot.app import PixelDojoBot

log = logging.getLogger(__name__)


async def _load_job(interaction: discord.Interaction, job_id: int) -> Job | None:
    bot = bot_of(interaction)
    job = await bot.services.generation.job(job_id)
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
    template=r"pdj:(?P<action>reroll|vary|info|delete):(?P<job_id>[0-9]+)",
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
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> JobButton:
        action = match["action"]
        if action not in ACTIONS:
            raise ValueError(f"unknown result action {action!r}")
        return cls(action, int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        # discord.py only logs what a DynamicItem callback raises: answer the member instead.
        async with reporting_failures(interaction):
            await self._act(interaction)

    async def _act(self, interaction: discord.Interaction) -> None:
        if self.action == "reroll":
            set_failure_note(interaction, NOTHING_CHARGED)
        job = await _load_job(interaction, self.job_id)
        if job is None:
            return
        bot = bot_of(interaction)
        if self.action == "reroll":
            await _generate(bot, interaction, job, prompt=job.prompt, seed=None)
        elif self.action == "vary":
            await interaction.response.send_modal(vary_modal(job))
        elif self.action == "info":
            await interaction.response.send_message(
                embed=embeds.job_details(job), ephemeral=True, allowed_mentions=NO_MENTIONS
            )
        elif self.action == "delete":
            await _delete(bot, interaction, job)


async def _generate(
    bot: PixelDojoBot, interaction: discord.Interaction, job: Job, *, prompt: str, seed: int | None
) -> None:
    """A new job built on `job`, shown in this interaction's own response (see `launch`)."""

    async def prepare() -> GenerationRequest:
        return build_request(
            interaction,
            prompt=prompt,
            aspect_ratio=job.aspect_ratio,
            num_outputs=job.num_outputs,
            seed=seed,
            parent_job_id=job.id,
            input_image_url=job.input_image_url,
        )

    await launch(bot, interaction, prepare)


async def _delete(bot: PixelDojoBot, interaction: discord.Interaction, job: Job) -> None:
    is_author = interaction.user.id == job.user_id
    services = bot.services
    if not is_author and not await can_moderate(services.moderation, interaction):
        log.info("job %d: user %d may not delete this result", job.id, interaction.user.id)
        await interaction.response.send_message(
            "Only the person who asked for these images or a moderator can delete them.",
            ephemeral=True,
        )
        return
    await interaction.response.defer(ephemeral=True)
    if interaction.message is not None:
        await interaction.message.delete()
    set_failure_note(interaction, "The result was deleted, though.")
    log.info("job %d: result deleted by user %d", job.id, interaction.user.id)
    if not is_author:  # a moderator action: audited and announced like the others
        entry = await services.moderation.record_result_deletion(
            guild_id=job.guild_id,
            actor_id=interaction.user.id,
            job_id=job.id,
            author_id=job.user_id,
        )
        await services.notices.moderator_action(entry)
    await interaction.followup.send("Deleted.", ephemeral=True)


VARY_FORM = re.compile(r"pdj:vary-modal:(?P<job_id>[0-9]{1,20})")
"""Custom id of the Vary form: like the buttons', it names the job."""
VARY_PROMPT_ID = "prompt"


def vary_modal(job: Job) -> discord.ui.Modal:
    """The Vary form: the job's prompt to tweak (the variation keeps the original seed)."""
    modal = discord.ui.Modal(title="Vary this image", custom_id=f"pdj:vary-modal:{job.id}")
    modal.add_item(
        discord.ui.TextInput(
            label="Prompt",
            custom_id=VARY_PROMPT_ID,
            style=discord.TextStyle.paragraph,
            default=job.prompt[:PROMPT_MAX_LENGTH],
            max_length=PROMPT_MAX_LENGTH,
        )
    )
    # Only the form is sent: `answer_vary_form` answers the submit from the custom id.
    # `send_modal` keeps an unfinished modal in memory until it is submitted (forever, for a
    # form the member closes); a stopped one is not kept.
    modal.stop()
    return modal


def submitted_text(components: Any, custom_id: str) -> str | None:
    """The value of text input `custom_id` in a modal submit's components (action rows or
    labels, as Discord sends them), or None if it is missing or not text."""
    if not isinstance(components, list):
        return None
    for component in components:
        if not isinstance(component, dict):
            continue
        value = component.get("value")
        if component.get("custom_id") == custom_id and isinstance(value, str):
            return value
        nested = component.get("components", [])
        if "component" in component:
            nested = [component["component"]]
        found = submitted_text(nested, custom_id)
        if found is not None:
            return found
    return None


async def _vary(interaction: discord.Interaction, job_id: int) -> None:
    """A submitted Vary form: generate from the new prompt with the original seed."""
    set_failure_note(interaction, NOTHING_CHARGED)
    job = await _load_job(interaction, job_id)
    if job is None:
        return
    data: Mapping[str, object] = interaction.data or {}
    prompt = submitted_text(data.get("components"), VARY_PROMPT_ID) or ""
    bot = bot_of(interaction)
    await _generate(bot, interaction, job, prompt=prompt, seed=job.seed)


def result_view(job: Job) -> discord.ui.View:
    """The buttons attached to a job's result message."""
    view = discord.ui.View(timeout=None)
    for action in ACTIONS:
        view.add_item(JobButton(action, job.id))
    return view


async def answer_vary_form(interaction: discord.Interaction) -> None:
    """An `on_interaction` listener: answers every submitted Vary form, whenever it was opened
    (other interactions are left to discord.py)."""
    if interaction.type is not discord.InteractionType.modal_submit:
        return
    data: Mapping[str, object] = interaction.data or {}
    custom_id = data.get("custom_id")
    match = VARY_FORM.fullmatch(custom_id) if isinstance(custom_id, str) else None
    if match is None:
        return
    async with reporting_failures(interaction):
        await _vary(interaction, int(match["job_id"]))
