"""Shows jobs in Discord: one public message per job, from its status to its result.

A job started from an interaction is shown in that interaction's public response, and every
later change (progress, the result with its images and buttons, a failure, a cancel) is an edit
of that one message (`bot.discord_ui.job_messages` decides the route: the interaction webhook
while its token lives, the channel after). A job with no message to edit (the response could
not be sent, or the message was deleted) gets one channel message for its outcome. Only when
the channel itself can no longer be posted in (deleted, or the bot lost access) does a failure
notice go privately to the member: through the interaction while its token lives, else by DM.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord

from bot.discord_ui import embeds
from bot.discord_ui.job_messages import JobMessage, JobMessages, NoJobMessage
from bot.discord_ui.status_edits import StatusEditQueue
from bot.generation.models import Job
from bot.generation.runner import DeliveryError, Phase, QueuePosition, ResultImage
from bot.generation.uploads import fit_for_upload_async

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
DEFAULT_FILESIZE_LIMIT = 10 * 1024 * 1024
# Messages after a job's status message searched for its result after a crash (5 requests).
_RECOVERY_SCAN = 500


@dataclass(frozen=True)
class _Shown:
    """The status a job's message should show."""

    phase: Phase
    elapsed: float
    queue: QueuePosition | None = None


@dataclass
class _Running:
    """A generating job whose progress bar moves on its own between polls."""

    job: Job
    started: float
    """`clock()` when PixelDojo accepted it."""


