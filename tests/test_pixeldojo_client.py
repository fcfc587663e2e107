"""Tests for the PixelDojo client, run against the loopback FakePixelDojo.

``httpx.MockTransport`` is used only where a scripted response is simpler than a server
(HTTP-date Retry-After, rate-limit headers, odd body shapes).
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import itertools
import logging
import random
import socket
import tracemalloc
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any

import httpx
import pytest
from aiohttp import web
from PIL import Image

from bot.pixeldojo.client import PixelDojoClient
from bot.pixeldojo.errors import (
    AuthenticationError,
    BadRequest,
    ImageExpired,
    ImageTooLarge,
    InsufficientCredits,
    MalformedResponse,
    NetworkError,
    NotFound,
    PixelDojoError,
    RateLimited,
    ServerError,
    UnsafeLink,
)
from bot.pixeldojo.models import JobStatus, SubmittedJob
from bot.pixeldojo.sandbox import render_placeholder_png
from bot.pixeldojo.transport import (
    PRIORITY_SUBMIT,
    RequestBudget,
    parse_rate_limit_reset,
    parse_retry_after,
)
from tests.doubles.pixeldojo import FakePixelDojo, noise_png
from tests.helpers import ManualTime

SECRET = "sk-live-SECRET-0123456789abcdef"


class RecordingSleep:
    """Stands in for asyncio.sleep: records each delay and only yields to the loop."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def fake() -> AsyncIterator[FakePixelDojo]:
    async with FakePixelDojo() as server:
        yield server


@pytest.fixture
async def client(fake: FakePixelDojo, sleeps: RecordingSleep) -> AsyncIterator[PixelDojoClient]:
    async with PixelDojoClient("test-key", fake.base_url, sleep=sleeps) as pixeldojo:
        yield pixeldojo


async def wait_done(client: PixelDojoClient, job: SubmittedJob | str) -> JobStatus:
    """Poll like the bot does, without real waiting (jobs here take 0 s)."""
    for _ in range(50):
        state = await client.get_job(job)
        if not state.is_running:
            return state
    raise AssertionError("job never finished")


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response], sleeps: RecordingSleep, **kwargs: Any
) -> PixelDojoClient:
    return PixelDojoClient(
        "test-key",
        "https://pixeldojo.test/api/v1",
        transport=httpx.MockTransport(handler),
        sleep=sleeps,
        **kwargs,
    )


def accepted(job_id: str = "job_1", **headers: str) -> httpx.Response:
    body = {
        "jobId": job_id,
        "status": "pending",
        "statusUrl": f"https://pixeldojo.test/api/v1/jobs/{job_id}",
        "creditCost": 1,
        "creditsRemaining": 41,
        "expiresAt": "2025-01-23T12:00:00Z",
    }
    return httpx.Response(202, json=body, headers=headers)


