"""Sending PixelDojo API requests with retries, rate limits, deadlines and capped bodies.

Covers Retry-After and X-RateLimit-*, the request budget and rate gate, a deadline per request
(body included), and response bodies streamed within a cap, decompression included.

Retry policy, in short:

* A request that is not idempotent (a submit: a POST the server processed is charged) is
  retried only when it certainly created nothing: 429, 503 and connection failures.
* Reads are retried on 429, 5xx and transport errors with capped exponential backoff and full
  jitter; a 429's Retry-After (or X-RateLimit-Reset) is waited out instead, and closes a gate
  that holds every other API request until then.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from bot.pixeldojo.errors import (
    AuthenticationError,
    BadRequest,
    ImageExpired,
    InsufficientCredits,
    MalformedResponse,
    NetworkError,
    NotFound,
    PixelDojoError,
    RateLimited,
    ServerError,
)
from bot.pixeldojo.models import as_datetime, as_int, error_text

log = logging.getLogger(__name__)

# Most seconds one request may take end to end (connect to last body byte), on top of httpx's
# per-read timeout: a body trickling a byte at a time must not hold a poll slot for ever.
DEFAULT_DEADLINE = 30.0
# Status, submit and schema answers are a few hundred bytes; nothing sane comes near this.
DEFAULT_MAX_JSON_BYTES = 1024 * 1024
# Of an error response only the message is wanted.
_MAX_ERROR_BODY_BYTES = 64 * 1024

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


class BodyRefused(Exception):
    """A response body was larger than allowed, or encoded in a way the client does not read."""


async def read_body(
    response: httpx.Response, limit: int, on_chunk: Callable[[int], None] | None = None
) -> bytes:
    """Stream the decoded body, stopping as soon as it passes ``limit`` bytes.

    Decompression is bounded as well: a few KiB of gzip can inflate to gigabytes, so the
    inflater never produces more than the room left. ``on_chunk`` sees each chunk's size
    (a budget shared by several downloads raises from there). Raises :class:`BodyRefused`.
    """
    if response.is_stream_consumed:
        # Built with its body already in memory (a mock transport): nothing left to stream.
        if len(response.content) > limit:
            raise BodyRefused(f"body is over {limit} bytes")
        if on_chunk is not None:
            on_chunk(len(response.content))
        return response.content
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    inflater: Any = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip framing
    elif encoding not in ("", "identity"):
        raise BodyRefused(f"unsupported Content-Encoding {encoding[:40]!r}")
    else:
        declared = as_int(response.headers.get("Content-Length"))
        if declared is not None and declared > limit:
            raise BodyRefused(f"body of {declared} bytes is over {limit}")
    buffer = bytearray()
    try:
        async for raw in response.aiter_raw():
            chunk = raw if inflater is None else inflater.decompress(raw, limit - len(buffer) + 1)
            buffer += chunk
            if len(buffer) > limit:
                raise BodyRefused(f"body is over {limit} bytes")
            if on_chunk is not None:
                on_chunk(len(chunk))
        if inflater is not None:
            buffer += inflater.flush()
    except zlib.error as exc:
        raise BodyRefused(f"body does not decompress as {encoding}") from exc
    if len(buffer) > limit:
        raise BodyRefused(f"body is over {limit} bytes")
    return bytes(buffer)


def loads(body: bytes) -> Any:
    """Parse JSON; ValueError for anything that is not (including absurd nesting)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


T = TypeVar("T")
SleepFunc = Callable[[float], Awaitable[object]]


def parse_error_body(body: bytes) -> tuple[str | None, str | None, Any]:
    """Return (code, message, details) from either documented error shape, or Nones."""
    try:
        data = loads(body)
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
        message = error_text(error)
        details = error.get("details")
    elif isinstance(error, str):
        message = error.strip() or None
    if message is None:
        message = error_text({"message": data.get("message"), "detail": data.get("detail")})
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
        when = as_datetime(value)
        return None if when is None else max(0.0, (when - datetime.now(UTC)).total_seconds())
    if not math.isfinite(number):
        return None
    if number > 1e12:
        number = number / 1000 - time.time()
    elif number > 1e9:
        number = number - time.time()
    return max(0.0, number)


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, the port filled in for http and https."""
    port = url.port if url.port is not None else {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, port


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


class Transport:
    """Sends API requests over one ``httpx.AsyncClient`` with the retry policy, and turns
    every failure into a :class:`PixelDojoError`.

    ``clock`` (monotonic seconds) times the request budget and the rate-limit gate; tests pass
    one that only their fake ``sleep`` advances. ``on_headers`` sees the headers of every
    response to a gated (API) request, whatever its status.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_key: str,
        max_attempts: int,
        backoff_base: float,
        backoff_cap: float,
        max_retry_after: float,
        sleep: SleepFunc,
        clock: Callable[[], float],
        deadline: float,
        max_json_bytes: int,
        requests_per_minute: float | None,
        on_headers: Callable[[httpx.Headers], None] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._http = http
        self._api_key = api_key
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        self._clock = clock
        self._deadline = deadline
        self._max_json_bytes = max_json_bytes
        self._on_headers = on_headers
        # Monotonic deadline before which no API request is sent (rate-limit gate).
        self._gate_until = 0.0
        self._budget = (
            RequestBudget(requests_per_minute, clock=clock) if requests_per_minute else None
        )

    async def get_json(self, url: str, *, target: str) -> Any:
        """GET ``url`` as an idempotent, gated API request and return its JSON body."""
        return await self.execute(
            lambda: self._http.build_request("GET", url, headers={"Accept": "application/json"}),
            idempotent=True,
            gated=True,
            target=target,
            consume=self.read_json,
        )

    async def read_json(self, response: httpx.Response) -> Any:
        """The JSON body of ``response``, within the cap (:class:`MalformedResponse` if not)."""
        try:
            return loads(await read_body(response, self._max_json_bytes))
        except (BodyRefused, ValueError) as exc:
            reason = str(exc) if isinstance(exc, BodyRefused) else "body is not JSON"
            raise MalformedResponse(
                api_message=f"HTTP {response.status_code} {reason}",
                status=response.status_code,
                retryable=response.request.method == "GET",
            ) from None

    @staticmethod
    async def _read_error_body(response: httpx.Response) -> bytes:
        try:
            return await read_body(response, _MAX_ERROR_BODY_BYTES)
        except BodyRefused:
            return b""  # the status code alone says enough

    def scrub(self, text: str | None) -> str | None:
        """Server text fit for logs and members: the API key redacted, the length capped."""
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
        if self._on_headers is not None:
            self._on_headers(headers)
        remaining = as_int(headers.get("X-RateLimit-Remaining"))
        if remaining is not None and remaining <= 0 and response.status_code != 429:
            reset = parse_rate_limit_reset(headers.get("X-RateLimit-Reset"))
            if reset:
                self._close_gate_for(reset)

    def _error_from_response(
        self, response: httpx.Response, body: bytes, target: str
    ) -> PixelDojoError:
        status = response.status_code
        code, raw_message, details = parse_error_body(body)
        api_message = self.scrub(raw_message)
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
            missing = {
                "job": "PixelDojo has no record of that job (it may have expired).",
                "model": "PixelDojo does not offer that model.",
            }.get(target)
            return NotFound(missing, **common)
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

    async def execute(
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
        transport's); one that does not is a timeout like httpx's own.
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
