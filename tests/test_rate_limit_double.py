"""The PixelDojo double's per-key limit behaves as the documented one does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.doubles.pixeldojo_rate_limit import RateLimiter

LIMITER = web.AppKey("limiter", RateLimiter)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@pytest.fixture
def clock() -> Clock:
    return Clock()


MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_client(clock: Clock) -> AsyncIterator[MakeClient]:
    clients: list[TestClient] = []

    async def make(**options: object) -> TestClient:
        limiter = RateLimiter(
            limit=3,
            window=60.0,
            clock=clock,
            exempt=lambda request: request.path.startswith("/files/"),
            **options,  # type: ignore[arg-type]
        )
        app = web.Application(middlewares=[limiter.middleware])
        app.router.add_get("/jobs/{job_id}", _ok)
        app.router.add_post("/models/{model}/run", _ok)
        app.router.add_get("/files/{name}", _ok)
        app[LIMITER] = limiter
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def test_every_endpoint_shares_one_allowance_per_key(
    make_client: MakeClient, clock: Clock
) -> None:
    client = await make_client()
    key = {"Authorization": "Bearer a"}
    answers = [
        await client.post("/models/flux-kontext-pro/run", headers=key),
        await client.get("/jobs/1", headers=key),
        await client.get("/jobs/2", headers=key),
    ]
    assert [a.status for a in answers] == [200, 200, 200]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0"]
    assert answers[0].headers["X-RateLimit-Limit"] == "3"
    assert answers[0].headers["X-RateLimit-Reset"] == str(int(clock.now + 60))

    refused = await client.get("/jobs/3", headers=key)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "60"
    assert (await refused.json())["error"]["code"] == "rate_limited"
    # Another key has its own allowance; image files do not count.
    assert (await client.get("/jobs/3", headers={"Authorization": "Bearer b"})).status == 200
    assert (await client.get("/files/x.png", headers=key)).status == 200
    stats = client.app[LIMITER].stats
    assert stats.total_allowed == 4 and stats.total_refused == 1


async def test_slots_free_one_by_one_a_window_after_they_were_taken(
    make_client: MakeClient, clock: Clock
) -> None:
    client = await make_client()
    key = {"Authorization": "Bearer a"}
    for _ in range(2):
        assert (await client.get("/jobs/1", headers=key)).status == 200
    clock.now += 30
    assert (await client.get("/jobs/1", headers=key)).status == 200
    assert (await client.get("/jobs/1", headers=key)).status == 429
    clock.now += 30  # the first two slots free, the third is 30 s from freeing
    answer = await client.get("/jobs/1", headers=key)
    assert answer.status == 200 and answer.headers["X-RateLimit-Remaining"] == "1"
    assert (await client.get("/jobs/1", headers=key)).status == 200
    refused = await client.get("/jobs/1", headers=key)
    assert refused.status == 429 and refused.headers["Retry-After"] == "30"


async def test_a_bare_limit_answers_without_headers(make_client: MakeClient) -> None:
    client = await make_client(headers=False)
    key = {"Authorization": "Bearer a"}
    for _ in range(3):
        answer = await client.get("/jobs/1", headers=key)
        assert answer.status == 200 and "X-RateLimit-Limit" not in answer.headers
    refused = await client.get("/jobs/1", headers=key)
    assert refused.status == 429
    assert "Retry-After" not in refused.headers and "X-RateLimit-Reset" not in refused.headers
