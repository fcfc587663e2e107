"""Starting a job from any interaction (the slash command, Reroll, Vary): one code path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

import discord

from bot.discord_ui.errors import reply_privately, set_failure_note
from bot.discord_ui.members import role_ids_of
from bot.errors import RequestRefused
from bot.generation.models import GenerationRequest
from bot.generation.service import validate

if TYPE_CHECKING:
    from bot.app import PixelDojoBot
    from bot.generation.models import Job
    from bot.generation.service import GenerationService

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()


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


ACK_WITHIN = 2.0
"""Seconds of Discord's 3 s to decide admission in before answering "thinking…" instead."""

Prepare = Callable[[], Awaitable[GenerationRequest]]
"""Builds the request (validation, reading an input image); raises `RequestRefused`."""


async def launch(bot: PixelDojoBot, interaction: discord.Interaction, prepare: Prepare) -> None:
    """Admit the request and answer the interaction with the job's public status message, the
    one message the job's result will land in.

    The interaction must not have been answered yet. Admission is a local transaction, so it
    is normally decided inside Discord's 3 s window and a refusal is private; if it takes
    longer the bot answers "thinking…" publicly first and removes that on a refusal. The job
    is handed to the runner before the status is sent, so the submission never waits on
    Discord; a status Discord won't take never costs the member their job.
    """
    service = bot.services.generation
    admitting = asyncio.ensure_future(_admit(bot, interaction, prepare))
    deferred = False
    try:
        done, _ = await asyncio.wait({admitting}, timeout=_window_left(interaction))
        if not done:
            await interaction.response.defer(thinking=True)  # public: the status fills it
            deferred = True
        job = await asyncio.shield(admitting)
    except RequestRefused as refusal:
        await _refuse(interaction, str(refusal), deferred=deferred)
        return
    except BaseException:
        # Never cancelled: a reservation already on its way to the database commits anyway.
        # Whatever it reserves is refunded as soon as it is known (the member is told that
        # nothing was charged).
        _refund_when_admitted(service, admitting)
        if deferred:  # the error is reported privately: don't leave "thinking…" in public
            await _withdraw_thinking(interaction)
        raise
    # An error from here on says what became of the job's credits, read at that moment.
    set_failure_note(interaction, partial(service.failure_note, job.id))
    try:
        bot.presenter.open(job, interaction)
        service.start(job)
    except BaseException:
        bot.presenter.forget(job.id)
        await service.abandon(job, "the command failed before the job started")
        raise
    message_id = await bot.presenter.publish(job, deferred=deferred)
    if message_id is not None:
        await service.record_status_message(job.id, message_id)


def _window_left(interaction: discord.Interaction) -> float:
    """Seconds left of `ACK_WITHIN`, counted from when Discord created the interaction (lag
    before the handler ran, and a Reroll's lookup, come out of the same 3 s)."""
    age = (discord.utils.utcnow() - interaction.created_at).total_seconds()
    return min(ACK_WITHIN, max(0.0, ACK_WITHIN - age))


_refunding: set[asyncio.Task[None]] = set()


def _refund_when_admitted(service: GenerationService, admitting: asyncio.Future[Job]) -> None:
    """Refund the job `admitting` reserves (or reserved) for a command that failed."""

    async def refund() -> None:
        try:
            job = await admitting
        except BaseException:
            return  # nothing was reserved
        try:
            await service.abandon(job, "the command failed before the job started")
        except Exception:  # the database is failing: the operator must hear of it
            log.exception("job %d: could not refund a job whose command failed", job.id)

    task = asyncio.ensure_future(refund())
    _refunding.add(task)
    task.add_done_callback(_refunding.discard)


async def _admit(bot: PixelDojoBot, interaction: discord.Interaction, prepare: Prepare) -> Job:
    check_bot_can_post(interaction.app_permissions)
    if not isinstance(interaction.channel, discord.abc.Messageable):
        raise RequestRefused("I can't post in this kind of channel.")
    return await bot.services.generation.reserve(await prepare())


async def _refuse(interaction: discord.Interaction, text: str, *, deferred: bool) -> None:
    """Tell only the member why nothing was started."""
    if deferred:
        await _withdraw_thinking(interaction)
    await reply_privately(interaction, text)


async def _withdraw_thinking(interaction: discord.Interaction) -> None:
    """Delete the public "thinking…" answer, so that what follows is private (a follow-up
    would fill it, in public)."""
    with contextlib.suppress(discord.HTTPException):
        await interaction.delete_original_response()
