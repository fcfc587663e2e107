"""The request budget: on by default, learning PixelDojo's limit from its headers, spreading
requests instead of bursting, and handling 429s with and without headers.

Every clock here is injected: the budget's waits cost no real time, and what is asserted is
when requests were sent by that clock, never how long anything took.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from bot.pixeldojo.client import PixelDojoClient
from bot.pixeldojo.errors import RateLimited
from bot.pixeldojo.transport import RequestBudget
from tests.doubles.pixeldojo import FakePixelDojo
from tests.doubles.pixeldojo_rate_limit import RateLimiter

EPOCH = 1_800_000_000.0


class FakeTime:
    """A monotonic clock that only its own sleep moves (each sleep costs no real time)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        """The same moment in unix seconds, as the server's X-RateLimit-Reset reads it."""
        return EPOCH + self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


class ManualTime(FakeTime):
    """A clock the test moves; each sleeper wakes once it passes its time."""

    def __init__(self) -> None:
        super().__init__()
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for when, future in self._sleepers:
            if when <= self.now and not future.done():
                future.set_result(None)


def send_recorder(clock: FakeTime, sent: list[float]) -> Middleware:
    """Middleware noting, by `clock`, when each request reached the server."""

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        sent.append(clock.now)
        return await handler(request)

    return record


def most_in_any_window(times: list[float], window: float) -> int:
    ordered = sorted(times)
    return max(sum(t0 <= t < t0 + window for t in ordered) for t0 in ordered)


async def test_the_budget_learns_a_smaller_limit_from_the_headers_and_paces_to_it() -> None:
    clock = FakeTime()
    limiter = RateLimiter(limit=10, window=60, clock=clock.wall)
    sent: list[float] = []
    async with FakePixelDojo(middlewares=[send_recorder(clock, sent), limiter.middleware]) as api:
        async with PixelDojoClient(
            "test-key", api.base_url, requests_per_minute=60, clock=clock, sleep=clock.sleep
        ) as client:
            assert client.budget is not None
            client.budget.wall_clock = clock.wall
            for _ in range(30):
                await client.submit(prompt="p", aspect_ratio="1:1")
            assert (client.budget.limit, client.budget.window) == (10, 60)
    assert len(api.jobs) == 30 and limiter.stats.total_refused == 0
    assert most_in_any_window(sent, 60) <= 9  # 10 a minute, less the safety margin
    # Spread: never more than twice the steady pace, so no minute is spent in a few seconds.
    assert min(b - a for a, b in itertools.pairwise(sent[1:])) >= 60 / 9 / 2 - 1e-6


async def test_requests_held_back_by_a_429_are_spread_after_the_reset_not_burst() -> None:
    clock = ManualTime()
    budget = RequestBudget(60, clock=clock, sleep=clock.sleep, rng=random.Random(3))
    budget.wall_clock = clock.wall
    budget.observe(429, {"Retry-After": "30", "X-RateLimit-Limit": "60"})
    sent: list[float] = []

    async def request() -> None:
        await budget.acquire()
        sent.append(clock.now)

    tasks = [asyncio.create_task(request()) for _ in range(12)]
    while not all(task.done() for task in tasks):
        clock.advance(0.05)
        await asyncio.sleep(0)
    assert min(sent) >= 1_000.0 + 30  # nothing before the window reset
    gaps = [b - a for a, b in itertools.pairwise(sorted(sent))]
    # After a 429 the budget probes at the steady pace (a minute's capacity over a minute).
    assert min(gaps) >= 60 / budget.capacity - 0.05


async def test_bare_429s_back_off_with_jitter_and_grow_instead_of_retrying_in_step() -> None:
    clock = FakeTime()
    budgets = [
        RequestBudget(60, clock=clock, sleep=clock.sleep, rng=random.Random(seed))
        for seed in range(5)
    ]
    hints = []
    for budget in budgets:
        await budget.acquire()
        budget.observe(429, {})  # no headers at all: the window is spent, for how long unknown
        first = budget.retry_hint()
        budget.observe(429, {})
        hints.append((first, budget.retry_hint()))
    assert all(0 < first < second <= 60 for first, second in hints)
    assert len({round(first, 6) for first, _ in hints}) == len(hints)  # jittered, not in step


async def test_a_bare_429_on_submit_is_raised_at_once_with_a_retry_hint() -> None:
    clock = FakeTime()
    limiter = RateLimiter(limit=1, window=60, headers=False, clock=clock.wall)
    async with FakePixelDojo(middlewares=[limiter.middleware]) as api:
        async with PixelDojoClient(
            "test-key", api.base_url, requests_per_minute=60, clock=clock, sleep=clock.sleep
        ) as client:
            await client.submit(prompt="p", aspect_ratio="1:1")
            with pytest.raises(RateLimited) as caught:
                await client.submit(prompt="p", aspect_ratio="1:1")
            hint = caught.value.retry_after
            assert hint is not None and hint > 0
            # Sent again at the hint (as the queue does) until the window has moved on.
            for _ in range(20):
                await clock.sleep(hint)
                try:
                    await client.submit(prompt="p", aspect_ratio="1:1")
                    break
                except RateLimited as again:
                    assert again.retry_after is not None and again.retry_after > 0
                    hint = again.retry_after
    assert len(api.jobs) == 2
    assert limiter.stats.total_refused <= 6  # backing off, doubling: a few probes a minute


async def test_result_downloads_do_not_spend_the_budget() -> None:
    # PixelDojo serves images from a file host that its limit does not cover; the double
    # serves them from the API origin, which must not make them queue behind polls.
    clock = FakeTime()
    async with FakePixelDojo() as api:
        async with PixelDojoClient(
            "test-key", api.base_url, requests_per_minute=60, clock=clock, sleep=clock.sleep
        ) as client:
            assert client.budget is not None
            job = await client.submit(prompt="p", aspect_ratio="1:1", num_outputs=4)
            state = await client.get_job(job)
            while state.is_running:
                state = await client.get_job(job)
            polls = api.jobs[job.job_id].polls
            images = await client.download_results(state.image_urls)
            assert len(images) == 4
            assert client.budget.pressure() * client.budget.capacity == 1 + polls