class Recorder:
    """A second loopback server on another origin that records every request's headers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.png = render_placeholder_png("1:1", seed_key="recorder")
        self._runner: web.AppRunner | None = None
        self.origin = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers)))
        if request.path == "/img.png":
            return web.Response(body=self.png, content_type="image/png")
        if request.path == "/big.bin":
            # Chunked: no Content-Length, so the client must count while streaming.
            response = web.StreamResponse()
            response.content_type = "application/octet-stream"
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(20):
                await response.write(b"\0" * 16_384)
            await response.write_eof()
            return response
        return web.Response(
            status=200,
            body=b'{"jobId": "x", "status": "completed"}',
            content_type="application/json",
        )

    async def __aenter__(self) -> Recorder:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.origin = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


# -- happy paths -------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "expected_urls"), [("images", 2), ("image", 1), ("assets", 2)])
async def test_submit_poll_download_for_each_output_shape(
    sleeps: RecordingSleep, shape: Any, expected_urls: int
) -> None:
    async with (
        FakePixelDojo(output_shape=shape) as fake,
        PixelDojoClient("test-key", fake.base_url, sleep=sleeps) as client,
    ):
        job = await client.submit(prompt="a lighthouse", aspect_ratio="16:9", num_outputs=2, seed=7)
        assert job.job_id in fake.jobs
        assert job.status_url == f"{fake.base_url}/jobs/{job.job_id}"
        assert job.credit_cost == 2
        assert job.credits_remaining == 9_998 == client.last_credits_remaining
        assert job.expires_at is not None and job.expires_at > datetime.now(UTC)
        assert fake.submissions == [
            {"prompt": "a lighthouse", "aspect_ratio": "16:9", "num_outputs": 2, "seed": 7}
        ]

        state = await wait_done(client, job)
        assert state.is_completed and not state.is_failed and not state.is_running
        assert state.job_id == job.job_id
        assert state.credit_cost == 2
        assert len(state.image_urls) == expected_urls
        for url in state.image_urls:
            data, content_type = await client.download(url)
            assert content_type == "image/png"
            assert Image.open(BytesIO(data)).size == (256, 144)
    assert client.closed
    assert sleeps.delays == []


async def test_submit_omits_seed_and_passes_schema_fields(sleeps: RecordingSleep) -> None:
    async with (
        FakePixelDojo(image_field="image_url") as fake,
        PixelDojoClient("test-key", fake.base_url, sleep=sleeps) as client,
    ):
        await client.submit(prompt="p", aspect_ratio="1:1")
        await client.submit(
            prompt="p", aspect_ratio="1:1", extra={"image_url": "https://example.com/a.png"}
        )
    assert fake.submissions == [
        {"prompt": "p", "aspect_ratio": "1:1", "num_outputs": 1},
        {
            "prompt": "p",
            "aspect_ratio": "1:1",
            "num_outputs": 1,
            "image_url": "https://example.com/a.png",
        },
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prompt": "", "aspect_ratio": "1:1"},
        {"prompt": "p", "aspect_ratio": "4:3"},
        {"prompt": "p", "aspect_ratio": "1:1", "num_outputs": 0},
        {"prompt": "p", "aspect_ratio": "1:1", "seed": -1},
        {"prompt": "p", "aspect_ratio": "1:1", "extra": {"prompt": "override"}},
    ],
)
async def test_invalid_arguments_fail_before_any_request(
    fake: FakePixelDojo, client: PixelDojoClient, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        await client.submit(**kwargs)
    assert fake.request_log == []


async def test_get_job_accepts_id_or_status_url(
    fake: FakePixelDojo, client: PixelDojoClient
) -> None:
    job = await client.submit(prompt="p", aspect_ratio="1:1")
    by_id = await client.get_job(job.job_id)
    by_url = await client.get_job(job.status_url)
    assert by_id.job_id == by_url.job_id == job.job_id
    assert by_id.is_completed and by_url.is_completed


async def test_failed_job(fake: FakePixelDojo, client: PixelDojoClient) -> None:
    fake.fail_next(error="NSFW content detected")
    state = await wait_done(client, await client.submit(prompt="p", aspect_ratio="1:1"))
    assert state.is_failed and not state.is_running
    assert state.error == "NSFW content detected"
    assert state.image_urls == ()


async def test_unknown_status_is_treated_as_running(
    fake: FakePixelDojo, client: PixelDojoClient
) -> None:
    fake.set_status_sequence(["pending", "queued", "processing", "weird-unknown"])
    job = await client.submit(prompt="p", aspect_ratio="1:1")
    states = [await client.get_job(job) for _ in range(5)]
    assert [s.status for s in states] == [
        "pending",
        "queued",
        "processing",
        "weird-unknown",
        "completed",
    ]
    assert [s.is_running for s in states] == [True, True, True, True, False]
    assert states[-1].is_completed


@pytest.mark.parametrize(
    ("status", "completed", "failed"),
    [
        ("Completed", True, False),
        ("succeeded", True, False),
        ("FAILED", False, True),
        ("cancelled", False, True),
        ("canceled", False, True),
        ("expired", False, True),
        ("error", False, True),
        ("starting", False, False),
    ],
)
def test_status_classification(status: str, completed: bool, failed: bool) -> None:
    state = JobStatus.from_payload({"status": status}, job_id="j")
    assert (state.is_completed, state.is_failed, state.is_running) == (
        completed,
        failed,
        not (completed or failed),
    )


def test_image_url_extraction_accepts_every_known_shape() -> None:
    payload = {
        "jobId": "j",
        "status": "completed",
        "output": {"images": ["https://a/1.png", {"url": "https://a/2.png"}], "image": "/3.png"},
        "assets": [{"url": "https://a/4.png"}, {"url": "https://a/1.png"}],
        "images": ["https://a/5.png"],
        "creditCost": "1",
        "expiresAt": "2025-01-23T12:00:00Z",
    }
    state = JobStatus.from_payload(payload, base_url="https://api.test/api/v1/jobs/j")
    assert state.image_urls == (
        "https://a/1.png",
        "https://a/2.png",
        "https://api.test/3.png",
        "https://a/4.png",
        "https://a/5.png",
    )
    assert state.credit_cost == 1
    assert state.expires_at == datetime(2025, 1, 23, 12, tzinfo=UTC)
    # Completed without any URL is returned as is; the caller decides.
    bare = JobStatus.from_payload({"status": "completed"}, job_id="j")
    assert bare.is_completed and bare.image_urls == ()
    with pytest.raises(MalformedResponse):
        JobStatus.from_payload({"output": {}}, job_id="j")


async def test_catalogue_endpoints(client: PixelDojoClient) -> None:
    schema = await client.get_model_schema()
    assert schema["additionalProperties"] is False
    assert "prompt" in schema["properties"]
    with pytest.raises(NotFound):
        await client.get_model_schema("no-such-model")


# -- error mapping -----------------------------------------------------------------------------

SUBMIT_FAULTS = [
    ("401", AuthenticationError),
    ("402", InsufficientCredits),
    ("403", InsufficientCredits),
    ("404", NotFound),
    ("422", BadRequest),
    ("429", RateLimited),
    ("500", ServerError),
    ("503", ServerError),
    ("malformed", MalformedResponse),
    ("timeout", NetworkError),
    ("drop", NetworkError),
]
DOWNLOAD_FAULTS = [
    ("401", AuthenticationError),
    ("403", ImageExpired),
    ("404", ImageExpired),
    ("429", RateLimited),
    ("500", ServerError),
    ("503", ServerError),
    ("timeout", NetworkError),
    ("drop", NetworkError),
]
CASES = (
    [("submit", kind, error) for kind, error in SUBMIT_FAULTS]
    + [("poll", kind, error) for kind, error in SUBMIT_FAULTS]
    + [("download", kind, error) for kind, error in DOWNLOAD_FAULTS]
)


@pytest.mark.parametrize(("route", "kind", "error_type"), CASES)
async def test_every_fault_maps_to_a_typed_error(
    fake: FakePixelDojo,
    sleeps: RecordingSleep,
    route: str,
    kind: Any,
    error_type: type[PixelDojoError],
) -> None:
    # The set-up requests must succeed, so they get the default timeout; only a request held
    # by the "timeout" fault is meant to run out of time (held far longer than 0.25 s).
    async with PixelDojoClient("test-key", fake.base_url, sleep=sleeps) as setup:
        job = await setup.submit(prompt="p", aspect_ratio="1:1") if route != "submit" else None
        url = ""
        if route == "download":
            assert job is not None
            url = (await wait_done(setup, job)).image_urls[0]
    timeout = 0.25 if kind == "timeout" else 30
    async with PixelDojoClient(
        "test-key", fake.base_url, sleep=sleeps, max_attempts=2, timeout=timeout
    ) as client:
        fake.fault_next(kind, n=2, route=route, delay=3600)  # n=2 outlasts any retry
        with pytest.raises(PixelDojoError) as caught:
            if route == "submit":
                await client.submit(prompt="p", aspect_ratio="1:1")
            elif route == "poll":
                assert job is not None
                await client.get_job(job)
            else:
                await client.download(url)
    error = caught.value
    assert type(error) is error_type
    assert error.message and "test-key" not in error.message and "test-key" not in repr(error)
    if kind.isdigit():
        assert error.status == int(kind)


async def test_malformed_download_is_returned_for_the_caller_to_check(
    fake: FakePixelDojo, client: PixelDojoClient
) -> None:
    state = await wait_done(client, await client.submit(prompt="p", aspect_ratio="1:1"))
    fake.fault_next("malformed", route="download")
    data, content_type = await client.download(state.image_urls[0])
    assert content_type == "text/html" and data.startswith(b"<html>")


async def test_bad_request_carries_api_message_and_details(
    fake: FakePixelDojo, client: PixelDojoClient
) -> None:
    with pytest.raises(BadRequest) as caught:
        await client.submit(prompt="p", aspect_ratio="1:1", extra={"bogus": 1})
    assert caught.value.message == "PixelDojo rejected the request: Unknown properties: bogus."
    assert caught.value.code == "validation_error"
    assert caught.value.details == [{"field": "bogus", "message": "Unknown property."}]
    assert caught.value.retryable is False


@pytest.mark.parametrize("shape", ["object", "string", "message"])
async def test_error_body_shapes_are_parsed(
    fake: FakePixelDojo, client: PixelDojoClient, shape: Any
) -> None:
    fake.fault_next("422", route="submit", error_shape=shape)
    with pytest.raises(BadRequest) as caught:
        await client.submit(prompt="p", aspect_ratio="1:1")
    assert caught.value.api_message == "Request validation failed."
    assert caught.value.message == "PixelDojo rejected the request: Request validation failed."


async def test_generic_messages_when_error_body_is_not_json(sleeps: RecordingSleep) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(402, text="<html>Payment Required</html>")

    async with mock_client(handler, sleeps) as client:
        with pytest.raises(InsufficientCredits) as caught:
            await client.submit(prompt="p", aspect_ratio="1:1")
    assert caught.value.message == "PixelDojo says the account is out of credits."
    assert caught.value.api_message is None


async def test_insufficient_credits_from_a_real_402(
    fake: FakePixelDojo, client: PixelDojoClient
) -> None:
    fake.credits = 0
    with pytest.raises(InsufficientCredits) as caught:
        await client.submit(prompt="p", aspect_ratio="1:1")
    assert caught.value.code == "insufficient_credits"
    assert caught.value.status == 402


# -- retry policy ------------------------------------------------------------------------------


async def test_429_on_submit_raises_at_once_with_its_hint(
    fake: FakePixelDojo, client: PixelDojoClient, sleeps: RecordingSleep
) -> None:
    # A 429 certainly created no job: the caller (the runner's queue) sends it again later,
    # instead of the client burning its retries while the window is spent.
    fake.fault_next("429", n=2, route="submit", retry_after=7)
    with pytest.raises(RateLimited) as caught:
        await client.submit(prompt="p", aspect_ratio="1:1")
    assert caught.value.retry_after == 7 and caught.value.retryable
    assert sleeps.delays == [] and len(fake.submissions) == 1 and fake.jobs == {}


async def test_429_on_a_poll_is_retried_honouring_retry_after(
    fake: FakePixelDojo, client: PixelDojoClient, sleeps: RecordingSleep
) -> None:
    job = await client.submit(prompt="p", aspect_ratio="1:1")
    fake.fault_next("429", n=2, route="poll", retry_after=0.05)
    await client.get_job(job)
    assert sleeps.delays == [pytest.approx(0.05), pytest.approx(0.05)]
    # The runner's polls reschedule themselves instead.
    fake.fault_next("429", route="poll", retry_after=3)
    with pytest.raises(RateLimited) as caught:
        await client.get_job(job, raise_rate_limited=True)
    assert caught.value.retry_after == 3 and len(sleeps.delays) == 2


async def test_retry_after_is_capped(fake: FakePixelDojo, sleeps: RecordingSleep) -> None:
    async with PixelDojoClient(
        "test-key", fake.base_url, sleep=sleeps, max_retry_after=30
    ) as client:
        job = await client.submit(prompt="p", aspect_ratio="1:1")
        fake.fault_next("429", route="poll", retry_after=600)
        await client.get_job(job)
    assert sleeps.delays == [30]


async def test_429_exhausting_attempts_raises_rate_limited(
    fake: FakePixelDojo, client: PixelDojoClient, sleeps: RecordingSleep
) -> None:
    job = await client.submit(prompt="p", aspect_ratio="1:1")
    fake.fault_next("429", n=10, route="poll", retry_after=3)
    with pytest.raises(RateLimited) as caught:
        await client.get_job(job)
    assert caught.value.retry_after == 3 and caught.value.retryable
    assert sleeps.delays == [3, 3, 3]


async def test_500_on_submit_is_not_retried(
    fake: FakePixelDojo, client: PixelDojoClient, sleeps: RecordingSleep
) -> None:
    fake.fault_next("500", route="submit")
    with pytest.raises(ServerError) as caught:
        await client.submit(prompt="p", aspect_ratio="1:1")
    assert len(fake.submissions) == 1
    assert sleeps.delays == []
    # The server may have created the job, so resubmitting is not known to be safe.
    assert caught.value.retryable is False


async def test_503_on_submit_is_retried(
    fake: FakePixelDojo, client: PixelDojoClient, sleeps: RecordingSleep
) -> None:
    fake.fault_next("503", route="submit")
    await client.submit(prompt="p", aspect_ratio="1:1")
    assert len(fake.submissions) == 2 and len(fake.jobs) == 1
    assert len(sleeps.delays) == 1 and 0 <= sleeps.delays[0] <= 0.5


@pytest.mark.parametrize("kind", ["drop", "timeout", "malformed"])
async def test_ambiguous_submit_failures_are_not_retried(
    fake: FakePixelDojo, sleeps: RecordingSleep, kind: Any
) -> None:
    fake.fault_next(kind, route="submit", delay=1.0)
    async with PixelDojoClient("test-key", fake.base_url, sleep=sleeps, timeout=0.25) as client:
        with pytest.raises((NetworkError, MalformedResponse)) as caught:
            await client.submit(prompt="p", aspect_ratio="1:1")
    assert len(fake.submissions) == 1
    assert sleeps.delays == []
    assert caught.value.retryable is False


@pytest.mark.parametrize("route", ["poll", "download"])
async def test_a_body_trickling_forever_ends_at_the_request_deadline(
    fake: FakePixelDojo, sleeps: RecordingSleep, route: Any
) -> None:
    # httpx's timeout is per read: a byte every 10 ms would keep it waiting for ever.
    async with PixelDojoClient("test-key", fake.base_url, sleep=sleeps) as setup:
        job = await setup.submit(prompt="p", aspect_ratio="1:1")  # must not hit the 0.2 s
        url = (await wait_done(setup, job)).image_urls[0]
    async with PixelDojoClient(
        "test-key",
        fake.base_url,
        sleep=sleeps,
        max_attempts=2,
        deadline=0.2,
        download_deadline=0.2,
    ) as client:
        fake.fault_next("trickle", n=2, route=route, delay=0.01)
        call = client.get_job(job) if route == "poll" else client.download(url)
        with pytest.raises(NetworkError) as caught:
            await asyncio.wait_for(call, 10)
    assert caught.value.retryable is True  # the runner polls again later
    assert caught.value.api_message == "DeadlineExceeded"
    # One deadline for the request: the attempt that spent it is not retried.
    assert sleeps.delays == []


async def test_retries_stop_once_the_requests_one_deadline_is_spent(
    sleeps: RecordingSleep,
) -> None:
    now = [0.0]
    attempts: list[float] = []

    def slow_503(request: httpx.Request) -> httpx.Response:
        attempts.append(now[0])
        now[0] += 2.0  # each attempt takes 2 s (on the injected clock) and fails
        return httpx.Response(503, json={"error": "busy"})

    async with mock_client(slow_503, sleeps, deadline=3.0, clock=lambda: now[0]) as client:
        with pytest.raises(ServerError):
            await client.get_job("job_1")
    # Without one deadline, 4 attempts of 2 s each (plus backoff) for a 3 s deadline.
    assert attempts == [0.0, 2.0]
    assert len(sleeps.delays) == 1


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connect_errors_on_submit_are_retried(sleeps: RecordingSleep) -> None:
    async with PixelDojoClient(
        "test-key", f"http://127.0.0.1:{unused_port()}/api/v1", sleep=sleeps
    ) as client:
        with pytest.raises(NetworkError) as caught:
            await client.submit(prompt="p", aspect_ratio="1:1")
    assert caught.value.retryable is True
    assert len(sleeps.delays) == 3
    assert all(0 <= d <= cap for d, cap in zip(sleeps.delays, [0.5, 1.0, 2.0], strict=True))


class RefuseFirstConnection(httpx.AsyncBaseTransport):
    """Raises ConnectError once, then sends for real."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.refused:
            self.refused += 1
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_submit_succeeds_after_a_connect_error(
    fake: FakePixelDojo, sleeps: RecordingSleep
) -> None:
    transport = RefuseFirstConnection()
    async with PixelDojoClient(
        "test-key", fake.base_url, sleep=sleeps, transport=transport
    ) as client:
        await client.submit(prompt="p", aspect_ratio="1:1")
    assert transport.refused == 1 and len(fake.jobs) == 1 and len(sleeps.delays) == 1


