"""PixelDojo's per-key rate limit, as strict as the documented one, for the PixelDojo double.

PixelDojo documents 60 requests a minute per API key, shared by every API endpoint, reported on
each response as ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``
(unix seconds), and a 429 once the allowance is spent, possibly with ``Retry-After``, possibly
bare. Result images come from another host and do not count. The window's algorithm is not
documented; this one is a sliding log (a slot frees a window after it was taken), the stricter
of the two common kinds for a client that bursts.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class RateLimitStats:
    """What the limiter let through and refused, per route name."""

    allowed: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)

    @property
    def total_refused(self) -> int:
        return sum(self.refused.values())

    @property
    def total_allowed(self) -> int:
        return sum(self.allowed.values())


class RateLimiter:
    """A sliding-window limit per API key, as aiohttp middleware.

    ``headers=False`` answers without ``X-RateLimit-*`` (and 429s bare), ``retry_after=False``
    leaves ``Retry-After`` off the 429. ``exempt(request)`` names requests that do not count
    (the image files). ``clock`` returns unix seconds, as ``X-RateLimit-Reset`` does.
    """

    def __init__(
        self,
        limit: int = 60,
        window: float = 60.0,
        *,
        headers: bool = True,
        retry_after: bool = True,
        exempt: Callable[[web.Request], bool] = lambda request: False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be ≥ 1 and window > 0")
        self.limit = limit
        self.window = window
        self.headers = headers
        self.retry_after = retry_after
        self.exempt = exempt
        self.clock = clock
        self.stats = RateLimitStats()
        self._taken: dict[str, deque[float]] = {}

    def _slots(self, key: str, now: float) -> deque[float]:
        taken = self._taken.setdefault(key, deque())
        while taken and taken[0] <= now - self.window:
            taken.popleft()
        return taken

    def _limit_headers(self, taken: deque[float], now: float) -> dict[str, str]:
        if not self.headers:
            return {}
        reset = taken[0] + self.window if taken else now
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.limit - len(taken))),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if self.exempt(request):
            return await handler(request)
        route = _route_name(request)
        key = request.headers.get("Authorization", "")
        now = self.clock()
        taken = self._slots(key, now)
        if len(taken) >= self.limit:
            self.stats.refused[route] += 1
            headers = self._limit_headers(taken, now)
            if self.retry_after and self.headers:
                headers["Retry-After"] = str(max(1, math.ceil(taken[0] + self.window - now)))
            if not self.headers:
                return web.Response(status=429, text="Too Many Requests")
            return web.json_response(
                {"error": {"code": "rate_limited", "message": "Rate limit exceeded."}},
                status=429,
                headers=headers,
            )
        taken.append(now)
        self.stats.allowed[route] += 1
        response = await handler(request)
        if not response.prepared:
            response.headers.update(self._limit_headers(taken, now))
        return response


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    canonical = info.canonical if info is not None else request.path
    return f"{request.method} {canonical}"
