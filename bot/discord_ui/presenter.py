"""Shows jobs in Discord: the status message, the result post and failures.

Everything goes through the channel (`channel.send`, message edits by id), not through an
interaction token, so it works after the 15-minute token lifetime and after a restart. Only
when the channel itself can no longer be posted in (deleted, or the bot lost access) does a
failure notice go privately to the member: through the interaction that started the job
while its token lives, else by DM.
"""

from __future__ import annotations

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
class _Origin:
    """How to reach the member who started a job privately: the interaction's follow-up
    webhook. It holds the interaction token, so it stays in memory and is never logged."""

    followup: discord.Webhook
    expires_at: datetime.datetime


class DiscordPresenter:
    """Implements the runner's `JobPresenter` with discord.py."""

    def __init__(
        self,
        client: discord.Client,
        *,
        edit_interval: float = 3.0,
        view_factory: Callable[[Job], discord.ui.View | None] | None = None,
        queued_view_factory: Callable[[Job], discord.ui.View | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.edit_interval = edit_interval
        self.view_factory = view_factory
        self.queued_view_factory = queued_view_factory
        self.clock = clock
        self.edits = StatusEditQueue(clock=clock)
        self._last_edit: dict[int, tuple[float, Phase]] = {}
        self._origins: dict[int, _Origin] = {}

    async def aclose(self) -> None:
        """Stop the status edit queues (pending progress edits are dropped)."""
        await self.edits.close()

    def _channel(self, job: Job) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)

    def _filesize_limit(self, job: Job) -> int:
        guild = self.client.get_guild(job.guild_id) if job.guild_id else None
        return guild.filesize_limit if guild is not None else DEFAULT_FILESIZE_LIMIT

    def queued_view(self, job: Job) -> discord.ui.View | None:
        """The buttons on a waiting job's status message (Cancel), if any."""
        return self.queued_view_factory(job) if self.queued_view_factory else None

    async def show_status(
        self, job: Job, phase: Phase, elapsed: float, queue: QueuePosition | None = None
    ) -> None:
        """Queue a progress edit: at most one per `edit_interval` per job unless the phase
        changed or the job moved in the queue, and never waited on, so a slow or
        rate-limited Discord never delays a job. Edits are coalesced per message and sent
        within the channel's budget (`StatusEditQueue`), however often the queue moves."""
        if job.status_message_id is None:
            return
        now = self.clock()
        last = self._last_edit.get(job.id)
        recent = last is not None and last[1] == phase and now - last[0] < self.edit_interval
        if recent and queue is None:
            return
        # A job that starts (or finishes) says so before the queue's place-in-line updates.
        urgent = phase is not Phase.QUEUED and (last is None or last[1] != phase)
        self._last_edit[job.id] = (now, phase)
        message = self._channel(job).get_partial_message(job.status_message_id)
        embed = embeds.status(job, phase, elapsed, queue)
        # Cancel only while waiting: the first edit after the job starts removes the button.
        view = self.queued_view(job) if phase is Phase.QUEUED else None
        self.edits.tick(
            job.channel_id,
            job.status_message_id,
            lambda: message.edit(embed=embed, view=view, allowed_mentions=NO_MENTIONS),
            urgent=urgent,
        )

    async def show_cancelled(self, job: Job) -> None:
        """Say on the status message that the queued job was cancelled and refunded (an edit
        that lands after any progress edit still waiting)."""
        self._last_edit.pop(job.id, None)
        self._origins.pop(job.id, None)
        embed = embeds.cancelled(job)
        if job.status_message_id is None:
            return
        message = self._channel(job).get_partial_message(job.status_message_id)
        await self.edits.final(
            job.channel_id,
            job.status_message_id,
            lambda: message.edit(embed=embed, view=None, allowed_mentions=NO_MENTIONS),
        )

    def remember_interaction(self, job_id: int, interaction: discord.Interaction) -> None:
        """Keep the interaction that started a job, so that a failure the channel can't show
        still reaches the member (see `show_failure`). Forgotten when the job ends or the
        token expires."""
        now = discord.utils.utcnow()
        for expired in [k for k, origin in self._origins.items() if origin.expires_at <= now]:
            del self._origins[expired]
        self._origins[job_id] = _Origin(interaction.followup, interaction.expires_at)

    async def show_failure(self, job: Job, reason: str) -> None:
        self._last_edit.pop(job.id, None)
        origin = self._origins.pop(job.id, None)
        embed = embeds.failure(job, reason)
        try:
            await self._show_failure_in_channel(job, embed)
        except discord.HTTPException as exc:  # the channel is gone, or the bot lost access
            log.warning(
                "job %d: could not show the failure in channel %d (%s); telling the member "
                "privately",
                job.id,
                job.channel_id,
                exc,
            )
            await self._tell_member_privately(job, origin, embed)

    async def _show_failure_in_channel(self, job: Job, embed: discord.Embed) -> None:
        channel = self._channel(job)
        if job.status_message_id is not None:
            message = channel.get_partial_message(job.status_message_id)
            try:
                await self.edits.final(
                    job.channel_id,
                    job.status_message_id,
                    lambda: message.edit(embed=embed, view=None, allowed_mentions=NO_MENTIONS),
                )
                return
            except discord.NotFound:
                pass  # the status message was deleted: say it in a new message instead
        await channel.send(embed=embed, allowed_mentions=NO_MENTIONS)

    async def _tell_member_privately(
        self, job: Job, origin: _Origin | None, embed: discord.Embed
    ) -> None:
        """An ephemeral follow-up while the interaction token lives (15 min), else a DM."""
        content = (
            f"I can't post in <#{job.channel_id}> any more, so here is what happened to "
            f"{embeds.job_marker(job)}."
        )
        if origin is not None and discord.utils.utcnow() < origin.expires_at:
            try:
                await origin.followup.send(
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

    async def post_result(self, job: Job, images: list[ResultImage], elapsed: float) -> int:
        uploads = await fit_for_upload_async(
            [image.data for image in sorted(images, key=lambda i: i.index)],
            file_limit=self._filesize_limit(job),
            stem=f"pixeldojo-{job.id}",
        )
        files = [discord.File(_as_stream(u.data), filename=u.filename) for u in uploads]
        view = self.view_factory(job) if self.view_factory else None
        # Typed Any: discord.py's overloads take `view` only as a View, not the None send()
        # defaults it to.
        kwargs: dict[str, Any] = {"view": view} if view is not None else {}
        try:
            message = await self._channel(job).send(
                embed=embeds.result(job, elapsed, reencoded=any(u.reencoded for u in uploads)),
                files=files,
                allowed_mentions=NO_MENTIONS,
                nonce=job.nonce,
                **kwargs,
            )
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
            # retry like a 5xx. The nonce keeps a post that did arrive from appearing twice.
            raise DeliveryError(
                f"Discord could not be reached ({type(exc).__name__}).", permanent=False
            ) from exc
        self._last_edit.pop(job.id, None)
        self._origins.pop(job.id, None)
        await self._delete_status(job)
        return message.id

    async def find_posted_result(self, job: Job) -> int | None:
        """Look for the job's result among the messages after its status message (the result
        is always posted later), oldest first, at most `_RECOVERY_SCAN` of them."""
        me = self.client.user
        keys = self._result_keys(job)
        start = job.status_message_id or discord.utils.time_snowflake(_utc(job.created_at))
        try:
            async for message in self._channel(job).history(
                limit=_RECOVERY_SCAN, after=discord.Object(start), oldest_first=True
            ):
                if me is not None and message.author.id != me.id:
                    continue
                if message.attachments and _carries_key(message, job, keys):
                    self._origins.pop(job.id, None)
                    await self._delete_status(job)
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
        self.edits.forget(job.channel_id, job.status_message_id)
        try:
            await self._channel(job).get_partial_message(job.status_message_id).delete()
        except discord.HTTPException as exc:
            log.info("job %d: could not delete the status message (%s)", job.id, exc)


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
