"""Starting a job from any interaction (the slash command, Reroll, Vary): one code path."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import discord

from bot.discord_ui import embeds
from bot.discord_ui.errors import set_failure_note
from bot.discord_ui.members import role_ids_of
from bot.errors import RequestRefused
from bot.generation.models import GenerationRequest
from bot.generation.runner import Phase
from bot.generation.service import validate

if TYPE_CHECKING:
    from bot.app import PixelDojoBot

NO_MENTIONS = discord.AllowedMentions.none()
CANNOT_POST = (
    "I can't post in this channel. Ask a moderator to let me send messages and attach files here."
)
DISCORD_BUSY = "Discord didn't accept my status message just now. Please try again in a moment."


def check_bot_can_post(permissions: discord.Permissions) -> None:
    """Refuse before anything is reserved if the bot could not post the result here.

    Discord sends the bot's permissions in this channel with every interaction, so this
    costs no request."""
    missing = [
        name
        for name, granted in (
            ("Send Messages", permissions.send_messages),
            ("Embed Links", permissions.embed_links),
            ("Attach Files", permissions.attach_files),
        )
        if not granted
    ]
    if missing:
        raise RequestRefused(
            f"I can't post images in this channel: I'm missing {', '.join(missing)}. "
            "Ask a moderator to give me those permissions here, or use another channel."
        )


def build_request(
    interaction: discord.Interaction,
    *,
    prompt: str,
    aspect_ratio: str,
    num_outputs: int,
    seed: int | None,
    parent_job_id: int | None = None,
    input_image_url: str | None = None,
) -> GenerationRequest:
    """Validate the fields and attach who is asking and where. Raises `RequestRefused`."""
    prompt, aspect_ratio, num_outputs, seed = validate(
        prompt=prompt, aspect_ratio=aspect_ratio, num_outputs=num_outputs, seed=seed
    )
    return GenerationRequest(
        guild_id=interaction.guild_id or 0,
        channel_id=interaction.channel_id or 0,
        user_id=interaction.user.id,
        prompt=prompt,
        aspect_ratio=aspect_ratio,
        num_outputs=num_outputs,
        seed=seed,
        parent_job_id=parent_job_id,
        input_image_url=input_image_url,
        role_ids=role_ids_of(interaction.user),
    )


async def launch(
    bot: PixelDojoBot, interaction: discord.Interaction, request: GenerationRequest
) -> None:
    """Reserve credits, post the public status message, start the job, and tell the member.

    The interaction must already be deferred (ephemerally). Refusals are sent to the member
    as ephemeral follow-ups; credits held for a job that could not be shown are refunded.
    """
    service = bot.services.generation
    try:
        check_bot_can_post(interaction.app_permissions)
        job = await service.reserve(request)
        set_failure_note(interaction, partial(service.failure_note, job.id))
        channel = interaction.channel
        try:
            if not isinstance(channel, discord.abc.Messageable):
                raise RequestRefused("I can't post in this kind of channel.")
            embed = embeds.status(job, Phase.QUEUED, 0.0)
            view = bot.presenter.queued_view(job)  # Cancel, while it waits
            if view is None:
                status = await channel.send(embed=embed, allowed_mentions=NO_MENTIONS)
            else:
                status = await channel.send(embed=embed, view=view, allowed_mentions=NO_MENTIONS)
        except (discord.HTTPException, RequestRefused) as exc:
            if isinstance(exc, RequestRefused):
                reason = str(exc)
            elif isinstance(exc, discord.Forbidden):
                reason = CANNOT_POST
            else:  # rate limited past discord.py's retries, or a Discord outage
                reason = DISCORD_BUSY
            await service.abandon(job, reason)
            raise RequestRefused(f"{reason} Your credits were not used.") from exc
        except BaseException:
            await service.abandon(job, "the command failed before the job started")
            raise
    except RequestRefused as refusal:
        await interaction.followup.send(str(refusal), ephemeral=True, allowed_mentions=NO_MENTIONS)
        return
    # Before the job starts, so that even an immediate failure can reach the member.
    bot.presenter.remember_interaction(job.id, interaction)
    job = await service.launch(job, status.id)
    await interaction.followup.send(
        f"Job #{job.id} is queued: {status.jump_url}", ephemeral=True, allowed_mentions=NO_MENTIONS
    )
