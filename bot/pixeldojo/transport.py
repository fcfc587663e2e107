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
import bisect
import contextlib
import email.utils
import heapq
import json
import logging
import math
import random
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
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


# Request priorities for RequestBudget.acquire: lower goes first. A poll's priority is
# 1 - P(the job is done by now), in [0, 1], so polls likely to find a result go first and
# submits go while no poll is waiting.
PRIORITY_POLL = 0.0
PRIORITY_SUBMIT = 2.0

DOCUMENTED_REQUESTS_PER_MINUTE = 60
"""PixelDojo's documented per-key limit, assumed until its X-RateLimit-* headers say otherwise."""
DOCUMENTED_WINDOW = 60.0
# Bounds on what a response may teach the budget (nothing a server sends is trusted as is).
_MAX_LIMIT = 10_000
_MIN_WINDOW, _MAX_WINDOW = 1.0, 3600.0
# A bare 429 lowers the limit to what got through only from this many requests on.
_MIN_BARE_LIMIT = 10


@dataclass
class RequestTiming:
    """How a request is timed: ``waited`` is filled in (how long it waited, for the budget,
    the rate-limit gate and retry backoff, before the attempt that was answered was sent).

    ``bound`` is the caller's own time limit on the request (the ``asyncio.timeout`` it awaits
    the request in): it is paused while the request waits for the request budget or the gate,
    so it bounds the request itself, not its place in the queue for the key's limit.
    """

    waited: float = 0.0
    bound: asyncio.Timeout | None = None


@contextlib.contextmanager
def _bound_paused(timing: RequestTiming | None) -> Iterator[None]:
    """Stop the caller's time limit (`RequestTiming.bound`) for the duration of the block; it
    then resumes with the time it had left."""
    bound = timing.bound if timing is not None else None
    when = bound.when() if bound is not None else None
    if bound is None or when is None or bound.expired():
        yield
        return
    loop = asyncio.get_running_loop()
    left = max(0.0, when - loop.time())
    bound.reschedule(None)
    try:
        yield
    finally:
        if not bound.expired():
            bound.reschedule(loop.time() + left)