class DiscordPresenter:
    """Implements the runner's `JobPresenter` with discord.py."""

    def __init__(
        self,
        client: discord.Client,
        *,
        edit_interval: float = 3.0,
        view_factory: Callable[[Job], discord.ui.View | None] | None = None,
        queued_view_factory: Callable[[Job], discord.ui.View | None] | None = None,
        expected_duration: Callable[[], float | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        messages: JobMessages | None = None,
    ) -> None:
        self.client = client
        self.edit_interval = edit_interval
        self.view_factory = view_factory
        self.queued_view_factory = queued_view_factory
        self.expected_duration = expected_duration or (lambda: None)
        self.clock = clock
        self.messages = messages or JobMessages()
        self.edits = StatusEditQueue(clock=clock)
        self._last_edit: dict[int, tuple[float, Phase]] = {}
        self._last_embed: dict[int, dict[str, Any]] = {}
        self._running: dict[int, _Running] = {}
        self._ticker: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        """Stop the progress ticker and the edit queues (pending progress edits are dropped)."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.edits.close()

    def _channel(self, job: Job) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)

    def _filesize_limit(self, job: Job, handle: JobMessage | None) -> int:
        """The interaction's own upload limit when known (it is the channel's real one), else
        the guild's boost tier's."""
        if handle is not None and handle.filesize_limit:
            return handle.filesize_limit
        guild = self.client.get_guild(job.guild_id) if job.guild_id else None
        return guild.filesize_limit if guild is not None else DEFAULT_FILESIZE_LIMIT

    def queued_view(self, job: Job) -> discord.ui.View | None:
        """The buttons on a waiting job's status message (Cancel), if any."""
        return self.queued_view_factory(job) if self.queued_view_factory else None

    # -- the interaction's response -------------------------------------------------------------

    def open(self, job: Job, interaction: discord.Interaction) -> None:
        """Before the job is handed to the runner: its message will be `interaction`'s
        response, so anything the runner shows before that response is sent waits for it."""
        shown = _Shown(Phase.QUEUED, 0.0)
        first = self._status_parts(job, shown)  # built first: if it can't be, nothing started
        handle = self.messages.open(job.id, job.channel_id, interaction)
        handle.shown = shown
        handle.first = first

    async def publish(self, job: Job, *, deferred: bool) -> int | None:
        """Send the job's status as its interaction's public response (or fill the deferred
        one); return the message id. Never raises: the job is running already. If Discord
        does not take the response (it came too late, or the connection broke), the status
        goes to the channel instead, so the member still sees the job; None if that fails too
        (its outcome then gets a channel message)."""
        handle = self.messages.get(job.id)
        if handle is None or handle.interaction is None:
            return None
        interaction = handle.interaction
        shown = handle.shown
        embed, view = handle.first
        kwargs: dict[str, Any] = {"view": view} if view is not None else {}
        try:
            if deferred:
                message = await interaction.edit_original_response(
                    embed=embed, allowed_mentions=NO_MENTIONS, **kwargs
                )
                handle.message_id = message.id
            else:
                response = await interaction.response.send_message(
                    embed=embed, allowed_mentions=NO_MENTIONS, **kwargs
                )
                handle.message_id = response.message_id
        except Exception as exc:  # an HTTP error, or a connection that broke on the way
            log.warning(
                "job %d: Discord did not take the status as the command's answer (%s); "
                "posting it in the channel",
                job.id,
                exc,
            )
            handle.token_gone = True
            if not handle.gave_up:
                handle.message_id = await self._status_in_channel(job, interaction, embed, kwargs)
        finally:
            if not handle.sent.done():
                handle.sent.set_result(None)
        if handle.gave_up:
            # The outcome could not wait for this response and went to a message of its own.
            await self._delete_quietly(interaction, job)
            return None
        if handle.message_id is not None and not handle.ended:
            self._last_embed[job.id] = dict(embed.to_dict())
            latest = handle.shown
            if latest is not shown and isinstance(latest, _Shown):  # it moved meanwhile
                self._queue_edit(job, handle, latest, urgent=True)
        return handle.message_id

    async def _status_in_channel(
        self,
        job: Job,
        interaction: discord.Interaction,
        embed: discord.Embed,
        kwargs: dict[str, Any],
    ) -> int | None:
        """The job's one message, when its interaction could not carry it."""
        try:
            # Whether a broken connection delivered the response is unknown: if it did, the
            # message exists and is the job's; otherwise make it in the channel.
            with contextlib.suppress(discord.HTTPException):
                return (await interaction.original_response()).id
            message = await self._channel(job).send(
                embed=embed, allowed_mentions=NO_MENTIONS, nonce=job.nonce, **kwargs
            )
            return message.id
        except Exception as exc:
            log.warning("job %d: could not post its status either (%s)", job.id, exc)
            return None

    async def _delete_quietly(self, interaction: discord.Interaction, job: Job) -> None:
        try:
            await interaction.delete_original_response()
        except Exception as exc:
            log.info("job %d: could not remove its late status (%s)", job.id, exc)

    def forget(self, job_id: int) -> None:
        """The job is over here (or was abandoned before it was shown): drop what is kept
        for it, so nothing more is shown for it from this process."""
        self._stop_showing(job_id)
        self.messages.close(job_id)
        self.edits.forget(-job_id, job_id)
        self.edits.discard(-job_id)

    # -- status ---------------------------------------------------------------------------------

    def _status_parts(
        self, job: Job, shown: _Shown
    ) -> tuple[discord.Embed, discord.ui.View | None]:
        expected = self.expected_duration() if shown.phase is Phase.GENERATING else None
        embed = embeds.status(job, shown.phase, shown.elapsed, shown.queue, expected)
        # Cancel only while waiting: the first edit after the job starts removes the button.
        view = self.queued_view(job) if shown.phase is Phase.QUEUED else None
        return embed, view

    def _edit_key(self, job: Job, handle: JobMessage | None) -> int:
        """The edit queue a job's edits wait in: its own while they go through its token
        (Discord limits those per token), the channel's once they go through the channel."""
        return -job.id if self.messages.usable_token(handle) else job.channel_id

    def _queue_edit(
        self, job: Job, handle: JobMessage | None, shown: _Shown, *, urgent: bool
    ) -> None:
        embed, view = self._status_parts(job, shown)
        rendered: dict[str, Any] = dict(embed.to_dict())
        if self._last_embed.get(job.id) == rendered and shown.queue is None:
            return  # nothing a member could see has changed: no edit
        self._last_embed[job.id] = rendered
        channel = self._channel(job)
        stored_id = job.status_message_id

        async def send() -> None:
            if handle is not None and handle.ended:
                return  # the outcome is on its way: never show progress over it
            await self.messages.edit(
                handle,
                channel,
                stored_id,
                lambda: {"embed": embed, "view": view, "allowed_mentions": NO_MENTIONS},
            )

        self.edits.tick(self._edit_key(job, handle), job.id, send, urgent=urgent)

    async def show_status(
        self, job: Job, phase: Phase, elapsed: float, queue: QueuePosition | None = None
    ) -> None:
        """Queue a progress edit: at most one per `edit_interval` per job unless the phase
        changed or the job moved in the queue, and never waited on, so a slow or
        rate-limited Discord never delays a job. Edits are coalesced per message and sent
        within the route's budget (`StatusEditQueue`), however often the queue moves. While a
        job generates, its progress bar keeps moving between the runner's calls."""
        handle = self.messages.get(job.id)
        if handle is not None and handle.ended:
            return
        if phase is Phase.GENERATING:
            self._track_progress(job, elapsed)
        else:
            self._running.pop(job.id, None)
        shown = _Shown(phase, elapsed, queue)
        if handle is not None and not handle.sent.done():
            handle.shown = shown  # `publish` shows the newest once the response is sent
            return
        if (handle is None or handle.message_id is None) and job.status_message_id is None:
            return
        now = self.clock()
        last = self._last_edit.get(job.id)
        recent = last is not None and last[1] == phase and now - last[0] < self.edit_interval
        if recent and queue is None:
            return
        # A job that starts (or finishes) says so before the queue's place-in-line updates.
        urgent = phase is not Phase.QUEUED and (last is None or last[1] != phase)
        self._last_edit[job.id] = (now, phase)
        self._queue_edit(job, handle, shown, urgent=urgent)

    def _track_progress(self, job: Job, elapsed: float) -> None:
        running = self._running.get(job.id)
        if running is None:
            self._running[job.id] = _Running(job, self.clock() - elapsed)
        else:
            running.job = job
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick_progress(), name="status-progress")

    async def _tick_progress(self) -> None:
        """Move every generating job's progress bar once per `edit_interval`."""
        while self._running:
            await asyncio.sleep(self.edit_interval)
            for running in list(self._running.values()):
                job = running.job
                handle = self.messages.get(job.id)
                if handle is not None and handle.ended:
                    self._running.pop(job.id, None)
                    continue
                try:
                    await self.show_status(job, Phase.GENERATING, self.clock() - running.started)
                except Exception:
                    log.exception("job %d: could not move its progress bar", job.id)

    def _stop_showing(self, job_id: int) -> JobMessage | None:
        """No more progress for the job: its outcome is about to be shown, or it is over here."""
        self._last_edit.pop(job_id, None)
        self._last_embed.pop(job_id, None)
        self._running.pop(job_id, None)
        handle = self.messages.get(job_id)
        if handle is not None:
            handle.ended = True
        return handle

    async def _final_edit(
        self, job: Job, handle: JobMessage | None, fields: Callable[[], dict[str, Any]]
    ) -> int:
        """Edit the job's message one last time, after any progress edit already on its way,
        and wait until Discord took it. Raises `NoJobMessage` if there is no message to edit."""
        if handle is not None:
            await handle.wait_sent()
        if (handle is None or handle.message_id is None) and job.status_message_id is None:
            if not self.messages.usable_token(handle):
                raise NoJobMessage
        channel = self._channel(job)
        edited: list[int] = []

        async def send() -> None:
            edited.append(await self.messages.edit(handle, channel, job.status_message_id, fields))

        key = self._edit_key(job, handle)
        other = job.channel_id if key < 0 else -job.id
        # Progress still waiting is dropped; one already sent on the other route (the token
        # just expired) must land before the outcome, never after it.
        self.edits.forget(other, job.id)
        self.edits.forget(key, job.id)
        await self.edits.settle(other)
        try:
            await self.edits.final(key, job.id, send)
        finally:
            self.edits.discard(-job.id)
        return edited[0]

    async def show_cancelled(self, job: Job) -> None:
        """Say on the job's message that the queued job was cancelled and refunded."""
        handle = self._stop_showing(job.id)
        try:
            await self._final_edit(job, handle, _ended_fields(embeds.cancelled(job)))
        except (NoJobMessage, discord.HTTPException) as exc:
            log.info("job %d: could not show the cancel (%s)", job.id, exc)
        finally:
            self.messages.close(job.id)

    async def show_failure(self, job: Job, reason: str) -> None:
        handle = self._stop_showing(job.id)
        embed = embeds.failure(job, reason)
        try:
            await self._show_failure_in_channel(job, handle, embed)
        except discord.HTTPException as exc:  # the channel is gone, or the bot lost access
            log.warning(
                "job %d: could not show the failure in channel %d (%s); telling the member "
                "privately",
                job.id,
                job.channel_id,
                exc,
            )
            await self._tell_member_privately(job, handle, embed)
        finally:
            self.messages.close(job.id)

    async def _show_failure_in_channel(
        self, job: Job, handle: JobMessage | None, embed: discord.Embed
    ) -> None:
        try:
            await self._final_edit(job, handle, _ended_fields(embed))
            return
        except (NoJobMessage, discord.NotFound):
            pass  # no message, or it was deleted: say it in a new message instead
        await self._channel(job).send(embed=embed, allowed_mentions=NO_MENTIONS)

    async def _tell_member_privately(
        self, job: Job, handle: JobMessage | None, embed: discord.Embed
    ) -> None:
        """An ephemeral follow-up while the interaction token lives (15 min), else a DM."""
        content = (
            f"I can't post in <#{job.channel_id}> any more, so here is what happened to "
            f"{embeds.job_marker(job)}."
        )
        interaction = handle.interaction if handle is not None else None
        if interaction is not None and discord.utils.utcnow() < interaction.expires_at:
            try:
                await interaction.followup.send(
                    content, embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS
                )
                return
            except discord.HTTPException as exc:
                log.info("job %d: the private follow-up failed (%s); sending a DM", job.id, exc)
        try:
            dm = await self.client.create_dm(discord.Object(job.user_id))
            await dm.send(content, embed=embed, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as exc:
            log.warning("job %d: could not DM the member either (%s)", job.id, exc)

    # -- the result -----------------------------------------------------------------------------

    async def post_result(self, job: Job, images: list[ResultImage], elapsed: float) -> int:
        """Put the images, the result embed and its buttons in the job's message (a new
        channel message only if it has none); return that message's id."""
        handle = self._stop_showing(job.id)
        uploads = await fit_for_upload_async(
            [image.data for image in sorted(images, key=lambda i: i.index)],
            file_limit=self._filesize_limit(job, handle),
            stem=f"pixeldojo-{job.id}",
        )
        embed = embeds.result(job, elapsed, reencoded=any(u.reencoded for u in uploads))
        view = self.view_factory(job) if self.view_factory else None

        def files() -> list[discord.File]:
            return [discord.File(_as_stream(u.data), filename=u.filename) for u in uploads]

        try:
            try:
                message_id = await self._final_edit(
                    job,
                    handle,
                    lambda: {
                        "embed": embed,
                        "attachments": files(),
                        "view": view,
                        "allowed_mentions": NO_MENTIONS,
                    },
                )
            except (NoJobMessage, discord.NotFound):
                # Typed Any: discord.py's overloads take `view` only as a View, not the None
                # send() defaults it to.
                kwargs: dict[str, Any] = {"view": view} if view is not None else {}
                message = await self._channel(job).send(
                    embed=embed,
                    files=files(),
                    allowed_mentions=NO_MENTIONS,
                    nonce=job.nonce,
                    **kwargs,
                )
                message_id = message.id
        except discord.Forbidden as exc:
            raise DeliveryError(
                "I am not allowed to post images in this channel.", permanent=True
            ) from exc
        except discord.NotFound as exc:
            raise DeliveryError("the channel no longer exists.", permanent=True) from exc
        except discord.HTTPException as exc:
            permanent = exc.status in (400, 413)
            raise DeliveryError(
                f"Discord refused the upload ({exc.status}).", permanent=permanent
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            # The connection failed or broke (OSError covers timeouts): a short outage, so
            # retry like a 5xx. An edit is idempotent, and the nonce keeps a new message that
            # did arrive from appearing twice.
            raise DeliveryError(
                f"Discord could not be reached ({type(exc).__name__}).", permanent=False
            ) from exc
        self.messages.close(job.id)
        return message_id

    async def find_posted_result(self, job: Job) -> int | None:
        """After a crash: the job's own message if it already carries the result, else a result
        among the messages after it (posted as a new message because the job's was gone),
        oldest first, at most `_RECOVERY_SCAN` of them."""
        me = self.client.user
        keys = self._result_keys(job)
        channel = self._channel(job)
        try:
            if job.status_message_id is not None:
                try:
                    own = await channel.fetch_message(job.status_message_id)
                except discord.NotFound:
                    pass
                else:
                    if own.attachments and _carries_key(own, job, keys):
                        return own.id
            start = job.status_message_id or discord.utils.time_snowflake(_utc(job.created_at))
            async for message in channel.history(
                limit=_RECOVERY_SCAN, after=discord.Object(start), oldest_first=True
            ):
                if me is not None and message.author.id != me.id:
                    continue
                if message.attachments and _carries_key(message, job, keys):
                    await self._delete_status(job)  # the stale status of a result posted apart
                    return message.id
        except discord.HTTPException as exc:
            log.info("job %d: could not read channel history (%s)", job.id, exc)
        return None

    def _result_keys(self, job: Job) -> frozenset[str]:
        """The custom ids of the buttons on the job's result: they carry the job id and, unlike
        the nonce, Discord keeps them on the message."""
        view = self.view_factory(job) if self.view_factory else None
        if view is None:
            return frozenset()
        return frozenset(
            custom_id
            for item in view.children
            if isinstance(custom_id := getattr(item, "custom_id", None), str)
        )

    async def _delete_status(self, job: Job) -> None:
        if job.status_message_id is None:
            return
        self.edits.forget(job.channel_id, job.id)
        try:
            await self._channel(job).get_partial_message(job.status_message_id).delete()
        except discord.HTTPException as exc:
            log.info("job %d: could not delete the status message (%s)", job.id, exc)


def _ended_fields(embed: discord.Embed) -> Callable[[], dict[str, Any]]:
    """A job's message once it ended without images: no buttons, no attachments (an earlier
    result edit Discord did take, though its answer never arrived, must not stay)."""
    return lambda: {
        "embed": embed,
        "view": None,
        "attachments": [],
        "allowed_mentions": NO_MENTIONS,
    }


def _carries_key(message: discord.Message, job: Job, keys: frozenset[str]) -> bool:
    """Whether `message` is the job's result by an exact machine key, never by its text."""
    if message.nonce is not None and str(message.nonce) == job.nonce:
        return True
    return any(
        getattr(child, "custom_id", None) in keys
        for row in message.components
        for child in getattr(row, "children", ())
    )


def _as_stream(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def _utc(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
