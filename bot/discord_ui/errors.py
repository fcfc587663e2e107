"""One error path for every interaction: slash commands, result buttons and modals.

An unexpected error must never leave a member watching "thinking…" until the token dies, and
the apology must not claim what the bot does not know. The handler that ran keeps a note of
what it has done so far (`set_failure_note`, e.g. "Nothing was charged." until credits are
reserved, then a callable that reads the job's record); this module only sends the reply,
answers or follows up as the interaction's state requires, and logs the traceback once.
It knows nothing about credits or jobs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import discord
from discord import app_commands

log = logging.getLogger(__name__)

FailureNote = str | Callable[[], Awaitable[str | None]]
"""What to tell the member after the apology instead of "Please try again." (say whether to
retry: retrying is wrong once something started), or a coroutine function that works it out
when, and only if, an error happens."""

APOLOGY = "Something went wrong on my side."
RETRY = "Please try again."
_NOTE_KEY = "bot.discord_ui.errors.note"
_NO_MENTIONS = discord.AllowedMentions.none()


def set_failure_note(interaction: discord.Interaction, note: FailureNote | None) -> None:
    """Say what an error reply from now on should tell the member about side effects so far."""
    interaction.extras[_NOTE_KEY] = note


def describe(interaction: discord.Interaction) -> str:
    """What logs call this interaction: the command, button or modal. Never its token."""
    command = interaction.command
    if command is not None:
        return f"/{command.qualified_name}"
    data: Mapping[str, object] = interaction.data or {}
    kind = {
        discord.InteractionType.component: "button",
        discord.InteractionType.modal_submit: "modal",
    }.get(interaction.type, interaction.type.name)
    return f"{kind} {str(data.get('custom_id', '?'))[:100]!r}"


async def reply_privately(interaction: discord.Interaction, text: str) -> None:
    """Answer ephemerally: as the response if none was sent yet, else as a follow-up (which
    fills a deferred "thinking…" message). A failure to send is logged, not raised."""
    if interaction.type is discord.InteractionType.autocomplete:
        return  # an autocomplete can only be answered with choices
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=_NO_MENTIONS)
        else:
            await interaction.response.send_message(
                text, ephemeral=True, allowed_mentions=_NO_MENTIONS
            )
    except discord.HTTPException as exc:
        log.warning("%s: could not answer the member (%s)", describe(interaction), exc)


async def report_failure(interaction: discord.Interaction, error: BaseException) -> None:
    """An unexpected error: log its traceback once and tell the member honestly."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    log.error(
        "%s by user %d in guild %s failed",
        describe(interaction),
        interaction.user.id,
        interaction.guild_id,
        exc_info=error,
    )
    note = await _failure_note(interaction)
    await reply_privately(interaction, f"{APOLOGY} {note or RETRY}")


class ReportingCommandTree(app_commands.CommandTree[Any]):
    """The bot's command tree: every slash command error goes down this module's path."""

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """A refused check (e.g. `/mod` for a non-moderator) gets its own text, privately;
        anything else is reported as an unexpected failure."""
        if isinstance(error, app_commands.CheckFailure):
            await reply_privately(interaction, str(error) or "You can't use this command here.")
        else:
            await report_failure(interaction, error)


@asynccontextmanager
async def reporting_failures(interaction: discord.Interaction) -> AsyncIterator[None]:
    """Run a button or modal handler under the same error path as slash commands (discord.py
    only logs what a `DynamicItem` callback raises; no error hook of the library sees it)."""
    try:
        yield
    except Exception as error:
        await report_failure(interaction, error)


async def _failure_note(interaction: discord.Interaction) -> str | None:
    note: FailureNote | None = interaction.extras.get(_NOTE_KEY)
    if note is None or isinstance(note, str):
        return note
    try:
        return await note()
    except Exception:
        log.exception("%s: could not work out what to tell the member", describe(interaction))
        return None
