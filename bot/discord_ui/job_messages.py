"""Each job's one public message, and the cheapest way to reach it.

A job started from an interaction is shown in that interaction's own public response: its status
while it waits and runs, then its result or failure, all edits of one message. While the
interaction token lives (15 minutes) those edits go through the interaction webhook, which
Discord limits per token, not per channel, so a busy channel's message budget is never spent on
them. After that (or after a restart, when the token is gone: it is never stored) the same
message is edited through the channel. Only a job whose message cannot be found any more (never
sent, or deleted) gets a new channel message.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import discord

log = logging.getLogger(__name__)

TOKEN_MARGIN = datetime.timedelta(seconds=60)
"""Stop using a token this long before it expires, so no edit is lost to an expiry in flight."""
RESPONSE_WAIT = 15.0
"""How long an edit that must land (a result, a failure) waits for the interaction's response to
be sent before it gives up on it and uses a channel message instead."""
_TOKEN_GONE_CODES = frozenset({10015, 50027})  # Unknown Webhook, Invalid Webhook Token


class NoJobMessage(Exception):
    """The job has no message to edit (it was never sent, or it is gone)."""


@dataclass
class JobMessage:
    """Where a job is shown. Holds the interaction (and so its token) only in memory."""

    job_id: int
    channel_id: int
    interaction: discord.Interaction | None
    expires_at: datetime.datetime
    filesize_limit: int | None
    message_id: int | None = None
    sent: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    """Done once the interaction's response was sent (or could not be)."""
    token_gone: bool = False
    gave_up: bool = False
    """An edit that had to land stopped waiting for the response and went elsewhere."""
    ended: bool = False
    """The final edit (result, failure, cancel) has been queued: progress edits are dropped."""
    shown: Any = None
    """What the message should show now, kept while the response is not sent yet."""
    first: Any = None
    """The response's content (embed, view), built before the job was handed over."""

    def token_usable(self, now: datetime.datetime) -> bool:
        return (
            self.interaction is not None
            and not self.token_gone
            and self.sent.done()
            and now < self.expires_at - TOKEN_MARGIN
        )

    async def wait_sent(self) -> None:
        """Wait (at most `RESPONSE_WAIT`) for the response, so an edit never races the
        message's creation."""
        if self.sent.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.sent), RESPONSE_WAIT)
        except TimeoutError:
            log.warning("job %d: the interaction response is late; not waiting for it", self.job_id)
            self.gave_up = True


class JobMessages:
    """The jobs shown from a live interaction, by job id (restarts start empty)."""

    def __init__(self, *, now: Callable[[], datetime.datetime] = discord.utils.utcnow) -> None:
        self.now = now
        self._by_job: dict[int, JobMessage] = {}

    def open(self, job_id: int, channel_id: int, interaction: discord.Interaction) -> JobMessage:
        """Start tracking the message `interaction`'s response will be (not yet sent). Kept
        until the job ends (`close`): after the token expires it still knows the message id."""
        handle = JobMessage(
            job_id=job_id,
            channel_id=channel_id,
            interaction=interaction,
            expires_at=interaction.expires_at,
            filesize_limit=getattr(interaction, "filesize_limit", None),
        )
        self._by_job[job_id] = handle
        return handle

    def get(self, job_id: int) -> JobMessage | None:
        return self._by_job.get(job_id)

    def close(self, job_id: int) -> None:
        self._by_job.pop(job_id, None)

    def usable_token(self, handle: JobMessage | None) -> bool:
        return handle is not None and handle.token_usable(self.now())

    async def edit(
        self,
        handle: JobMessage | None,
        channel: discord.PartialMessageable,
        stored_message_id: int | None,
        fields: Callable[[], dict[str, Any]],
    ) -> int:
        """Edit the job's message with `fields()` (discord.py edit keywords, built anew for each
        attempt: a file's stream is spent by the first); return the message's id.

        Through the interaction webhook while the token is usable, else through the channel.
        Raises `NoJobMessage` when there is no message to edit, `discord.HTTPException` when
        Discord refused (`NotFound` when the message was deleted).
        """
        if handle is not None and self.usable_token(handle):
            assert handle.interaction is not None
            try:
                message = await handle.interaction.edit_original_response(**fields())
                handle.message_id = message.id
                return message.id
            except discord.HTTPException as exc:
                if exc.status != 401 and exc.code not in _TOKEN_GONE_CODES:
                    raise
                log.info(
                    "job %d: the interaction token no longer works (%s); using the channel",
                    handle.job_id,
                    exc.code,
                )
                handle.token_gone = True
        message_id = handle.message_id if handle is not None else None
        message_id = message_id or stored_message_id
        if message_id is None:
            raise NoJobMessage
        edited = await channel.get_partial_message(message_id).edit(**fields())
        return edited.id if edited is not None else message_id
