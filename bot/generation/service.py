"""The generation service: validates what a member asks for, reserves credits and starts jobs.

Cogs call this; it never touches Discord. Every way to start a job (the slash command, a
reroll button, the command line) goes through `GenerationService.reserve`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace

from bot.errors import RequestRefused
from bot.generation.models import (
    CREDITS_PER_OUTPUT,
    MAX_OUTPUTS,
    PROMPT_MAX_LENGTH,
    SEED_MAX,
    GenerationRequest,
    Job,
    JobState,
)
from bot.generation.runner import JobRunner
from bot.pixeldojo.models import ASPECT_RATIOS
from bot.storage import SyncConnection
from bot.storage.jobs import Admission, AdmissionCheck, JobStore

log = logging.getLogger(__name__)


def validate(
    *, prompt: str, aspect_ratio: str, num_outputs: int, seed: int | None
) -> tuple[str, str, int, int | None]:
    """Normalise a request's fields or raise `RequestRefused` saying what to change."""
    prompt = prompt.strip()
    if not prompt:
        raise RequestRefused("The prompt is empty. Describe the image you want.")
    if len(prompt) > PROMPT_MAX_LENGTH:
        raise RequestRefused(
            f"The prompt is {len(prompt)} characters long; the limit is {PROMPT_MAX_LENGTH}."
        )
    if aspect_ratio not in ASPECT_RATIOS:
        raise RequestRefused(
            f"Aspect ratio {aspect_ratio!r} is not supported. "
            f"Pick one of: {', '.join(ASPECT_RATIOS)}."
        )
    if not 1 <= num_outputs <= MAX_OUTPUTS:
        raise RequestRefused(f"You can ask for 1 to {MAX_OUTPUTS} images at a time.")
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise RequestRefused(f"The seed must be between 0 and {SEED_MAX}.")
    return prompt, aspect_ratio, num_outputs, seed


def admit_without_limits(conn: SyncConnection, request: GenerationRequest, now: float) -> Admission:
    """Hold the estimated cost, with no allowance to check (all-time period)."""
    return Admission(credits=request.num_outputs * CREDITS_PER_OUTPUT, period_start=0.0)


NOTHING_CHARGED = "Nothing was charged; please try again."
"""What an error reply says while nothing has been reserved yet."""

ModeratorNotifier = Callable[[int, str], Awaitable[None]]
"""Sends a notice (e.g. the spend cap nearing) to a guild's moderators."""


class GenerationService:
    """Turns requests into running jobs."""

    def __init__(
        self,
        store: JobStore,
        runner: JobRunner,
        admission: AdmissionCheck = admit_without_limits,
        notify_moderators: ModeratorNotifier | None = None,
    ) -> None:
        self.store = store
        self.runner = runner
        self.admission = admission
        self.notify_moderators = notify_moderators

    async def reserve(self, request: GenerationRequest) -> Job:
        """Check limits and hold the credits. Raises `RequestRefused` with the reason."""
        if not self.runner.accepting:
            raise RequestRefused(
                "The bot is restarting. Please try again in a minute; nothing was charged."
            )
        if request.seed is None:
            # Pick the seed here rather than letting PixelDojo do it, so every result shows a
            # seed that reproduces it and Reroll/Vary can build on it.
            request = replace(request, seed=secrets.randbelow(SEED_MAX + 1))
        job, admission = await self.store.create_admitted(request, self.admission)
        for notice in admission.notices:
            log.warning("guild %d: %s", job.guild_id, notice)
            if self.notify_moderators is not None:
                try:
                    await self.notify_moderators(job.guild_id, notice)
                except Exception:  # best-effort: the credits are held already
                    log.exception("guild %d: could not notify the moderators", job.guild_id)
        log.info(
            "job %d: reserved %d credit(s) for user %d in guild %d",
            job.id,
            job.credits_reserved,
            job.user_id,
            job.guild_id,
        )
        return job

    async def launch(self, job: Job, status_message_id: int | None) -> Job:
        """Remember an existing status message and hand the job to the runner (the CLI, which
        has no message, passes None)."""
        if status_message_id is not None:
            job = await self.store.set_status_message(job.id, status_message_id)
        self.start(job)
        return job

    def start(self, job: Job) -> None:
        """Hand a reserved job to the runner (it queues it, and sends it in its turn)."""
        self.runner.submit(job)

    async def record_status_message(self, job_id: int, message_id: int) -> None:
        """Remember which message shows the job, so a restart can still edit it. Best effort:
        without it the job still runs, and after a restart its outcome gets a new message."""
        try:
            await self.store.set_status_message(job_id, message_id)
        except Exception:
            log.exception("job %d: could not record its message %d", job_id, message_id)

    async def cancel(self, job_id: int, *, by_moderator: bool = False) -> Job | None:
        """Cancel a job still waiting in the queue (refunded at once); None if it has started
        or ended."""
        who = "a moderator" if by_moderator else "its author"
        return await self.runner.cancel(job_id, f"Cancelled by {who} before it started.")

    async def job(self, job_id: int) -> Job | None:
        """Job `job_id`'s record (what its result buttons act on), or None if it is gone."""
        return await self.store.get(job_id)

    async def recent_jobs(self, guild_id: int, user_id: int, *, limit: int) -> list[Job]:
        """A member's latest jobs in a guild, newest first."""
        return await self.store.recent_for_user(guild_id, user_id, limit=limit)

    async def abandon(self, job: Job, reason: str) -> None:
        """The job could not even be shown: refund it."""
        log.warning("job %d: abandoned before submission: %s", job.id, reason)
        await self.store.mark_failed(job.id, reason)

    async def failure_note(self, job_id: int) -> str:
        """For an error reply after job `job_id` was reserved: what became of its credits,
        read from the job's record at that moment rather than assumed."""
        try:
            job = await self.store.get(job_id)
        except Exception:
            log.exception("job %d: could not read it to explain an error", job_id)
            job = None
        if job is None:
            return f"I couldn't check job #{job_id}; `/credits` shows what it used."
        # Only a job that certainly is not running may be followed by "try again": a retry
        # beside a live job would spend the credits twice.
        if job.state is JobState.FAILED:
            return f"Job #{job.id} did not run and its credits were returned; please try again."
        if job.state is JobState.POSTED:
            return f"Job #{job.id} finished anyway: its images are in the channel."
        return (
            f"Job #{job.id} is still running and its result will be posted in the channel; "
            "you are only charged if it posts images."
        )
