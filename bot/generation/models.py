"""What a generation job is: the request a member makes and the durable record of it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

PROMPT_MAX_LENGTH = 1500
MAX_OUTPUTS = 4
SEED_MAX = 2**32 - 1
CREDITS_PER_OUTPUT = 1
"""Flux Kontext Pro's documented price: the estimate reserved; settled from `creditCost`."""


class JobState(StrEnum):
    """Where a job is. Only `POSTED` and `FAILED` are final."""

    QUEUED = "queued"  # credits held, waiting for its turn (survives restarts, in order)
    RESERVED = "reserved"  # being sent to PixelDojo, not yet accepted by it
    SUBMITTED = "submitted"  # PixelDojo accepted it; the runner polls it
    COMPLETED = "completed"  # PixelDojo finished; images being downloaded and posted
    POSTED = "posted"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (JobState.POSTED, JobState.FAILED)


ACTIVE_STATES = (JobState.QUEUED, JobState.RESERVED, JobState.SUBMITTED, JobState.COMPLETED)


@dataclass(frozen=True)
class GenerationRequest:
    """A member's validated ask: who, where, and what to generate."""

    guild_id: int
    channel_id: int
    user_id: int
    prompt: str
    aspect_ratio: str
    num_outputs: int = 1
    seed: int | None = None
    parent_job_id: int | None = None
    role_ids: tuple[int, ...] = ()
    input_image_url: str | None = None
    """URL of the attachment Kontext edits (see `bot.generation.edit_input`); None: generate."""


@dataclass(frozen=True)
class Job:
    """One row of the `jobs` table."""

    id: int
    guild_id: int
    channel_id: int
    user_id: int
    prompt: str
    aspect_ratio: str
    num_outputs: int
    seed: int | None
    parent_job_id: int | None
    state: JobState
    status_message_id: int | None
    api_job_id: str | None
    status_url: str | None
    api_expires_at: float | None
    credits_reserved: int
    credits_charged: int | None
    error: str | None
    result_message_id: int | None
    polls: int
    created_at: float
    submitted_at: float | None
    completed_at: float | None
    finished_at: float | None
    input_image_url: str | None = None
    provider_charged: int | None = None
    """What PixelDojo charged for the job once it finished, even if the member was refunded
    afterwards (the images could not be delivered); None when it never finished."""

    @classmethod
    def from_row(cls, row: Any) -> Job:
        """Build from a row of named `JOB_COLUMNS`; columns with a default may be left out."""
        present = set(row.keys())
        data = {name: row[name] for name in JOB_COLUMNS if name in present}
        data["state"] = JobState(data["state"])
        return cls(**data)

    @property
    def nonce(self) -> str:
        """Discord message nonce for this job's result (≤25 chars), so a re-send is deduplicated."""
        return f"pdj-result-{self.id}"


JOB_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Job))
"""The `jobs` columns a `Job` is read from, in order: select these, never `*`."""
