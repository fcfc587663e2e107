"""What PixelDojo's answers mean: the model's options, accepted jobs and job statuses.

Payload parsing (image URLs, credit costs, datetimes, error text) trusts nothing: a body without
a job id or status is refused, and a credit cost that cannot be a charge, a link that is not a URL
or a date that does not parse is dropped rather than passed on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import quote

import httpx

from bot.pixeldojo.errors import MalformedResponse

log = logging.getLogger(__name__)

MODEL_ID = "flux-kontext-pro"
ASPECT_RATIOS: tuple[str, ...] = ("1:1", "16:9", "9:16", "21:9", "9:21", "3:2", "2:3", "4:5", "5:4")

COMPLETED_STATUSES = frozenset({"completed", "complete", "succeeded", "success", "done"})
FAILED_STATUSES = frozenset(
    {
        "failed",
        "failure",
        "error",
        "errored",
        "canceled",
        "cancelled",
        "expired",
        "rejected",
        "timeout",
        "timed_out",
    }
)


def job_url(base_url: str, job_id: str) -> str:
    """Where a job is polled: ``{base_url}/jobs/{job_id}``, the id percent-encoded."""
    return f"{base_url}/jobs/{quote(job_id, safe='')}"


@dataclass(frozen=True)
class SubmittedJob:
    """A job accepted by ``POST /models/{id}/run``."""

    job_id: str
    status_url: str
    credit_cost: int | None
    credits_remaining: int | None
    expires_at: datetime | None

    @classmethod
    def from_payload(cls, payload: Any, *, base_url: str) -> Self:
        """Parse a submit answer; the job is polled at :func:`job_url` of its ``jobId``,
        whatever ``statusUrl`` says. Raises :class:`MalformedResponse` without a ``jobId``."""
        if not isinstance(payload, Mapping):
            raise MalformedResponse(api_message="submit response is not a JSON object")
        raw_id = payload.get("jobId") or payload.get("job_id") or payload.get("id")
        if not isinstance(raw_id, str | int) or isinstance(raw_id, bool) or not str(raw_id):
            raise MalformedResponse(api_message="submit response has no jobId")
        job_id = str(raw_id)
        return cls(
            job_id=job_id,
            status_url=job_url(base_url, job_id),
            credit_cost=_as_credit_cost(payload.get("creditCost")),
            credits_remaining=as_int(payload.get("creditsRemaining")),
            expires_at=as_datetime(payload.get("expiresAt")),
        )


@dataclass(frozen=True)
class JobStatus:
    """One poll of a job: what PixelDojo says about it (not the bot's own job state, which is
    ``bot.generation.models.JobState``).

    ``status`` is the raw status, lower-cased. A completed status may carry no image URL (the
    API misbehaving); it is returned as is and the caller decides how to treat it.
    """

    job_id: str
    status: str
    image_urls: tuple[str, ...]
    error: str | None
    credit_cost: int | None
    expires_at: datetime | None

    @property
    def is_completed(self) -> bool:
        """True when the job finished successfully."""
        return self.status in COMPLETED_STATUSES

    @property
    def is_failed(self) -> bool:
        """True when the job ended without a result (failed, cancelled, expired...)."""
        return self.status in FAILED_STATUSES

    @property
    def is_running(self) -> bool:
        """True for every other status, including ones this client does not know."""
        return not (self.is_completed or self.is_failed)

    @classmethod
    def from_payload(
        cls, payload: Any, *, job_id: str | None = None, base_url: str | None = None
    ) -> Self:
        """Parse a job-status body; relative image URLs are resolved against ``base_url``.

        Raises :class:`MalformedResponse` when the body is not an object with a status.
        """
        if not isinstance(payload, Mapping):
            raise MalformedResponse(api_message="job status is not a JSON object", retryable=True)
        raw_status = payload.get("status")
        if not isinstance(raw_status, str) or not raw_status.strip():
            raise MalformedResponse(api_message="job status has no 'status'", retryable=True)
        payload_id = payload.get("jobId") or payload.get("job_id") or payload.get("id")
        resolved_id = str(payload_id) if payload_id else (job_id or "")
        urls = _extract_image_urls(payload)
        if base_url:
            base = httpx.URL(base_url)
            urls = [str(joined) for joined in (_join(base, url) for url in urls) if joined]
        return cls(
            job_id=resolved_id,
            status=raw_status.strip().lower(),
            image_urls=tuple(urls),
            error=error_text(payload.get("error")),
            credit_cost=_as_credit_cost(payload.get("creditCost")),
            expires_at=as_datetime(payload.get("expiresAt")),
        )


# Parsing helpers: each returns None for anything it does not recognise.


def as_int(value: Any) -> int | None:
    """A whole number from an int, a float without fraction or a numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if number.is_integer() else None
    return None


CREDIT_COST_MAX = 1_000_000
"""More than any job costs: a larger ``creditCost`` is nonsense, not a charge."""


def _as_credit_cost(value: Any) -> int | None:
    """A ``creditCost`` that can be a charge (a whole number, 0 to ``CREDIT_COST_MAX``), else
    None, as if the server had sent none (negative, huge, fractional, NaN, a bool, a word)."""
    cost = as_int(value)
    if cost is not None and 0 <= cost <= CREDIT_COST_MAX:
        return cost
    if value is not None:
        # Numbers only: a string is the server's text and could echo anything (even our key).
        shown = value if isinstance(value, int | float) else type(value).__name__
        log.warning("ignoring PixelDojo's creditCost %.40s: not a credit amount", shown)
    return None


def as_datetime(value: Any) -> datetime | None:
    """An aware datetime from ISO 8601 text or epoch seconds/milliseconds, else None."""
    parsed: datetime | None = None
    if isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        # Some APIs send epoch milliseconds; anything past year ~33658 in seconds is ms.
        seconds = value / 1000 if value > 1e12 else value
        try:
            parsed = datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if parsed is not None and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _url_of(item: Any) -> str | None:
    if isinstance(item, str):
        return item.strip() or None
    if isinstance(item, Mapping):
        url = item.get("url")
        if isinstance(url, str) and url.strip():
            return url.strip()
    return None


def _extract_image_urls(payload: Mapping[str, Any]) -> list[str]:
    """Collect result URLs from every shape public clients have seen, without duplicates."""
    candidates: list[Any] = []
    output = payload.get("output")
    if isinstance(output, Mapping):
        images = output.get("images")
        if isinstance(images, list):
            candidates.extend(images)
        candidates.append(output.get("image"))
    elif isinstance(output, list):
        candidates.extend(output)
    elif isinstance(output, str):
        candidates.append(output)
    assets = payload.get("assets")
    if isinstance(assets, list):
        candidates.extend(assets)
    images = payload.get("images")
    if isinstance(images, list):
        candidates.extend(images)
    urls: list[str] = []
    for candidate in candidates:
        url = _url_of(candidate)
        if url and url not in urls:
            urls.append(url)
    return urls


def _join(base: httpx.URL, link: str) -> httpx.URL | None:
    """``link`` resolved against ``base``, or None when it does not parse as a URL."""
    try:
        return base.join(link)
    except httpx.InvalidURL:
        log.warning("ignoring an image link from PixelDojo that is not a URL: %.80r", link)
        return None


def error_text(value: Any) -> str | None:
    """The text of an ``error`` field: a string, or an object's message, detail or code."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, Mapping):
        for key in ("message", "detail", "code"):
            text = value.get(key)
            if isinstance(text, str) and text.strip():
                return text.strip()
    return None