class RequestBudget:
    """Paces API requests to the per-key limit, learned from the API, with a safety margin.

    PixelDojo documents 60 requests a minute per key shared by every endpoint; until a response
    carries ``X-RateLimit-Limit`` the budget assumes ``limit`` per ``window`` seconds (``ceiling``,
    when the operator set one, caps whatever the headers say). The window is learned from
    ``X-RateLimit-Reset`` seen on the first request of a fresh window.

    The budget keeps its own sliding log of sends (the strictest of the common server
    algorithms, so it is safe against fixed windows too) and lets at most ``limit - margin``
    through in any window, at most twice the steady rate (so a fresh allowance is never spent in
    a few seconds), and nothing while a 429 or an exhausted ``X-RateLimit-Remaining`` says the
    window is spent; the first send after such a wait is jittered. A bare 429 (no headers)
    counts as "window spent": the budget backs off (jittered, doubling up to a window), then
    probes at the steady rate; when at least ten requests got through in the window, the limit
    drops to that count and creeps back up one request per clean window.

    Waiting callers go in ``priority`` order (lower first; FIFO among equals). ``clock`` is
    monotonic seconds, ``wall_clock`` unix seconds (for ``X-RateLimit-Reset``); ``sleep`` is
    awaited for every wait, so tests with a fake sleep and clock never sleep.
    """

    def __init__(
        self,
        limit: float = DOCUMENTED_REQUESTS_PER_MINUTE,
        window: float = DOCUMENTED_WINDOW,
        *,
        ceiling: float | None = None,
        margin: float = 0.03,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: SleepFunc = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if limit <= 0 or window <= 0:
            raise ValueError("limit and window must be positive")
        self.assumed_limit = limit
        self.ceiling = ceiling
        self.margin = margin
        self.clock = clock
        self.wall_clock = wall_clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._window = float(window)
        self._window_learned = False
        self._header_limit: int | None = None
        # After a bare 429: (limit it implied, when), creeping back up one per clean window.
        self._bare: tuple[int, float] | None = None
        self._bare_streak = 0
        self._last_429 = -math.inf
        self._sends: list[float] = []  # sorted send times within the last window
        self._blocked_until = 0.0
        self._queue: list[list[Any]] = []  # heap of [priority, seq, future | None]
        self._seq = 0
        self.rate_limited = 0
        """429s seen (with or without headers)."""

    # -- what the budget believes ------------------------------------------------------------

    @property
    def window(self) -> float:
        """The rate-limit window in seconds (documented 60 until learned)."""
        return self._window

    @property
    def limit(self) -> int:
        """Requests per window the API allows this key, as far as the budget knows."""
        limit = float(self._header_limit) if self._header_limit is not None else self.assumed_limit
        if self.ceiling is not None:
            limit = min(limit, self.ceiling)
        if self._bare is not None:
            implied, since = self._bare
            crept = implied + int((self.clock() - since) // self._window)
            if crept < limit:
                limit = crept
            else:
                self._bare = None
        return max(1, int(limit))

    @property
    def capacity(self) -> int:
        """Requests the budget lets through per window: the limit less the safety margin."""
        limit = self.limit
        return max(1, limit - max(1, math.ceil(limit * self.margin))) if limit > 1 else 1

    def _spacing(self) -> float:
        steady = self._window / self.capacity
        # Twice the steady rate at most; the steady rate for a window after a 429 (probing).
        return steady if self.clock() - self._last_429 < self._window else steady / 2

    def pressure(self) -> float:
        """Demand on the budget: sends in the last window plus callers waiting, over capacity."""
        self._expire(self.clock())
        return (len(self._sends) + len(self._queue)) / self.capacity

    def retry_hint(self) -> float:
        """Seconds until the budget would let a request through."""
        return max(0.0, self._earliest() - self.clock())

    # -- waiting for a slot ------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        cut = bisect.bisect_right(self._sends, now - self._window)
        if cut:
            del self._sends[:cut]

    def _earliest(self) -> float:
        now = self.clock()
        self._expire(now)
        earliest = max(now, self._blocked_until)
        if self._sends:
            earliest = max(earliest, self._sends[-1] + self._spacing())
        capacity = self.capacity
        if len(self._sends) >= capacity:
            earliest = max(earliest, self._sends[-capacity] + self._window)
        return earliest

    def _wake_head(self) -> None:
        if self._queue:
            future = self._queue[0][2]
            if future is not None and not future.done():
                future.set_result(None)

    async def acquire(self, priority: float = PRIORITY_SUBMIT) -> float:
        """Wait until a request may be sent; returns the seconds waited."""
        started = self.clock()
        self._seq += 1
        entry: list[Any] = [priority, self._seq, None]
        heapq.heappush(self._queue, entry)
        try:
            while True:
                if self._queue[0] is not entry:
                    entry[2] = asyncio.get_running_loop().create_future()
                    await entry[2]
                    entry[2] = None
                    continue
                planned = self._earliest()
                now = self.clock()
                if planned <= now:
                    when = now
                    break
                await self._sleep(planned - now)
                # Unless someone more urgent took the slot meanwhile, it is ours.
                if self._queue[0] is entry and self._earliest() <= planned:
                    when = max(planned, self.clock())
                    break
        except BaseException:
            self._queue.remove(entry)
            heapq.heapify(self._queue)
            self._wake_head()
            raise
        heapq.heappop(self._queue)
        bisect.insort(self._sends, when)
        self._wake_head()
        return max(0.0, when - started)

    # -- learning from responses -------------------------------------------------------------

    def _block(self, seconds: float) -> None:
        seconds = min(max(0.0, seconds), self._window)
        # Jittered, so callers (and other processes sharing the key) do not all go at once.
        until = self.clock() + seconds + self._rng.uniform(0, self._window / self.capacity)
        self._blocked_until = max(self._blocked_until, until)

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Learn from one API response's status and ``X-RateLimit-*`` / ``Retry-After``."""
        now = self.clock()
        self._expire(now)
        limit = as_int(headers.get("X-RateLimit-Limit"))
        remaining = as_int(headers.get("X-RateLimit-Remaining"))
        reset = _reset_in(headers.get("X-RateLimit-Reset"), self.wall_clock())
        if limit is not None and 1 <= limit <= _MAX_LIMIT:
            self._header_limit = limit
        else:
            limit = None
        if limit is not None and reset is not None and remaining == limit - 1 and status != 429:
            # The first request of a fresh window: Reset is a whole window away (whole seconds).
            window = math.floor(reset) if reset >= 2 else reset
            if _MIN_WINDOW <= window <= _MAX_WINDOW:
                if not self._window_learned or window > self._window:
                    self._window = float(window)
                self._window_learned = True
        retry_after = parse_retry_after(headers.get("Retry-After")) if status == 429 else None
        if retry_after is not None:
            retry_after = min(retry_after, self._window)
        if remaining is not None and limit is not None and 0 <= remaining <= limit:
            frees_in = reset if reset is not None else retry_after
            self._account_foreign_use(limit - remaining, frees_in, now)
        if status == 429:
            self.rate_limited += 1
            self._last_429 = now
            wait = retry_after if retry_after is not None else reset
            if wait is None and remaining is None and limit is None:
                self._bare_429(now)
            else:
                self._bare_streak = 0
                self._block(wait if wait is not None else self._window / self.capacity)
        else:
            self._bare_streak = 0
            if remaining is not None and remaining <= 0 and reset is not None:
                self._block(reset)

    def _account_foreign_use(self, used: int, frees_in: float | None, now: float) -> None:
        """The server counts more requests than this budget sent (another process on the key,
        or a restart): book the difference, freed when the server says (or a window on)."""
        extra = min(used - len(self._sends), _MAX_LIMIT)
        if extra <= 0:
            return
        at = (
            now
            - self._window
            + min(frees_in if frees_in is not None else self._window, self._window)
        )
        for _ in range(extra):
            bisect.insort(self._sends, at)

    def _bare_429(self, now: float) -> None:
        # What got through in the window is (at most) the limit left for us; a handful proves
        # nothing (another process on the key, a restart), so only a real count lowers it.
        let_through = len(self._sends) - 1
        if _MIN_BARE_LIMIT <= let_through < self.limit:
            self._bare = (let_through, now)
        self._bare_streak += 1
        backoff = (self._window / self.capacity) * 2 ** min(self._bare_streak, 10)
        self._block(min(backoff, self._window))


def _reset_in(value: str | None, wall_now: float) -> float | None:
    """Seconds until an ``X-RateLimit-Reset`` (unix seconds, or delta seconds when small), or
    None when absent or implausible."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    if number > 1e12:
        number = number / 1000 - wall_now
    elif number > 1e9:
        number -= wall_now
    if number < -_MAX_WINDOW or number > _MAX_WINDOW:
        return None
    return max(0.0, number)  # a little in the past: the clocks disagree; it has reset


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
        max_requests_per_minute: float | None = None,
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
        # The request budget (None: only 429s and exhausted windows hold requests back).
        self.budget = (
            RequestBudget(
                requests_per_minute, ceiling=max_requests_per_minute, clock=clock, sleep=sleep
            )
            if requests_per_minute
            else None
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
        if self.budget is not None:
            self.budget.observe(response.status_code, headers)
            return
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
            if self.budget is not None:
                # The budget's view: the hint it just learned (bounded, jittered), or its own
                # backoff for a bare 429.
                retry_after = self.budget.retry_hint()
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
        priority: float = PRIORITY_SUBMIT,
        raise_rate_limited: bool = False,
        timing: RequestTiming | None = None,
    ) -> T:
        """Send a request with the retry policy and hand a 2xx response to ``consume``.

        ``idempotent=False`` (submit) retries only outcomes that certainly created nothing,
        except a 429: that raises :class:`RateLimited` at once (with the budget's hint), as does
        any 429 with ``raise_rate_limited`` (the caller reschedules rather than wait here).
        ``priority`` orders the wait for the request budget; ``timing`` learns how long the
        request waited before it was sent, and its ``bound`` does not run during those waits.
        ``send`` replaces ``httpx.AsyncClient.send`` (downloads follow redirects themselves).
        The whole request, retries and their backoff included, must end within ``deadline``
        seconds (default: the transport's) of its first send (waits for the rate limit, the
        gate and a 429's Retry-After, do not count); an attempt cut short by it is a timeout
        like httpx's own, and no retry starts once it is spent.
        """
        limit = self._deadline if deadline is None else deadline
        ends: float | None = None  # on `self._clock`, set at the first send
        last: PixelDojoError | None = None  # what the previous attempt ended with
        attempt = 0
        called = self._clock()
        while True:
            attempt += 1
            request = build()
            method, path = request.method, request.url.path
            if gated:
                # Result images do not count against PixelDojo's limit (PixelDojo serves them
                # from a file host), so they never wait for the budget, even from the API origin.
                queued = self._clock()
                with _bound_paused(timing):
                    if self.budget is not None:
                        if target != "image":
                            await self.budget.acquire(priority)
                    else:
                        await self._wait_for_rate_gate(method, path)
                if ends is not None:
                    ends += self._clock() - queued  # waiting for the rate limit is not counted
            if timing is not None:
                timing.waited = max(0.0, self._clock() - called)
            now = self._clock()
            ends = now + limit if ends is None else ends
            if last is not None and ends - now <= 0:
                raise last  # the request's time went on waiting to retry
            attempt_limit = min(limit, ends - now)
            started = time.monotonic()
            window = asyncio.timeout(attempt_limit)
            try:
                async with window:
                    if send is None:
                        response = await self._http.send(request, stream=True)
                    else:
                        response = await send(request)
                    try:
                        if gated and (self.budget is None or target != "image"):
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
                    exc = DeadlineExceeded(
                        f"no complete answer within {attempt_limit:g}s", request=request
                    )
                else:
                    raise
                safe = idempotent or isinstance(exc, _UNSENT_ERRORS)
                delay = self._backoff(attempt)
                if not safe or attempt >= self._max_attempts or self._clock() + delay >= ends:
                    raise self._network_error(exc, target, safe) from exc
                last = self._network_error(exc, target, safe)
                self._log_retry(method, path, type(exc).__name__, attempt, delay)
                await self._sleep(delay)
                continue

            error = self._error_from_response(response, body, target)
            status = response.status_code
            if status == 429 and (raise_rate_limited or not idempotent):
                # Certainly nothing was created: the caller queues it again at the hint.
                raise error
            if status == 429 or status == 503:
                retry = True
            else:
                retry = idempotent and status >= 500
            if not idempotent and status >= 500 and status != 503:
                # The server may have created (and charged) the job before failing.
                error.retryable = False
            if not retry or attempt >= self._max_attempts:
                raise error
            if isinstance(error, RateLimited) and gated and self.budget is not None:
                # The budget holds the next attempt (and every other request) back itself.
                self._log_retry(method, path, "HTTP 429", attempt, self.budget.retry_hint())
                last = error
                continue
            if isinstance(error, RateLimited) and error.retry_after is not None:
                delay = min(error.retry_after, self._max_retry_after)
                ends += delay  # a wait for the rate limit, like the gate's: not the server's time
                deadline = self._close_gate_for(delay) if gated else None
            else:
                delay = self._backoff(attempt)
                if self._clock() + delay >= ends:
                    raise error
                deadline = None
            last = error
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