async def test_poll_retries_5xx_and_drops_then_succeeds(
    fake: FakePixelDojo,
    client: PixelDojoClient,
    sleeps: RecordingSleep,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = await client.submit(prompt="p", aspect_ratio="1:1")
    fake.fault_next("500", route="poll")
    fake.fault_next("drop", route="poll")
    fake.fault_next("503", route="poll")
    with caplog.at_level(logging.WARNING, logger="bot.pixeldojo.transport"):
        state = await client.get_job(job)
    assert state.is_completed
    assert len(sleeps.delays) == 3
    assert all(0 <= d <= cap for d, cap in zip(sleeps.delays, [0.5, 1.0, 2.0], strict=True))
    retries = [r.getMessage() for r in caplog.records if r.name == "bot.pixeldojo.transport"]
    assert len(retries) == 3
    assert f"GET /api/v1/jobs/{job.job_id}" in retries[0]
    assert "HTTP 500" in retries[0] and "attempt 1/4" in retries[0]
    assert "RemoteProtocolError" in retries[1] and "attempt 2/4" in retries[1]
    assert "HTTP 503" in retries[2] and "attempt 3/4" in retries[2]


async def test_poll_gives_up_after_max_attempts(
    fake: FakePixelDojo, client: PixelDojoClient, sleeps: RecordingSleep
) -> None:
    job = await client.submit(prompt="p", aspect_ratio="1:1")
    fake.fault_next("500", n=10, route="poll")
    with pytest.raises(ServerError) as caught:
        await client.get_job(job)
    assert caught.value.retryable is True
    assert len(sleeps.delays) == 3
    assert fake.jobs[job.job_id].polls == 0


async def test_malformed_poll_is_malformed_response(
    fake: FakePixelDojo, client: PixelDojoClient, sleeps: RecordingSleep
) -> None:
    job = await client.submit(prompt="p", aspect_ratio="1:1")
    fake.fault_next("malformed", route="poll")
    with pytest.raises(MalformedResponse) as caught:
        await client.get_job(job)
    assert caught.value.retryable is True  # polling again is harmless
    assert sleeps.delays == []
    assert (await client.get_job(job)).is_completed


@pytest.mark.parametrize(
    "body", [{"status": "pending"}, ["not", "an", "object"], {"jobId": ""}, {"jobId": 12.5}]
)
async def test_submit_response_of_the_wrong_shape_is_malformed(
    sleeps: RecordingSleep, body: Any
) -> None:
    async with mock_client(lambda request: httpx.Response(202, json=body), sleeps) as client:
        with pytest.raises(MalformedResponse):
            await client.submit(prompt="p", aspect_ratio="1:1")


# -- hostile bodies ----------------------------------------------------------------------------

CHUNK = 64 * 1024


class CountingBody:
    """A valid JSON body of ``chunks`` × 64 KiB that counts how many chunks the client pulled."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"jobId": "j", "status": "processing", "pad": "'
        for _ in range(self.chunks):
            self.pulled += 1
            yield b" " * CHUNK
        yield b'"}'


async def test_status_bodies_are_capped_while_streaming(sleeps: RecordingSleep) -> None:
    bodies: list[CountingBody] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(CountingBody(100))  # 6.4 MiB
        return httpx.Response(200, content=bodies[-1], headers={"Content-Type": "application/json"})

    async with mock_client(handler, sleeps) as client:
        with pytest.raises(MalformedResponse) as caught:
            await client.get_job("j")
        with pytest.raises(MalformedResponse):
            await client.get_model_schema()
    assert caught.value.retryable is True  # a later poll may be sane again
    # Reading stopped at the 1 MiB cap instead of taking the whole body in.
    assert [body.pulled for body in bodies] == [1024 * 1024 // CHUNK] * 2


async def test_error_bodies_are_read_only_as_far_as_needed(sleeps: RecordingSleep) -> None:
    bodies: list[CountingBody] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(CountingBody(100))
        return httpx.Response(500, content=bodies[-1], headers={"Content-Type": "application/json"})

    async with mock_client(handler, sleeps, max_attempts=2) as client:
        with pytest.raises(ServerError) as caught:
            await client.get_job("j")
    assert caught.value.status == 500 and caught.value.api_message is None
    assert len(bodies) == 2 and all(body.pulled <= 1 for body in bodies)


async def test_compressed_bodies_are_capped_as_they_inflate(sleeps: RecordingSleep) -> None:
    # 64 MiB of valid JSON in ~64 KiB of gzip: one network chunk could inflate to all of it.
    bomb = gzip.compress(b'{"status": "processing", "pad": "' + b" " * (64 << 20) + b'"}', 1)

    async def stream() -> AsyncIterator[bytes]:
        yield bomb

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        return httpx.Response(200, content=stream(), headers=headers)

    async with mock_client(handler, sleeps) as client:
        tracemalloc.start()
        try:
            with pytest.raises(MalformedResponse):
                await client.get_job("j")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 8 << 20


@pytest.mark.parametrize("body", [b"[" * 200_000, b'{"a":' * 100_000, b"\xff\xfe{"])
async def test_bodies_that_cannot_be_parsed_are_malformed(
    sleeps: RecordingSleep, body: bytes
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    async with mock_client(handler, sleeps) as client:
        with pytest.raises(MalformedResponse):
            await client.get_job("j")


# -- rate-limit headers ------------------------------------------------------------------------


async def test_retry_after_http_date(sleeps: RecordingSleep) -> None:
    responses = iter(
        [
            httpx.Response(
                429,
                json={"error": {"code": "rate_limited", "message": "slow down"}},
                headers={
                    "Retry-After": email.utils.format_datetime(
                        datetime.now(UTC) + timedelta(seconds=5), usegmt=True
                    )
                },
            ),
            httpx.Response(200, json={"jobId": "job_1", "status": "processing"}),
        ]
    )
    async with mock_client(lambda request: next(responses), sleeps) as client:
        state = await client.get_job("job_1")
    assert state.job_id == "job_1"
    [delay] = sleeps.delays
    assert 3.5 <= delay <= 5.5


def test_retry_after_and_reset_parsing() -> None:
    assert parse_retry_after("3") == 3
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_rate_limit_reset("12") == 12
    epoch = datetime.now(UTC).timestamp() + 20
    assert parse_rate_limit_reset(str(int(epoch))) == pytest.approx(20, abs=1.5)
    assert parse_rate_limit_reset(str(int(epoch * 1000))) == pytest.approx(20, abs=1.5)


async def test_exhausted_rate_limit_window_gates_the_next_request(
    sleeps: RecordingSleep,
) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.method == "POST":
            return accepted(**{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "2"})
        return httpx.Response(
            200,
            json={"jobId": "job_1", "status": "processing"},
            headers={"X-RateLimit-Remaining": "9"},
        )

    # A clock that stands still: the gate's wait cannot shrink while the test runs.
    async with mock_client(handler, sleeps, clock=lambda: 50.0) as client:
        job = await client.submit(prompt="p", aspect_ratio="1:1")
        assert sleeps.delays == []
        await client.get_job(job)
        assert sleeps.delays == [2]
        await client.get_job(job)
        assert len(sleeps.delays) == 1  # the window was waited out once
    assert seen == [
        "/api/v1/models/flux-kontext-pro/run",
        "/api/v1/jobs/job_1",
        "/api/v1/jobs/job_1",
    ]


async def test_credits_header_updates_last_credits_remaining(sleeps: RecordingSleep) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"jobId": "j", "status": "pending"}, headers={"X-Credits-Remaining": "17"}
        )

    async with mock_client(handler, sleeps) as client:
        assert client.last_credits_remaining is None
        await client.get_job("j")
        assert client.last_credits_remaining == 17


# -- secrets and origins -----------------------------------------------------------------------


async def test_api_key_never_leaks_into_logs_errors_or_repr(
    sleeps: RecordingSleep, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[PixelDojoError] = []
    async with (
        FakePixelDojo(api_key=SECRET) as fake,
        # 1 s: the requests that must succeed keep a margin on a busy machine; the "timeout"
        # faults hold theirs for an hour (released when the double stops).
        PixelDojoClient(SECRET, fake.base_url, sleep=sleeps, timeout=1.0, max_attempts=5) as client,
    ):
        assert SECRET not in repr(client)
        job = await client.submit(prompt="p", aspect_ratio="1:1", seed=1)
        for kind in ("500", "drop", "429", "timeout"):
            fake.fault_next(kind, route="poll", delay=3600)
        state = await client.get_job(job)
        await client.download(state.image_urls[0])
        for kind in ("401", "402", "422", "500", "malformed", "drop", "timeout"):
            fake.fault_next(kind, route="submit", delay=3600)
            try:
                await client.submit(prompt="p", aspect_ratio="1:1")
            except PixelDojoError as exc:
                errors.append(exc)
    async with PixelDojoClient("wrong-key", "https://pixeldojo.test/api/v1") as wrong:
        assert "wrong-key" not in repr(wrong)

    # A server echoing the key back must not get it into a user-facing message.
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"code": "bad_key", "message": f"Bad {SECRET}"}})

    async with PixelDojoClient(
        SECRET, "https://pixeldojo.test/api/v1", transport=httpx.MockTransport(echo), sleep=sleeps
    ) as echoing:
        try:
            await echoing.submit(prompt="p", aspect_ratio="1:1")
        except PixelDojoError as exc:
            errors.append(exc)

    assert len(errors) == 8
    for error in errors:
        for text in (str(error), repr(error), error.message, error.api_message or ""):
            assert SECRET not in text
    assert errors[-1].api_message == "Bad [redacted]"
    assert caplog.records
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in str(record.args)


async def test_foreign_status_url_never_receives_the_token(
    sleeps: RecordingSleep, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        Recorder() as foreign,
        FakePixelDojo(public_base_url=f"{foreign.origin}/api/v1") as fake,
        PixelDojoClient("test-key", fake.base_url, sleep=sleeps) as client,
    ):
        with caplog.at_level(logging.WARNING, logger="bot.pixeldojo.client"):
            job = await client.submit(prompt="p", aspect_ratio="1:1")
            await client.submit(prompt="p", aspect_ratio="1:1")
        assert job.status_url == f"{fake.base_url}/jobs/{job.job_id}"
        first = await client.get_job(job)
        second = await client.get_job(job.status_url)
        with pytest.raises(ValueError):
            await client.get_job(f"{foreign.origin}/api/v1/jobs/{job.job_id}")
        assert first.is_completed and second.is_completed
        assert foreign.requests == []
        assert fake.jobs[job.job_id].polls == 2
        warnings = [r for r in caplog.records if "another origin" in r.getMessage()]
        assert len(warnings) == 1


async def test_links_that_do_not_parse_are_dropped_not_raised(sleeps: RecordingSleep) -> None:
    links = ["http://[::1", "\x00", "https://files.pixeldojo.test/ok.png"]

    def handler(request: httpx.Request) -> httpx.Response:
        body = {"status": "completed", "output": {"images": links}}
        return httpx.Response(200, json=body)

    async with mock_client(handler, sleeps) as client:
        state = await client.get_job("j")
        for link in links[:2]:
            with pytest.raises(MalformedResponse):
                await client.download(link)
    assert state.image_urls == ("https://files.pixeldojo.test/ok.png",)


async def test_jobs_are_polled_by_their_id_whatever_status_url_says(
    sleeps: RecordingSleep,
) -> None:
    polled: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = {"jobId": "job_mine", "statusUrl": "/api/v1/jobs/job_someone_elses"}
            return httpx.Response(202, json=body)
        polled.append(request.url.path)
        return httpx.Response(200, json={"jobId": "job_mine", "status": "processing"})

    async with mock_client(handler, sleeps) as client:
        job = await client.submit(prompt="p", aspect_ratio="1:1")
        await client.get_job(job)
        await client.get_job(job.job_id)
        await client.get_job(job.status_url)
        for wrong in ("https://pixeldojo.test/elsewhere/job_mine", "https://pixeldojo.test/"):
            with pytest.raises(ValueError):
                await client.get_job(wrong)
    assert polled == ["/api/v1/jobs/job_mine"] * 3


async def test_downloads_from_other_hosts_carry_no_authorization(
    fake: FakePixelDojo, sleeps: RecordingSleep
) -> None:
    async with (
        Recorder() as foreign,
        PixelDojoClient(
            "test-key", fake.base_url, sleep=sleeps, trusted_origins=[foreign.origin]
        ) as client,
    ):
        data, content_type = await client.download(f"{foreign.origin}/img.png")
        assert data == foreign.png and content_type == "image/png"
        [(path, headers)] = foreign.requests
        assert path == "/img.png"
        assert "authorization" not in {name.lower() for name in headers}


async def test_download_of_expired_image(fake: FakePixelDojo, client: PixelDojoClient) -> None:
    state = await wait_done(client, await client.submit(prompt="p", aspect_ratio="1:1"))
    fake.expire_images()
    with pytest.raises(ImageExpired) as caught:
        await client.download(state.image_urls[0])
    assert caught.value.message == "The image link has expired."
    assert caught.value.status == 410
    assert isinstance(caught.value, NotFound)


async def test_download_size_cap(fake: FakePixelDojo, client: PixelDojoClient) -> None:
    fake.oversize_images(300_000)
    state = await wait_done(client, await client.submit(prompt="p", aspect_ratio="1:1"))
    with pytest.raises(ImageTooLarge):
        await client.download(state.image_urls[0], max_bytes=100_000)
    data, _ = await client.download(state.image_urls[0])
    assert len(data) >= 300_000

    async with (  # chunked body: no Content-Length to check up front
        Recorder() as foreign,
        PixelDojoClient("test-key", fake.base_url, trusted_origins=[foreign.origin]) as other,
    ):
        with pytest.raises(ImageTooLarge):
            await other.download(f"{foreign.origin}/big.bin", max_bytes=100_000)
        data, _ = await other.download(f"{foreign.origin}/big.bin")
        assert len(data) == 20 * 16_384


async def test_download_rejects_non_http_links(client: PixelDojoClient) -> None:
    with pytest.raises(MalformedResponse):
        await client.download("file:///etc/passwd")


# -- where downloads may go --------------------------------------------------------------------

DNS = {
    "temp.pixeldojo.example": ["93.184.216.34"],
    "cdn.example": ["2606:4700::6810:84e5", "104.16.132.229"],
    "intranet.example": ["192.168.1.5"],
    "split.example": ["93.184.216.35", "10.0.0.1"],
    "localhost": ["::1", "127.0.0.1"],
}


async def fake_dns(host: str, port: int) -> list[str]:
    try:
        return DNS[host]
    except KeyError:
        raise socket.gaierror(socket.EAI_NONAME, "unknown host") from None


class Hops:
    """A scripted web: ``routes`` maps "host/path" to a redirect target or PNG bytes."""

    def __init__(self, routes: dict[str, str | bytes]) -> None:
        self.routes = routes
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        answer = self.routes.get(f"{request.headers['Host']}{request.url.path}")
        if isinstance(answer, bytes):
            return httpx.Response(200, content=answer, headers={"Content-Type": "image/png"})
        if isinstance(answer, str):
            return httpx.Response(302, headers={"Location": answer})
        return httpx.Response(404)

    @property
    def hosts(self) -> list[str]:
        return [request.headers["Host"] for request in self.seen]


PRIVATE_TARGETS = [
    "http://127.0.0.1/x.png",
    "http://127.0.0.1:8080/x.png",
    "http://10.0.0.7/x.png",
    "http://172.16.0.1/x.png",
    "http://192.168.0.1/x.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/x.png",
    "http://0.0.0.0/x.png",
    "http://[::1]/x.png",
    "http://[::ffff:127.0.0.1]/x.png",
    "http://[fe80::1]/x.png",
    "http://[fd00::1]/x.png",
    "http://[2002:7f00:1::]/x.png",
    "http://[64:ff9b::a00:1]/x.png",
    "http://localhost:9000/x.png",
    "http://intranet.example/x.png",
    "http://split.example/x.png",
]


@pytest.mark.parametrize("private", PRIVATE_TARGETS)
async def test_downloads_never_reach_a_private_address(
    sleeps: RecordingSleep, private: str
) -> None:
    web = Hops({"temp.pixeldojo.example/a.png": "https://cdn.example/b.png"})
    web.routes["cdn.example/b.png"] = private  # the private host is the third hop
    async with mock_client(web, sleeps, resolve=fake_dns) as client:
        for url in (private, "https://temp.pixeldojo.example/a.png"):
            with pytest.raises(UnsafeLink) as caught:
                await client.download(url)
            assert caught.value.retryable is False
            assert "private network address" in caught.value.message
    # The two public hops were fetched (once: a refusal is not retried); the private never.
    assert web.hosts == ["temp.pixeldojo.example", "cdn.example"]
    assert sleeps.delays == []


async def test_downloads_connect_to_the_address_that_was_checked(sleeps: RecordingSleep) -> None:
    png = render_placeholder_png("1:1", seed_key="pinned")
    web = Hops(
        {
            "temp.pixeldojo.example/a.png": "https://cdn.example/b.png",
            "cdn.example/b.png": "/c.png",
            "cdn.example/c.png": png,
        }
    )
    async with mock_client(web, sleeps, resolve=fake_dns) as client:
        data, content_type = await client.download("https://temp.pixeldojo.example/a.png")
    assert data == png and content_type == "image/png"
    # Connected by address (so a second DNS answer cannot differ), named by host for TLS.
    assert [r.url.host for r in web.seen] == ["93.184.216.34", "104.16.132.229", "104.16.132.229"]
    assert [r.extensions["sni_hostname"] for r in web.seen] == [
        "temp.pixeldojo.example",
        "cdn.example",
        "cdn.example",
    ]
    assert all("authorization" not in r.headers for r in web.seen)


async def test_api_origin_and_trusted_origins_are_not_checked(sleeps: RecordingSleep) -> None:
    png = render_placeholder_png("1:1", seed_key="trusted")
    web = Hops(
        {
            "pixeldojo.test/files/a.png": "http://10.9.9.9:8000/b.png",
            "10.9.9.9:8000/b.png": png,
        }
    )
    async with mock_client(
        web, sleeps, resolve=fake_dns, trusted_origins=["http://10.9.9.9:8000"]
    ) as client:
        data, _ = await client.download("https://pixeldojo.test/files/a.png")
        with pytest.raises(UnsafeLink):
            await client.download("http://10.9.9.9:8001/b.png")  # another port: not trusted
    assert data == png
    assert "authorization" in web.seen[0].headers  # the API origin itself
    assert "authorization" not in web.seen[1].headers
    assert len(web.seen) == 2


@pytest.mark.parametrize(
    "start",
    ["https://temp.pixeldojo.example/a.png", "https://pixeldojo.test/files/a.png"],
)
async def test_a_redirect_never_lands_on_the_api_origin(sleeps: RecordingSleep, start: str) -> None:
    # A result host (or the API's own file route) bounces the download to an API path: followed,
    # that hop would carry the bearer key and be an API request no budget counted.
    web = Hops(
        {
            "temp.pixeldojo.example/a.png": "https://pixeldojo.test/api/v1/jobs/job_1",
            "pixeldojo.test/files/a.png": "/api/v1/jobs/job_1",
            "pixeldojo.test/api/v1/jobs/job_1": render_placeholder_png("1:1", seed_key="api"),
        }
    )
    async with mock_client(web, sleeps, resolve=fake_dns) as client:
        with pytest.raises(MalformedResponse) as caught:
            await client.download(start)
    assert "redirects somewhere unusable" in caught.value.message
    # The API path was never requested, so neither the key nor a budget slot went to it.
    assert [r.url.path for r in web.seen] == [httpx.URL(start).path]


async def test_redirects_are_followed_only_so_far(sleeps: RecordingSleep) -> None:
    web = Hops({"temp.pixeldojo.example/a.png": "/a.png"})
    async with mock_client(web, sleeps, resolve=fake_dns) as client:
        with pytest.raises(MalformedResponse) as caught:
            await client.download("https://temp.pixeldojo.example/a.png")
    assert "too many" in caught.value.message
    assert len(web.seen) == 6  # the link and five redirects


@pytest.mark.parametrize(
    "location", ["file:///etc/passwd", "gopher://x/", "data:image/png;base64,AAAA"]
)
async def test_redirects_to_unusable_links_are_refused(
    sleeps: RecordingSleep, location: str
) -> None:
    web = Hops({"temp.pixeldojo.example/a.png": location})
    async with mock_client(web, sleeps, resolve=fake_dns) as client:
        with pytest.raises(MalformedResponse):
            await client.download("https://temp.pixeldojo.example/a.png")
    assert len(web.seen) == 1


async def test_an_unresolvable_host_is_a_network_error(sleeps: RecordingSleep) -> None:
    async with mock_client(Hops({}), sleeps, resolve=fake_dns, max_attempts=2) as client:
        with pytest.raises(NetworkError) as caught:
            await client.download("https://nowhere.example/a.png")
    assert caught.value.retryable is True and len(sleeps.delays) == 1


# -- a job's downloads -------------------------------------------------------------------------

NOISE_PNG = noise_png("1:1", seed_key="noise", min_bytes=200_000)


def result_urls(n: int) -> list[str]:
    return [f"https://pixeldojo.test/files/{index}.png" for index in range(n)]


async def test_a_jobs_downloads_share_a_byte_budget(sleeps: RecordingSleep) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=NOISE_PNG, headers={"Content-Type": "image/png"})

    budget = 3 * len(NOISE_PNG) - 1
    async with mock_client(handler, sleeps, max_job_download_bytes=budget) as client:
        assert len(await client.download_results(result_urls(2))) == 2
        with pytest.raises(ImageTooLarge) as caught:
            await client.download_results(result_urls(4))
    assert "together" in caught.value.message


async def test_a_job_takes_only_the_images_it_asked_for_a_few_at_a_time(
    sleeps: RecordingSleep,
) -> None:
    in_flight, peak, served = 0, 0, []

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        served.append(request.url.path)
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(20):  # let every other download that may start, start
            await asyncio.sleep(0)
        in_flight -= 1
        return httpx.Response(200, content=NOISE_PNG, headers={"Content-Type": "image/png"})

    async with mock_client(handler, sleeps, download_concurrency=2) as client:
        results = await client.download_results(result_urls(60), limit=6)
    assert [mime for _, mime in results] == ["image/png"] * 6
    assert served == [f"/files/{index}.png" for index in range(6)]
    assert 1 <= peak <= 2


async def test_the_first_failed_download_stops_the_others(sleeps: RecordingSleep) -> None:
    served: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        served.append(request.url.path)
        if request.url.path == "/files/0.png":
            return httpx.Response(404)
        await asyncio.sleep(0)
        return httpx.Response(200, content=NOISE_PNG, headers={"Content-Type": "image/png"})

    async with mock_client(handler, sleeps, download_concurrency=2) as client:
        with pytest.raises(ImageExpired):
            await client.download_results(result_urls(8))
    assert len(served) < 8


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        PixelDojoClient("")
    with pytest.raises(ValueError):
        PixelDojoClient("k", "ftp://pixeldojo.ai/api/v1")
    with pytest.raises(ValueError):
        PixelDojoClient("k", max_attempts=0)


class FakeTime:
    """A monotonic clock only its sleep moves, and that sleep: waits cost no time at all."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_request_budget_spreads_a_fresh_allowance_instead_of_bursting() -> None:
    clock = FakeTime()
    budget = RequestBudget(60, clock=clock, sleep=clock.sleep, rng=random.Random(1))
    sent = []
    for _ in range(70):
        await budget.acquire()
        sent.append(clock.now)
    # 60/min less the margin in any minute, at most twice the steady rate.
    assert budget.capacity == 58
    assert sum(t < sent[0] + 60 for t in sent) == 58
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 60 / 58 / 2 - 1e-9
    assert sent[57] - sent[0] >= 29


async def test_request_budget_serves_the_most_urgent_caller_first() -> None:
    clock = ManualTime()
    budget = RequestBudget(60, clock=clock, sleep=clock.sleep)
    await budget.acquire()
    order: list[str] = []

    async def one(name: str, priority: float) -> None:
        await budget.acquire(priority)
        order.append(name)

    tasks = [
        asyncio.create_task(one(name, priority))
        for name, priority in (("submit", PRIORITY_SUBMIT), ("early poll", 0.9), ("done", 0.1))
    ]
    await asyncio.sleep(0)  # each task runs up to its wait
    assert budget.pressure() * budget.capacity == 4  # one sent, three waiting
    while not all(task.done() for task in tasks):
        clock.advance(0.25)
        await asyncio.sleep(0)
    assert order == ["done", "early poll", "submit"]
