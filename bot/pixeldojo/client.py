"""Async client for the PixelDojo REST API (Flux Kontext Pro).

The client wraps one ``httpx.AsyncClient`` and turns every failure into a typed
:class:`PixelDojoError` whose ``message`` is plain English and safe to show to a Discord user.

Retry policy, in short:

* ``submit`` is not idempotent (a POST the server processed is charged), so it is retried only
  when the request certainly did not create a job: 429, 503 and connection failures.
* Reads (``get_job``, ``download``, ``get_model_schema``) are retried on 429, 5xx and
  transport errors with capped exponential backoff and full jitter.

The bearer token is only ever sent to the configured API origin and never logged. Image
downloads go only to public addresses, checked at every redirect hop, and result images are
checked to decode before anyone sees them.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import math
import random
import socket
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import quote, unquote

import httpx

from bot import images

log = logging.getLogger(__name__)

MODEL_ID = "flux-kontext-pro"
ASPECT_RATIOS: tuple[str, ...] = ("1:1", "16:9", "9:16", "21:9", "9:21", "3:2", "2:3", "4:5", "5:4")
DEFAULT_BASE_URL = "https://pixeldojo.ai/api/v1"
DEFAULT_TIMEOUT = httpx.Timeout(30, connect=10)
DEFAULT_MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
# What one job's images may hold in memory together, and how many download at once.
DEFAULT_MAX_JOB_DOWNLOAD_BYTES = 100 * 1024 * 1024
DEFAULT_DOWNLOAD_CONCURRENCY = 4
# Images checked (decoded) at once across all jobs: each may take ~160 MB while it decodes.
_DECODE_CONCURRENCY = 2
# Most seconds one request may take end to end (connect to last body byte), on top of httpx's
# per-read timeout: a body trickling a byte at a time must not hold a poll slot for ever.
DEFAULT_DEADLINE = 30.0
DEFAULT_DOWNLOAD_DEADLINE = 60.0
# Status, submit and schema answers are a few hundred bytes; nothing sane comes near this.
DEFAULT_MAX_JSON_BYTES = 1024 * 1024
# Of an error response only the message is wanted.
_MAX_ERROR_BODY_BYTES = 64 * 1024
# Redirects followed per download; each hop's address is checked.
MAX_REDIRECTS = 5

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

# Transport errors raised before any byte of the request reached the server: a submit that
# failed this way certainly created no job, so it is safe to send again.
_UNSENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
_MAX_API_MESSAGE_CHARS = 300


class DeadlineExceeded(httpx.TimeoutException):
    """A request outlived its overall deadline (handled like any other httpx timeout)."""


class DownloadBudget:
    """Bytes a job's downloads may hold together; :meth:`take` raises past the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        """Count ``size`` more bytes, or raise :class:`ImageTooLarge` if they do not fit."""
        if self.used + size > self.limit:
            raise ImageTooLarge(
                "The generated images together are larger than the bot will download "
                f"({self.limit / (1024 * 1024):.1f} MiB)."
            )
        self.used += size

    def give_back(self, size: int) -> None:
        """Return bytes of an attempt that failed (and will be retried or dropped)."""
        self.used = max(0, self.used - size)


class _BodyRefused(Exception):
    """A response body was larger than allowed, or encoded in a way the client does not read."""


async def _read_body(
    response: httpx.Response, limit: int, on_chunk: Callable[[int], None] | None = None
) -> bytes:
    """Stream the decoded body, stopping as soon as it passes ``limit`` bytes.

    Decompression is bounded as well: a few KiB of gzip can inflate to gigabytes, so the
    inflater never produces more than the room left. ``on_chunk`` sees each chunk's size
    (a budget shared by several downloads raises from there). Raises :class:`_BodyRefused`.
    """
    if response.is_stream_consumed:
        # Built with its body already in memory (a mock transport): nothing left to stream.
        if len(response.content) > limit:
            raise _BodyRefused(f"body is over {limit} bytes")
        if on_chunk is not None:
            on_chunk(len(response.content))
        return response.content
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    inflater: Any = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip framing
    elif encoding not in ("", "identity"):
        raise _BodyRefused(f"unsupported Content-Encoding {encoding[:40]!r}")
    else:
        declared = _as_int(response.headers.get("Content-Length"))
        if declared is not None and declared > limit:
            raise _BodyRefused(f"body of {declared} bytes is over {limit}")
    buffer = bytearray()
    try:
        async for raw in response.aiter_raw():
            chunk = raw if inflater is None else inflater.decompress(raw, limit - len(buffer) + 1)
            buffer += chunk
            if len(buffer) > limit:
                raise _BodyRefused(f"body is over {limit} bytes")
            if on_chunk is not None:
                on_chunk(len(chunk))
        if inflater is not None:
            buffer += inflater.flush()
    except zlib.error as exc:
        raise _BodyRefused(f"body does not decompress as {encoding}") from exc
    if len(buffer) > limit:
        raise _BodyRefused(f"body is over {limit} bytes")
    return bytes(buffer)


def _loads(body: bytes) -> Any:
    """Parse JSON; ValueError for anything that is not (including absurd nesting)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


T = TypeVar("T")
SleepFunc = Callable[[float], Awaitable[object]]
# (host, port) -> the IP addresses it resolves to.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


def _package_version() -> str:
    try:
        return metadata.version("pixeldojo-bot")
    except metadata.PackageNotFoundError:
        return "dev"


DEFAULT_USER_AGENT = f"pixeldojo-bot/{_package_version()}"


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class PixelDojoError(Exception):
    """Base class for every PixelDojo failure.

    ``message`` is plain English, safe to show to users and never contains the API key.
    ``retryable`` is True when repeating the same call later is both safe and may succeed; for a
    submit it is False whenever the server may already have created (and charged) the job.
    ``api_message`` is the server's own wording (scrubbed of the key), for logs.
    """

    default_message: ClassVar[str] = "PixelDojo returned an unexpected error."
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        code: str | None = None,
        retryable: bool | None = None,
        api_message: str | None = None,
    ) -> None:
        self.message: str = message or self.default_message
        self.status: int | None = status
        self.code: str | None = code
        self.retryable: bool = self.default_retryable if retryable is None else retryable
        self.api_message: str | None = api_message
        super().__init__(self.message)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, status={self.status!r}, "
            f"code={self.code!r}, retryable={self.retryable!r})"
        )


class BadRequest(PixelDojoError):
    """The API rejected the request body (HTTP 400 or 422); ``details`` holds any field errors."""

    default_message = "PixelDojo rejected the request."

    def __init__(self, message: str | None = None, *, details: Any = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.details: Any = details


class AuthenticationError(PixelDojoError):
    """The API key was missing or refused (HTTP 401)."""

    default_message = "PixelDojo rejected the bot's API key. An operator needs to check it."


class InsufficientCredits(PixelDojoError):
    """The PixelDojo account cannot pay for the request (HTTP 402 or 403)."""

    default_message = "PixelDojo says the account is out of credits."


class NotFound(PixelDojoError):
    """The job, model or file does not exist (HTTP 404 or 410)."""

    default_message = "PixelDojo could not find what the bot asked for."


class ImageExpired(NotFound):
    """A result image could no longer be downloaded (HTTP 403, 404 or 410 on its URL)."""

    default_message = "The image link has expired."


class ImageTooLarge(PixelDojoError):
    """A result image was larger than the download cap."""

    default_message = "The generated image is too large for the bot to download."


class RateLimited(PixelDojoError):
    """Too many requests (HTTP 429); ``retry_after`` is the server's hint in seconds, if any."""

    default_message = "PixelDojo is busy with too many requests. Please try again in a moment."
    default_retryable = True

    def __init__(
        self, message: str | None = None, *, retry_after: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.retry_after: float | None = retry_after


class ServerError(PixelDojoError):
    """PixelDojo failed on its side (HTTP 5xx)."""

    default_message = "PixelDojo is having trouble right now. Please try again later."
    default_retryable = True


class NetworkError(PixelDojoError):
    """The request could not be completed: connection failure, reset or timeout."""

    default_message = "The bot could not reach PixelDojo. Please try again later."
    default_retryable = True


class MalformedResponse(PixelDojoError):
    """The API answered with something that is not the JSON shape it documents."""

    default_message = "PixelDojo sent a response the bot could not understand."


class NotAnImage(MalformedResponse):
    """A result file did not decode as a PNG, JPEG or WebP image."""

    default_message = "PixelDojo sent a file that is not a PNG, JPEG or WebP image."


class UnsafeLink(PixelDojoError):
    """A result link (or a redirect on the way) led to a loopback, private or link-local host."""

    default_message = (
        "PixelDojo's image link led to a private network address, so the bot did not follow it."
    )


# --------------------------------------------------------------------------------------------
# Value objects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmittedJob:
    """A job accepted by ``POST /models/{id}/run``."""

    job_id: str
    status_url: str
    credit_cost: int | None
    credits_remaining: int | None
    expires_at: datetime | None


@dataclass(frozen=True)
class JobState:
    """One poll of a job.

    ``status`` is the raw status, lower-cased. A completed state may carry no image URL (the API
    misbehaving); it is returned as is and the caller decides how to treat it.
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
            error=_error_text(payload.get("error")),
            credit_cost=_as_credit_cost(payload.get("creditCost")),
            expires_at=_as_datetime(payload.get("expiresAt")),
        )


# --------------------------------------------------------------------------------------------
# Parsing helpers
# --------------------------------------------------------------------------------------------


def _as_int(value: Any) -> int | None:
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
    cost = _as_int(value)
    if cost is not None and 0 <= cost <= CREDIT_COST_MAX:
        return cost
    if value is not None:
        # Numbers only: a string is the server's text and could echo anything (even our key).
        shown = value if isinstance(value, int | float) else type(value).__name__
        log.warning("ignoring PixelDojo's creditCost %.40s: not a credit amount", shown)
    return None


def _as_datetime(value: Any) -> datetime | None:
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


def _error_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, Mapping):
        for key in ("message", "detail", "code"):
            text = value.get(key)
            if isinstance(text, str) and text.strip():
                return text.strip()
    return None


def _parse_error_body(body: bytes) -> tuple[str | None, str | None, Any]:
    """Return (code, message, details) from either documented error shape, or Nones."""
    try:
        data = _loads(body)
    except ValueError:
        return None, None, None
    if not isinstance(data, Mapping):
        return None, None, None
    code: Any = None
    message: str | None = None
    details: Any = None
    error = data.get("error")
    if isinstance(error, Mapping):
        code = error.get("code")
        message = _error_text(error)
        details = error.get("details")
    elif isinstance(error, str):
        message = error.strip() or None
    if message is None:
        message = _error_text({"message": data.get("message"), "detail": data.get("detail")})
    code = code if code is not None else data.get("code")
    if details is None:
        details = data.get("details", data.get("errors"))
    return (str(code) if code is not None else None), message, details


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def parse_rate_limit_reset(value: str | None) -> float | None:
    """Seconds until an ``X-RateLimit-Reset`` moment.

    The header is used both as delta-seconds and as a Unix timestamp (seconds or milliseconds)
    by different APIs; large numbers can only be timestamps.
    """
    if value is None or not value.strip():
        return None
    try:
        number = float(value.strip())
    except ValueError:
        when = _as_datetime(value)
        return None if when is None else max(0.0, (when - datetime.now(UTC)).total_seconds())
    if not math.isfinite(number):
        return None
    if number > 1e12:
        number = number / 1000 - time.time()
    elif number > 1e9:
        number = number - time.time()
    return max(0.0, number)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    port = url.port if url.port is not None else {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, port


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for a globally routable unicast address: not loopback, private, link-local,
    shared, reserved or multicast, also when an IPv4 address hides inside an IPv6 one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
        if embedded is not None and not is_public_address(embedded):
            return False
        if address.is_site_local or address.scope_id:
            return False
    return address.is_global and not (address.is_multicast or address.is_reserved)


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


class RequestBudget:
    """Spaces API requests to at most `per_minute` a minute, bursting up to `burst` at once.

    PixelDojo reports per-key rate limits (10-60 requests a minute are documented), and a
    busy bot would otherwise learn them from 429s. This is the generic cell rate algorithm:
    each request books the next slot synchronously, so concurrent callers queue fairly.
    """

    def __init__(
        self,
        per_minute: float,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.interval = 60.0 / per_minute
        self.burst = burst if burst is not None else max(1, int(per_minute // 6))
        self.clock = clock
        self._theoretical_arrival = 0.0

    def reserve(self) -> float:
        """Book a slot; returns how many seconds to wait before sending."""
        now = self.clock()
        arrival = max(self._theoretical_arrival, now)
        self._theoretical_arrival = arrival + self.interval
        return max(0.0, arrival - now - (self.burst - 1) * self.interval)


class PixelDojoClient:
    """Async PixelDojo API client holding one HTTP connection pool for its lifetime.

    Use as ``async with PixelDojoClient(key) as client: ...`` or call :meth:`aclose`.
    """

    last_credits_remaining: int | None

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        max_retry_after: float = 60,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: SleepFunc = asyncio.sleep,
        user_agent: str = DEFAULT_USER_AGENT,
        requests_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        deadline: float = DEFAULT_DEADLINE,
        download_deadline: float = DEFAULT_DOWNLOAD_DEADLINE,
        max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
        trusted_origins: Iterable[str] = (),
        resolve: Resolver = _resolve,
        max_job_download_bytes: int = DEFAULT_MAX_JOB_DOWNLOAD_BYTES,
        download_concurrency: int = DEFAULT_DOWNLOAD_CONCURRENCY,
    ) -> None:
        """``timeout`` is httpx's, per connect and per read; ``deadline`` and
        ``download_deadline`` bound each API request and each image download as a whole.
        ``clock`` (monotonic seconds) times the request budget and rate-limit gate; tests
        pass one that only their fake ``sleep`` advances.

        Image downloads go only to public addresses (every redirect hop is resolved with
        ``resolve`` and checked), except on the API origin and ``trusted_origins``
        (``scheme://host[:port]``): origins the operator configured, such as a sandbox or test
        server on loopback. :meth:`download_results` downloads at most
        ``download_concurrency`` images of a job at once, within ``max_job_download_bytes``."""
        key = (api_key or "").strip()
        if not key:
            raise ValueError("api_key must be a non-empty string")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        base = httpx.URL(base_url.rstrip("/"))
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError("base_url must be an absolute http(s) URL")
        self._api_key = key
        self._base_url = str(base)
        self._base = base
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        self._clock = clock
        self._deadline = deadline
        self._download_deadline = download_deadline
        self._max_json_bytes = max_json_bytes
        self._resolve = resolve
        self._trusted = {_origin(base)} | {_origin(httpx.URL(o)) for o in trusted_origins}
        self._max_job_download_bytes = max_job_download_bytes
        self._download_concurrency = max(1, download_concurrency)
        self._decoding = asyncio.Semaphore(_DECODE_CONCURRENCY)
        self._warned_foreign_status_url = False
        # Monotonic deadline before which no API request is sent (rate-limit gate).
        self._gate_until = 0.0
        self._budget = (
            RequestBudget(requests_per_minute, clock=clock) if requests_per_minute else None
        )
        self.last_credits_remaining = None
        self._http = httpx.AsyncClient(
            # Only encodings _read_body can inflate within its cap.
            headers={
                "Authorization": f"Bearer {key}",
                "User-Agent": user_agent,
                "Accept-Encoding": "gzip",
            },
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API base URL, without a trailing slash."""
        return self._base_url

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has run."""
        return self._http.is_closed

    async def aclose(self) -> None:
        """Close the underlying connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"PixelDojoClient(base_url={self._base_url!r})"

    # -- public API --------------------------------------------------------------------------

    async def submit(
        self,
        *,
        prompt: str,
        aspect_ratio: str,
        num_outputs: int = 1,
        seed: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> SubmittedJob:
        """Start a Flux Kontext Pro generation and return the accepted job.

        Only documented fields are sent; ``extra`` adds fields discovered from the model schema
        (for example an input image URL) and may not override the documented ones.
        """
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt must be a non-empty string")
        if aspect_ratio not in ASPECT_RATIOS:
            raise ValueError(f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}")
        if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
            raise ValueError("num_outputs must be a positive integer")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError("seed must be a non-negative integer")
        body: dict[str, Any] = {
            "prompt": prompt,
            "aspect_ratio": aspect_ratio,
            "num_outputs": num_outputs,
        }
        if seed is not None:
            body["seed"] = seed
        if extra:
            clash = sorted(set(extra) & {"prompt", "aspect_ratio", "num_outputs", "seed"})
            if clash:
                raise ValueError(f"extra may not override documented fields: {', '.join(clash)}")
            body.update(extra)

        url = f"{self._base_url}/models/{MODEL_ID}/run"
        data = await self._execute(
            lambda: self._http.build_request(
                "POST", url, json=body, headers={"Accept": "application/json"}
            ),
            idempotent=False,
            gated=True,
            target="model",
            consume=self._read_json,
        )
        if not isinstance(data, Mapping):
            raise MalformedResponse(api_message="submit response is not a JSON object")
        raw_id = data.get("jobId") or data.get("job_id") or data.get("id")
        if not isinstance(raw_id, str | int) or isinstance(raw_id, bool) or not str(raw_id):
            raise MalformedResponse(api_message="submit response has no jobId")
        job_id = str(raw_id)
        # The job is polled by its id, whatever statusUrl says: a statusUrl naming another
        # origin or another job must never decide which job's images a member gets.
        status_url = self._job_url(job_id)
        raw_status_url = data.get("statusUrl") or data.get("status_url")
        if isinstance(raw_status_url, str) and raw_status_url.strip():
            self._note_status_url(self._base.join(raw_status_url.strip()), status_url)
        credits_remaining = _as_int(data.get("creditsRemaining"))
        if credits_remaining is not None:
            self.last_credits_remaining = credits_remaining
        job = SubmittedJob(
            job_id=job_id,
            status_url=status_url,
            credit_cost=_as_int(data.get("creditCost")),
            credits_remaining=credits_remaining,
            expires_at=_as_datetime(data.get("expiresAt")),
        )
        log.info("PixelDojo accepted job %s (cost %s)", job.job_id, job.credit_cost)
        return job

    async def get_job(self, job: SubmittedJob | str) -> JobState:
        """Poll a job (``GET {base_url}/jobs/{job_id}``) by :class:`SubmittedJob` or job id.

        The job id is the ``jobId`` PixelDojo returned at submit. A URL is accepted only in the
        form this client polls (``{base_url}/jobs/{job_id}``): the id is never guessed from
        another URL, and nothing but the API origin ever receives the bearer token.
        """
        job_id = self._job_id_of(job)
        url = self._job_url(job_id)
        data = await self._execute(
            lambda: self._http.build_request("GET", url, headers={"Accept": "application/json"}),
            idempotent=True,
            gated=True,
            target="job",
            consume=self._read_json,
        )
        state = JobState.from_payload(data, job_id=job_id, base_url=url)
        if state.error:
            state = replace(state, error=self._scrub(state.error))
        return state

    async def download(
        self,
        url: str,
        *,
        max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        budget: DownloadBudget | None = None,
    ) -> tuple[bytes, str | None]:
        """Download a result image and return ``(bytes, content_type)``, bytes unchecked.

        Redirects are followed by hand, at most :data:`MAX_REDIRECTS`, and every hop outside
        the trusted origins must resolve to public addresses only (:class:`UnsafeLink`); the
        connection then goes to the address that was checked. The Authorization header is sent
        only to the API origin. Raises :class:`ImageExpired` when the link is gone and
        :class:`ImageTooLarge` past ``max_bytes`` or past what is left of ``budget``.
        """
        unusable = MalformedResponse("PixelDojo returned an image link the bot cannot use.")
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL:
            raise unusable from None
        if target.scheme not in ("http", "https") or not target.host:
            raise unusable

        async def consume(response: httpx.Response) -> tuple[bytes, str | None]:
            taken = 0

            def count(size: int) -> None:
                nonlocal taken
                if budget is not None:
                    budget.take(size)
                taken += size

            try:
                data = await _read_body(response, max_bytes, on_chunk=count)
            except BaseException as exc:
                if budget is not None:
                    budget.give_back(taken)
                if isinstance(exc, _BodyRefused):
                    raise self._too_large(max_bytes) from None
                raise
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            return data, content_type or None

        return await self._execute(
            lambda: self._image_request(target),
            idempotent=True,
            gated=self._is_api_origin(target),
            target="image",
            consume=consume,
            send=self._send_following_redirects,
            deadline=self._download_deadline,
        )

    async def download_results(
        self, urls: Sequence[str], *, limit: int | None = None
    ) -> list[tuple[bytes, str]]:
        """Download a finished job's images, each checked to decode as PNG, JPEG or WebP.

        Takes at most ``limit`` URLs (the outputs paid for), downloads at most
        ``download_concurrency`` at once and within ``max_job_download_bytes`` together.
        Returns ``(bytes, mime_type)`` in order; raises :class:`NotAnImage` for a file that is
        not an image, :class:`ImageTooLarge` for too many pixels or bytes. The first failure
        cancels the other downloads.
        """
        wanted = list(urls if limit is None else urls[: max(0, limit)])
        if len(wanted) < len(urls):
            log.warning(
                "PixelDojo listed %d images for a job of %d; taking the first %d",
                len(urls),
                limit,
                len(wanted),
            )
        budget = DownloadBudget(self._max_job_download_bytes)
        slots = asyncio.Semaphore(self._download_concurrency)

        async def one(url: str) -> tuple[bytes, str]:
            async with slots:
                data, _ = await self.download(url, budget=budget)
            try:
                async with self._decoding:
                    return data, await asyncio.to_thread(images.verify_image, data)
            except images.TooManyPixels as exc:
                log.warning("PixelDojo result %s refused: %s", _for_log(url), exc.detail)
                raise ImageTooLarge(str(exc)) from None
            except images.UnusableImage as exc:
                log.warning("PixelDojo result %s is not usable: %s", _for_log(url), exc.detail)
                raise NotAnImage(str(exc)) from None

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(url)) for url in wanted]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return [task.result() for task in tasks]

    async def get_model_schema(self, model: str = MODEL_ID) -> dict[str, Any]:
        """Return the request JSON Schema of ``model`` (``GET /models/{id}/schema``)."""
        url = f"{self._base_url}/models/{quote(model, safe='')}/schema"
        data = await self._get_json(url, target="model")
        if isinstance(data, Mapping) and "properties" not in data:
            inner = data.get("schema")
            if isinstance(inner, Mapping):
                data = inner
        if not isinstance(data, Mapping):
            raise MalformedResponse(api_message="model schema is not a JSON object", retryable=True)
        return dict(data)

    # -- internals ---------------------------------------------------------------------------

    def _job_url(self, job_id: str) -> str:
        return f"{self._base_url}/jobs/{quote(job_id, safe='')}"

    def _is_api_origin(self, url: httpx.URL) -> bool:
        return _origin(url) == _origin(self._base)

    def _image_request(self, url: httpx.URL, address: str | None = None) -> httpx.Request:
        """A GET for ``url``; with ``address``, connected to that IP under the URL's name."""
        if address is None:
            request = self._http.build_request("GET", url, headers={"Accept": "image/*"})
        else:
            request = self._http.build_request(
                "GET",
                url.copy_with(host=address),
                headers={"Accept": "image/*", "Host": url.netloc.decode("ascii")},
                extensions={"sni_hostname": url.raw_host.decode("ascii")},
            )
        if not self._is_api_origin(url):
            del request.headers["Authorization"]
        return request

    async def _send_following_redirects(self, request: httpx.Request) -> httpx.Response:
        unusable = MalformedResponse("PixelDojo's image link redirects somewhere unusable.")
        url = request.url
        for _ in range(MAX_REDIRECTS + 1):
            address = await self._checked_address(url)
            try:
                # httpx parses Location even when not following it, and may raise doing so.
                response = await self._http.send(self._image_request(url, address), stream=True)
            except httpx.InvalidURL:
                raise unusable from None
            location = response.headers.get("Location") if response.is_redirect else None
            if location is None:
                return response
            await response.aclose()
            try:
                url = url.join(location.strip())
            except httpx.InvalidURL:
                raise unusable from None
            if url.scheme not in ("http", "https") or not url.host:
                raise unusable
        raise MalformedResponse("PixelDojo's image link redirects too many times.")

    async def _checked_address(self, url: httpx.URL) -> str | None:
        """The address to connect to for ``url``, checked to be public; None to let httpx
        connect as usual (a trusted origin, or a literal address already checked)."""
        if _origin(url) in self._trusted:
            return None
        try:
            literal = ipaddress.ip_address(url.host)
        except ValueError:
            literal = None
        if literal is not None:
            self._refuse_unless_public(url, [literal])
            return None
        try:
            port = _origin(url)[2] or 0
            found = [ipaddress.ip_address(a) for a in await self._resolve(url.host, port)]
        except (OSError, ValueError) as exc:
            raise httpx.ConnectError(f"cannot resolve {url.host}") from exc
        if not found:
            raise httpx.ConnectError(f"{url.host} has no address")
        self._refuse_unless_public(url, found)
        # IPv4 first: without happy eyeballs, an unreachable IPv6 route would fail outright.
        return str(min(found, key=lambda a: a.version))

    @staticmethod
    def _refuse_unless_public(
        url: httpx.URL, addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address]
    ) -> None:
        refused = [a for a in addresses if not is_public_address(a)]
        if refused:
            log.warning(
                "PixelDojo image link leads to %s (%s): not a public address, not followed",
                url.host,
                ", ".join(map(str, refused)),
            )
            raise UnsafeLink(api_message=f"{url.host} resolves to {refused[0]}")

    def _job_id_of(self, job: SubmittedJob | str) -> str:
        if isinstance(job, SubmittedJob):
            job_id = job.job_id
        elif job.startswith(("http://", "https://")):
            url = httpx.URL(job)
            prefix = f"{self._base.path.rstrip('/')}/jobs/"
            segment = url.path[len(prefix) :] if url.path.startswith(prefix) else ""
            if not self._is_api_origin(url) or not segment or "/" in segment:
                raise ValueError("poll a job by the jobId PixelDojo returned, not by a URL")
            job_id = unquote(segment)
        else:
            job_id = job
        if not job_id:
            raise ValueError("a job id is required")
        return job_id

    def _note_status_url(self, advertised: httpx.URL, polled: str) -> None:
        if str(advertised) == polled or self._warned_foreign_status_url:
            return
        self._warned_foreign_status_url = True
        log.warning(
            "PixelDojo returned a statusUrl on %s (%s://%s) other than %s/jobs/{jobId}; "
            "jobs are polled there by their jobId instead",
            "the API origin" if self._is_api_origin(advertised) else "another origin",
            advertised.scheme,
            advertised.host,
            self._base_url,
        )

    async def _get_json(self, url: str, *, target: str) -> Any:
        return await self._execute(
            lambda: self._http.build_request("GET", url, headers={"Accept": "application/json"}),
            idempotent=True,
            gated=True,
            target=target,
            consume=self._read_json,
        )

    async def _read_json(self, response: httpx.Response) -> Any:
        try:
            return _loads(await _read_body(response, self._max_json_bytes))
        except (_BodyRefused, ValueError) as exc:
            reason = str(exc) if isinstance(exc, _BodyRefused) else "body is not JSON"
            raise MalformedResponse(
                api_message=f"HTTP {response.status_code} {reason}",
                status=response.status_code,
                retryable=response.request.method == "GET",
            ) from None

    @staticmethod
    async def _read_error_body(response: httpx.Response) -> bytes:
        try:
            return await _read_body(response, _MAX_ERROR_BODY_BYTES)
        except _BodyRefused:
            return b""  # the status code alone says enough

    @staticmethod
    def _too_large(max_bytes: int) -> ImageTooLarge:
        return ImageTooLarge(
            "The generated image is larger than the bot will download "
            f"({max_bytes / (1024 * 1024):.1f} MiB)."
        )

    def _scrub(self, text: str | None) -> str | None:
        if text is None:
            return None
        text = text.replace(self._api_key, "[redacted]")
        if len(text) > _MAX_API_MESSAGE_CHARS:
            text = text[: _MAX_API_MESSAGE_CHARS - 1] + "…"
        return text

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)

    async def _wait_for_rate_gate(self, method: str, path: str) -> None:
        deadline = self._gate_until
        delay = deadline - self._clock()
        if delay <= 0:
            return
        log.info(
            "PixelDojo rate limit: %s %s waits %.2fs for the window to reset", method, path, delay
        )
        await self._sleep(delay)
        # Clear only if nobody extended it meanwhile; with a real clock it has passed anyway.
        if self._gate_until == deadline:
            self._gate_until = 0.0

    def _close_gate_for(self, seconds: float) -> float:
        deadline = self._clock() + min(seconds, self._max_retry_after)
        self._gate_until = max(self._gate_until, deadline)
        return deadline

    def _observe_headers(self, response: httpx.Response) -> None:
        headers = response.headers
        credits = _as_int(headers.get("X-Credits-Remaining"))
        if credits is not None:
            self.last_credits_remaining = credits
        remaining = _as_int(headers.get("X-RateLimit-Remaining"))
        if remaining is not None and remaining <= 0 and response.status_code != 429:
            reset = parse_rate_limit_reset(headers.get("X-RateLimit-Reset"))
            if reset:
                self._close_gate_for(reset)

    def _error_from_response(
        self, response: httpx.Response, body: bytes, target: str
    ) -> PixelDojoError:
        status = response.status_code
        code, raw_message, details = _parse_error_body(body)
        api_message = self._scrub(raw_message)
        common: dict[str, Any] = {"status": status, "code": code, "api_message": api_message}
        if target == "image" and status in (403, 404, 410):
            return ImageExpired(**common)
        if status in (400, 422):
            message = (
                f"PixelDojo rejected the request: {api_message}"
                if api_message
                else BadRequest.default_message
            )
            return BadRequest(message, details=details, **common)
        if status == 401:
            return AuthenticationError(**common)
        if status in (402, 403):
            return InsufficientCredits(**common)
        if status in (404, 410):
            message = {
                "job": "PixelDojo has no record of that job (it may have expired).",
                "model": "PixelDojo does not offer that model.",
            }.get(target)
            return NotFound(message, **common)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is None:
                retry_after = parse_rate_limit_reset(response.headers.get("X-RateLimit-Reset"))
            return RateLimited(retry_after=retry_after, **common)
        if status >= 500:
            return ServerError(
                f"PixelDojo is having trouble right now (HTTP {status}). Please try again later.",
                **common,
            )
        return PixelDojoError(f"PixelDojo refused the request (HTTP {status}).", **common)

    def _log_retry(self, method: str, path: str, reason: str, attempt: int, delay: float) -> None:
        log.warning(
            "PixelDojo %s %s failed (%s); attempt %d/%d, retrying in %.2fs",
            method,
            path,
            reason,
            attempt,
            self._max_attempts,
            delay,
        )

    async def _execute(
        self,
        build: Callable[[], httpx.Request],
        *,
        idempotent: bool,
        gated: bool,
        target: str,
        consume: Callable[[httpx.Response], Awaitable[T]],
        send: Callable[[httpx.Request], Awaitable[httpx.Response]] | None = None,
        deadline: float | None = None,
    ) -> T:
        """Send a request with the retry policy and hand a 2xx response to ``consume``.

        ``idempotent=False`` (submit) retries only outcomes that certainly created nothing.
        ``send`` replaces ``httpx.AsyncClient.send`` (downloads follow redirects themselves).
        Each attempt, body included, must end within ``deadline`` seconds (default: the
        client's); one that does not is a timeout like httpx's own.
        """
        limit = self._deadline if deadline is None else deadline
        attempt = 0
        while True:
            attempt += 1
            request = build()
            method, path = request.method, request.url.path
            if gated:
                if self._budget is not None:
                    wait = self._budget.reserve()
                    if wait > 0:
                        await self._sleep(wait)
                await self._wait_for_rate_gate(method, path)
            started = time.monotonic()
            window = asyncio.timeout(limit)
            try:
                async with window:
                    if send is None:
                        response = await self._http.send(request, stream=True)
                    else:
                        response = await send(request)
                    try:
                        if gated:
                            self._observe_headers(response)
                        log.debug(
                            "PixelDojo %s %s -> %d in %.2fs",
                            method,
                            path,
                            response.status_code,
                            time.monotonic() - started,
                        )
                        if response.is_success:
                            return await consume(response)
                        body = await self._read_error_body(response)
                    finally:
                        await response.aclose()
            except (httpx.TransportError, TimeoutError) as caught:
                if isinstance(caught, httpx.TransportError):
                    exc = caught
                elif window.expired():
                    exc = DeadlineExceeded(f"no complete answer within {limit:g}s", request=request)
                else:
                    raise
                safe = idempotent or isinstance(exc, _UNSENT_ERRORS)
                if not safe or attempt >= self._max_attempts:
                    raise self._network_error(exc, target, safe) from exc
                delay = self._backoff(attempt)
                self._log_retry(method, path, type(exc).__name__, attempt, delay)
                await self._sleep(delay)
                continue

            error = self._error_from_response(response, body, target)
            status = response.status_code
            if status == 429 or status == 503:
                retry = True
            else:
                retry = idempotent and status >= 500
            if not idempotent and status >= 500 and status != 503:
                # The server may have created (and charged) the job before failing.
                error.retryable = False
            if not retry or attempt >= self._max_attempts:
                raise error
            if isinstance(error, RateLimited) and error.retry_after is not None:
                delay = min(error.retry_after, self._max_retry_after)
                deadline = self._close_gate_for(delay) if gated else None
            else:
                delay = self._backoff(attempt)
                deadline = None
            self._log_retry(method, path, f"HTTP {status}", attempt, delay)
            await self._sleep(delay)
            if deadline is not None and self._gate_until == deadline:
                self._gate_until = 0.0

    def _network_error(
        self, exc: httpx.TransportError, target: str, retryable: bool
    ) -> NetworkError:
        what = "download the image" if target == "image" else "reach PixelDojo"
        if isinstance(exc, httpx.TimeoutException):
            message = (
                "PixelDojo did not answer in time."
                if target != "image"
                else "Downloading the image timed out."
            )
        else:
            message = f"The bot could not {what}. Please try again later."
        # httpx exception text can include URLs; keep only the class name for logs.
        return NetworkError(message, retryable=retryable, api_message=type(exc).__name__)


def _for_log(url: str) -> str:
    """A result URL without its query string (signed links carry credentials there)."""
    return url.split("?", 1)[0][:200]
