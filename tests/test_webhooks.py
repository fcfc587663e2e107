"""Webhooks: PixelDojo calls the bot back when a job ends, and the bot posts the result.

A callback with the job's token whose body is a complete, bounded job status is delivered as it
stands (no status request); any other callback only makes the bot check the job at once, and
PixelDojo's answer decides. The bot runs with `PIXELDOJO_WEBHOOK_URL` pointing at a loopback
reverse proxy in front of its receiver, against the PixelDojo double under the documented 60
requests/min limit. Jobs are held "generating" until the test finishes them, so every step is
ordered by events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from bot.app import PixelDojoBot
from bot.config import Settings
from bot.generation.models import JobState
from bot.generation.runner import JobRunner, RunnerSettings
from bot.generation.service import GenerationService
from bot.pixeldojo.client import PixelDojoClient
from bot.pixeldojo.models import MODEL_ID, JobStatus
from bot.pixeldojo.sandbox import SandboxPixelDojo
from bot.pixeldojo.webhooks import (
    MAX_BODY_BYTES,
    WebhookReceiver,
    WebhookTokens,
    doubt,
    read_report,
    result_origins,
)
from bot.storage import Database
from bot.storage.jobs import JobStore
from tests.doubles.discord_double import DiscordDouble, run_bot_against
from tests.doubles.pixeldojo import FakePixelDojo, WebhookCall
from tests.doubles.pixeldojo_rate_limit import RateLimiter
from tests.doubles.presenter import RecordingPresenter
from tests.doubles.reverse_proxy import ReverseProxy
from tests.helpers import (
    ALICE_ID,
    CHANNEL_ID,
    Harness,
    credits_used,
    footer_has,
    queued_job_id,
    run_cli,
    run_until_exit,
    title_of,
)
from tests.helpers import request as runner_request

HELD = 24 * 3600.0
"""A job duration no test waits out: jobs end when the test calls `finish_jobs`."""


@pytest.fixture
async def api() -> AsyncIterator[FakePixelDojo]:
    limiter = RateLimiter(limit=60, window=60, exempt=lambda r: r.path.startswith("/files/"))
    async with FakePixelDojo(job_duration=HELD, middlewares=[limiter.middleware]) as fake:
        yield fake


@pytest.fixture
async def proxy() -> AsyncIterator[ReverseProxy]:
    async with ReverseProxy() as running:
        yield running


BotStarter = Callable[..., AbstractAsyncContextManager[Harness]]


@pytest.fixture
def webhook_bot(
    double: DiscordDouble, api: FakePixelDojo, settings: Settings, proxy: ReverseProxy
) -> BotStarter:
    """`async with webhook_bot(**setting_changes) as harness`: the bot with webhooks on."""

    @asynccontextmanager
    async def start(**changes: Any) -> AsyncIterator[Harness]:
        changed = replace(settings, pixeldojo_webhook_url=proxy.base_url, webhook_port=0, **changes)
        bot = PixelDojoBot(changed, guild_ready_timeout=0.1)
        async with run_bot_against(double, bot):
            receiver = bot.services.webhooks
            assert receiver is not None
            proxy.target_port = lambda: receiver.port
            await double.wait_for_commands()
            yield Harness(bot, double, api)

    return start


def api_calls(api: FakePixelDojo) -> list[str]:
    """Submits and polls, in order (the capability check at start-up and downloads aside)."""
    return [
        "submit" if path.endswith("/run") else "poll"
        for method, path, _, _ in api.request_log
        if path.endswith("/run") or path.startswith("/api/v1/jobs/")
    ]


async def generating(harness: Harness, prompt: str = "a lighthouse at dawn") -> int:
    """Run `/imagine` and wait until the member sees it generating (PixelDojo took it)."""
    job_id = await queued_job_id(harness, await harness.imagine(prompt))
    await harness.double.wait_for_message(
        lambda m: footer_has(m, f"Job #{job_id}") and title_of(m).startswith("🎨")
    )
    return job_id


def webhook_url(api: FakePixelDojo) -> str:
    url = api.submissions[-1]["webhook_url"]
    assert isinstance(url, str)
    return url


def receiver_url(harness: Harness, url: str) -> str:
    """`url` (as sent to PixelDojo) addressed to the receiver directly, past the proxy."""
    receiver = harness.bot.services.webhooks
    assert receiver is not None
    path = url.split("/pixeldojo/", 1)[1]
    return f"http://127.0.0.1:{receiver.port}/pixeldojo/{path}"


async def post(url: str, body: bytes | dict[str, Any], *, chunked: bool = False) -> int:
    data: Any = body if isinstance(body, bytes) else aiohttp.JsonPayload(body)
    if chunked:

        async def chunks() -> AsyncIterator[bytes]:
            assert isinstance(body, bytes)
            for start in range(0, len(body), 8192):
                yield body[start : start + 8192]

        data = chunks()
    async with aiohttp.ClientSession() as session, session.post(url, data=data) as response:
        return response.status


def results_of(double: DiscordDouble, job_id: int) -> list[int]:
    return [
        m.id
        for m in double.channel_messages(CHANNEL_ID)
        if m.attachments and footer_has(m, f"Job #{job_id}")
    ]


async def test_a_complete_callback_posts_the_result_without_a_status_request(
    webhook_bot: BotStarter, api: FakePixelDojo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with webhook_bot() as harness:
        job_id = await generating(harness)
        url = webhook_url(api)
        assert url.startswith(harness_base(harness) + f"/pixeldojo/webhook/{job_id}/")
        assert api_calls(api) == ["submit"]
        # PixelDojo charged less than the estimate (a discount, say): the callback says so.
        pixeldojo_job = next(iter(api.jobs.values()))
        pixeldojo_job.credit_cost = 0
        api.finish_jobs()  # PixelDojo finishes and calls back

        result = await harness.result_for(job_id)
        job = await harness.bot.services.runner.wait_finished(job_id)
        calls = await api.wait_for_webhooks(1)
        used = await credits_used(harness.bot.services.db, ALICE_ID)
    assert job.state is JobState.POSTED
    assert calls == [WebhookCall(pixeldojo_job.job_id, 200)]
    # The submit, and nothing else: the callback's report was the result.
    assert api_calls(api) == ["submit"]
    assert job.polls == 0
    # Settled from the callback's creditCost.
    assert job.credits_charged == 0 and used == 0
    # PixelDojo's own file, downloaded and checked as any result is.
    assert results_of(harness.double, job_id) == [result.id]
    assert result.attachments[0].data == api._draw(pixeldojo_job, 0)
    assert "called back" in caplog.text
    assert url.rsplit("/", 1)[1] not in caplog.text, "the token was logged"


def _completed_body(api: FakePixelDojo) -> dict[str, Any]:
    """The body PixelDojo calls back with once the (only) job has completed."""
    return api._finished_body(next(iter(api.jobs.values())))


def _with(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(body: dict[str, Any]) -> dict[str, Any]:
        return {**body, **changes}

    return change


def _without(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k != key}

    return change


def _more_images(body: dict[str, Any]) -> dict[str, Any]:
    (url,) = body["output"]["images"]
    return {**body, "output": {"images": [url, url + "?copy=1"]}}


def _foreign_images(body: dict[str, Any]) -> dict[str, Any]:
    # Loopback, so the test never leaves the machine; another port is another origin.
    return {**body, "output": {"images": ["http://127.0.0.1:9/evil.png"]}}


# Through the whole bot; `doubt`'s other refusals are checked directly below.
HOSTILE_BODIES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "foreign image host": _foreign_images,
    "cost above the price": _with(creditCost=5),
    "too many images": _more_images,
    "no creditCost": _without("creditCost"),
    "says failed": _with(status="failed", error="NSFW content detected"),
}


@pytest.mark.parametrize("change", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
async def test_an_incomplete_or_hostile_callback_is_checked_and_the_poll_wins(
    webhook_bot: BotStarter,
    api: FakePixelDojo,
    change: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    async with webhook_bot() as harness:
        job_id = await generating(harness)
        api.drop_webhooks(1)  # PixelDojo's own callback is lost...
        api.finish_jobs()
        await api.wait_for_webhooks(1)
        # ...and one with the right token and a body that cannot be taken as it stands comes.
        assert await post(webhook_url(api), change(_completed_body(api))) == 200

        result = await harness.result_for(job_id)
        job = await harness.bot.services.runner.wait_finished(job_id)
        used = await credits_used(harness.bot.services.db, ALICE_ID)
    # One status check, and what PixelDojo answered is what was posted and charged.
    assert api_calls(api) == ["submit", "poll"]
    assert job.state is JobState.POSTED and job.polls == 1
    assert job.credits_charged == 1 and used == 1
    assert results_of(harness.double, job_id) == [result.id]
    assert len(result.attachments) == 1
    assert result.attachments[0].data == api._draw(next(iter(api.jobs.values())), 0)


async def test_a_callback_that_is_not_a_job_status_is_checked(
    webhook_bot: BotStarter, api: FakePixelDojo
) -> None:
    async with webhook_bot() as harness:
        job_id = await generating(harness)
        api.drop_webhooks(1)
        api.finish_jobs()
        await api.wait_for_webhooks(1)
        assert await post(webhook_url(api), b"<html>not json</html>") == 200

        await harness.result_for(job_id)
        job = await harness.bot.services.runner.wait_finished(job_id)
    assert api_calls(api) == ["submit", "poll"]
    assert job.state is JobState.POSTED


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[]", b'{"jobId": "job_1"}', b"[" * 100_000], ids=repr
)
def test_only_the_job_status_shape_is_read_as_a_report(body: bytes) -> None:
    assert read_report(body) is None


PIXELDOJO_FILE = "https://temp.pixeldojo.ai/results/job_1-0.png"


def _report(**changes: Any) -> JobStatus:
    body = {
        "jobId": "job_1",
        "status": "completed",
        "output": {"images": [PIXELDOJO_FILE]},
        "creditCost": 1,
        **changes,
    }
    report = read_report(json.dumps({k: v for k, v in body.items() if v is not None}).encode())
    assert report is not None
    return report


def _doubt(report: JobStatus, *, api_job_id: str | None = "job_1", outputs: int = 1) -> str | None:
    return doubt(
        report,
        api_job_id=api_job_id,
        num_outputs=outputs,
        price=outputs,
        result_origins=result_origins("https://pixeldojo.ai/api/v1"),
    )


def test_a_complete_report_on_pixeldojo_hosts_is_taken_as_it_stands() -> None:
    assert _doubt(_report()) is None
    assert _doubt(_report(creditCost=0)) is None  # less than the estimate is a charge too
    on_the_api = "https://pixeldojo.ai/api/v1/files/job_1-0.png"
    assert _doubt(_report(output={"images": [on_the_api]})) is None
    two = {"images": [PIXELDOJO_FILE, PIXELDOJO_FILE + "?2"]}
    assert _doubt(_report(output=two, creditCost=2), outputs=2) is None


@pytest.mark.parametrize(
    ("changes", "api_job_id"),
    [
        ({"jobId": None}, "job_1"),
        ({"jobId": "job_2"}, "job_1"),
        ({}, None),  # the submission's answer is not recorded yet
        ({"status": "failed", "output": None}, "job_1"),
        ({"status": "processing"}, "job_1"),
        ({"output": None}, "job_1"),
        ({"output": {"images": ["http://temp.pixeldojo.ai/job_1-0.png"]}}, "job_1"),
        ({"output": {"images": ["https://temp.pixeldojo.ai.evil.example/x.png"]}}, "job_1"),
        ({"output": {"images": ["/files/job_1-0.png"]}}, "job_1"),  # relative: resolved how?
        ({"output": {"images": ["//temp.pixeldojo.ai/job_1-0.png"]}}, "job_1"),
        ({"output": {"images": ["https://xn--zz.pixeldojo.ai/x.png"]}}, "job_1"),  # bad IDNA
        ({"output": {"images": ["https://temp.pixeldojo.ai:8443/x.png"]}}, "job_1"),
        ({"output": {"images": [PIXELDOJO_FILE, PIXELDOJO_FILE + "?2"]}}, "job_1"),
        ({"creditCost": None}, "job_1"),
        ({"creditCost": 2}, "job_1"),
        ({"creditCost": -1}, "job_1"),
        ({"creditCost": 0.5}, "job_1"),
        ({"creditCost": True}, "job_1"),
    ],
    ids=repr,
)
def test_a_report_outside_the_jobs_bounds_is_doubted(
    changes: dict[str, Any], api_job_id: str | None
) -> None:
    assert _doubt(_report(**changes), api_job_id=api_job_id) is not None


def harness_base(harness: Harness) -> str:
    base = harness.bot.settings.pixeldojo_webhook_url
    assert base is not None
    return base


async def test_a_wrong_token_or_unknown_job_is_404_and_polls_nothing(
    webhook_bot: BotStarter, api: FakePixelDojo
) -> None:
    async with webhook_bot() as harness:
        runner = harness.bot.services.runner
        job_id = await generating(harness)
        url = receiver_url(harness, webhook_url(api))
        due = runner.next_poll_in(job_id)
        assert due is not None and due > 5  # the safety net is far off
        good_token = url.rsplit("/", 1)[1]
        forged = url[: -len(good_token)] + ("0" if good_token[0] != "0" else "1") + good_token[1:]
        body = {"jobId": "x", "status": "completed"}

        assert await post(forged, body) == 404
        assert await post(url.rsplit("/", 1)[0] + "/not-a-token", body) == 404
        # Another job id with this job's token, and an id the bot never had.
        assert await post(url.replace(f"/{job_id}/", f"/{job_id + 1}/"), body) == 404
        tokens = harness.bot.services.webhooks.tokens  # type: ignore[union-attr]
        assert await post(receiver_url(harness, tokens.url_for(999)), body) == 404

        # The runner's next check did not move, and nothing was asked of PixelDojo.
        after = runner.next_poll_in(job_id)
        assert after is not None and after > 5
        assert api_calls(api) == ["submit"]


async def test_an_oversized_callback_is_413(webhook_bot: BotStarter, api: FakePixelDojo) -> None:
    async with webhook_bot() as harness:
        runner = harness.bot.services.runner
        job_id = await generating(harness)
        url = receiver_url(harness, webhook_url(api))
        huge = b" " * (MAX_BODY_BYTES + 1)

        assert await post(url, huge) == 413
        assert await post(url, huge, chunked=True) == 413

        after = runner.next_poll_in(job_id)
        assert after is not None and after > 5
        assert api_calls(api) == ["submit"]


async def test_a_repeated_callback_posts_once(webhook_bot: BotStarter, api: FakePixelDojo) -> None:
    async with webhook_bot() as harness:
        job_id = await generating(harness)
        api.repeat_webhooks(1)
        api.finish_jobs()

        await harness.result_for(job_id)
        calls = await api.wait_for_webhooks(2)
        # Once more, long after the job was posted: still accepted, still nothing done.
        assert await post(webhook_url(api), _completed_body(api)) == 200
        assert await post(webhook_url(api), {"status": "completed"}) == 200
        job = await harness.bot.services.runner.wait_finished(job_id)
    assert [call.status for call in calls] == [200, 200]
    assert job.polls == 0
    assert api_calls(api) == ["submit"]
    assert len(results_of(harness.double, job_id)) == 1


async def test_a_lost_callback_still_ends_in_a_post(
    webhook_bot: BotStarter, api: FakePixelDojo
) -> None:
    # A short safety net, so the test need not wait the default 30 s for it.
    async with webhook_bot(webhook_fallback_poll=0.2) as harness:
        job_id = await generating(harness)
        api.drop_webhooks(1)
        api.finish_jobs()

        result = await harness.result_for(job_id)
        job = await harness.bot.services.runner.wait_finished(job_id)
        calls = await api.wait_for_webhooks(1)
    assert calls == [WebhookCall(next(iter(api.jobs)), 0, dropped=True)]
    assert job.state is JobState.POSTED
    assert results_of(harness.double, job_id) == [result.id]


async def test_a_forged_completion_is_checked_and_not_trusted(
    webhook_bot: BotStarter, api: FakePixelDojo
) -> None:
    async with webhook_bot() as harness:
        job_id = await generating(harness)
        url = webhook_url(api)  # leaked: the token is right, the body is a lie
        forged = {
            "jobId": next(iter(api.jobs)),
            "status": "completed",
            "output": {"images": ["http://127.0.0.1:9/evil.png"]},
            "creditCost": 0,
        }
        assert await post(url, forged) == 200
        # The bot asks PixelDojo, which says the job is still running: nothing is posted.
        await api.wait_for_requests("GET", "/api/v1/jobs/", 1)
        assert api_calls(api) == ["submit", "poll"]

        api.finish_jobs()  # now it really ends, and PixelDojo calls back
        result = await harness.result_for(job_id)
        job = await harness.bot.services.runner.wait_finished(job_id)
    assert job.state is JobState.POSTED
    assert job.credits_charged == 1  # PixelDojo's creditCost, not the forged 0
    # PixelDojo's own callback was complete: delivered without another check.
    assert api_calls(api) == ["submit", "poll"]
    assert results_of(harness.double, job_id) == [result.id]
    # The posted image is PixelDojo's own file.
    png = api._draw(next(iter(api.jobs.values())), 0)
    assert result.attachments[0].data == png


async def test_tokens_survive_a_restart_and_differ_per_database(tmp_path: Path) -> None:
    urls = []
    for name in ("one", "one", "two"):
        db = Database(tmp_path / f"{name}.sqlite3")
        await db.connect()
        try:
            urls.append((await WebhookTokens.load(db, "https://bot.example.com")).url_for(7))
        finally:
            await db.close()
    assert urls[0] == urls[1] != urls[2]
    assert urls[0].startswith("https://bot.example.com/pixeldojo/webhook/7/")


async def test_a_port_in_use_exits_with_one_line(
    double: DiscordDouble, settings: Settings, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        changed = replace(
            settings, pixeldojo_webhook_url="https://bot.example.com", webhook_port=port
        )
        code, err = await run_until_exit(changed, tmp_path)
    assert code == 2
    problems = [line for line in err.splitlines() if line.startswith("pixeldojo-bot:")]
    assert problems == [
        "pixeldojo-bot: cannot listen for webhooks on "
        f"WEBHOOK_HOST:WEBHOOK_PORT=127.0.0.1:{port}: Address already in use"
    ], err


async def test_a_callback_after_a_restart_still_posts(
    webhook_bot: BotStarter, api: FakePixelDojo
) -> None:
    async with webhook_bot() as harness:
        job_id = await generating(harness)
    # Restarted (same database): the job resumes with one poll (still running), and the
    # callback PixelDojo makes later carries the token issued before the restart.
    async with webhook_bot() as harness:
        await api.wait_for_requests("GET", "/api/v1/jobs/", 1)
        api.finish_jobs()
        result = await harness.result_for(job_id)
        job = await harness.bot.services.runner.wait_finished(job_id)
        calls = await api.wait_for_webhooks(1)
    assert calls[0].status == 200
    assert job.state is JobState.POSTED
    assert api_calls(api) == ["submit", "poll"]
    assert results_of(harness.double, job_id) == [result.id]


async def test_a_flood_of_callbacks_checks_a_job_at_most_three_times(
    webhook_bot: BotStarter, api: FakePixelDojo
) -> None:
    async with webhook_bot() as harness:
        runner = harness.bot.services.runner
        job_id = await generating(harness)
        url = webhook_url(api)  # leaked: every call is valid, and the job is still running
        for polls in (1, 2, 3):
            assert await post(url, {"status": "completed"}) == 200
            await api.wait_for_requests("GET", "/api/v1/jobs/", polls)
        for _ in range(5):
            assert await post(url, {"status": "completed"}) == 200

        # Once the third check's answer is handled, the job waits for its sparse schedule.
        # (The runner has no event for that: wait on its state, with a timeout.)
        async with asyncio.timeout(5):
            while (due := runner.next_poll_in(job_id)) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        assert due > 5
        assert api_calls(api) == ["submit", "poll", "poll", "poll"]


async def test_the_command_line_never_uses_webhooks(tmp_path: Path) -> None:
    with socket.socket() as taken:  # the running bot's receiver, say
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            "PATH": "/usr/bin:/bin",
            "PIXELDOJO_SANDBOX": "1",
            "POLL_INITIAL_INTERVAL": "0.2",
            "PIXELDOJO_WEBHOOK_URL": "https://bot.example.com",
            "WEBHOOK_PORT": str(taken.getsockname()[1]),
        }
        code, out, err = await run_cli(env, "hello", "--out", "o", cwd=tmp_path)
    assert code == 0, err
    assert len(out.split()) == 1


async def test_the_sandbox_calls_back_with_the_job_status_body() -> None:
    called: asyncio.Future[tuple[int, JobStatus | None]] = (
        asyncio.get_running_loop().create_future()
    )

    def poll_now(job_id: int, report: JobStatus | None) -> bool:
        called.set_result((job_id, report))
        return True

    tokens = WebhookTokens(b"secret", "")
    receiver = WebhookReceiver(tokens, poll_now=poll_now, was_submitted=_never, port=0)
    await receiver.start()
    tokens.public_base = f"http://127.0.0.1:{receiver.port}"
    try:
        async with SandboxPixelDojo(job_duration=0.0) as sandbox:
            async with httpx.AsyncClient() as http:
                submitted = await http.post(
                    f"{sandbox.base_url}/models/{MODEL_ID}/run",
                    json={"prompt": "a kite", "webhook_url": tokens.url_for(41)},
                    headers={"Authorization": "Bearer any"},
                )
                assert submitted.status_code == 202
                job_id, report = await asyncio.wait_for(called, 10)
                assert job_id == 41
                polled = await http.get(
                    f"{sandbox.base_url}/jobs/{submitted.json()['jobId']}",
                    headers={"Authorization": "Bearer any"},
                )
        assert polled.json()["status"] == "completed"
        # The callback's body, read as the poll's answer would be.
        assert report is not None and report.is_completed
        assert report == JobStatus.from_payload(polled.json())
    finally:
        await receiver.stop()


async def _never(job_id: int) -> bool:
    return False


async def test_a_callback_racing_the_submission_is_not_lost(
    webhook_bot: BotStarter, api: FakePixelDojo
) -> None:
    # An instant job: PixelDojo may call back before the bot has recorded its answer to the
    # submit. Either way the callback's report is delivered once the job is recorded.
    api.set_duration(0.0)
    async with webhook_bot() as harness:
        job_id = await queued_job_id(harness, await harness.imagine("a quick sketch"))
        result = await harness.result_for(job_id)
        job = await harness.bot.services.runner.wait_finished(job_id)
        calls = await api.wait_for_webhooks(1)
    assert calls[0].status == 200
    assert job.polls == 0
    assert api_calls(api) == ["submit"]
    assert results_of(harness.double, job_id) == [result.id]


class GatedClient(PixelDojoClient):
    """Counts status checks per PixelDojo job; the second check of `gated` waits for `gate`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: dict[str, int] = {}
        self.gated: str | None = None
        self.gate = asyncio.Event()
        self._called = asyncio.Event()

    async def get_job(self, job: Any, **kwargs: Any) -> Any:
        job_id = str(job)
        self.calls[job_id] = self.calls.get(job_id, 0) + 1
        called, self._called = self._called, asyncio.Event()
        called.set()
        if job_id == self.gated and self.calls[job_id] == 2:
            await self.gate.wait()
        return await super().get_job(job, **kwargs)

    async def wait_for_call(self, job_id: str, count: int) -> None:
        async with asyncio.timeout(10):
            while self.calls.get(job_id, 0) < count:
                called = self._called
                await called.wait()


async def test_a_moved_check_is_never_made_twice(api: FakePixelDojo, tmp_path: Path) -> None:
    """poll_now leaves the job's old heap entry behind; it must not become a second poll of
    the same job (two checks of one job in flight could post its result twice)."""
    db = Database(tmp_path / "bot.sqlite3")
    await db.connect()
    client = GatedClient("test-key", api.base_url)
    presenter = RecordingPresenter()
    store = JobStore(db)
    settings = RunnerSettings(
        poll_initial_interval=0.02, poll_max_interval=0.05, webhooks=True, webhook_fallback_poll=0.2
    )
    runner = JobRunner(store, client, presenter, settings)
    service = GenerationService(store, runner)
    await runner.start()
    try:
        first = await service.reserve(runner_request(prompt="one"))
        await service.launch(first, status_message_id=99)
        await asyncio.wait_for(presenter.generating.wait(), 10)  # submitted and scheduled
        api_job = (await store.get(first.id)).api_job_id  # type: ignore[union-attr]
        assert api_job is not None
        client.gated = api_job
        assert runner.poll_now(first.id)  # moved to now: its old entry stays in the heap
        await client.wait_for_call(api_job, 2)  # the check (still running), then the next one
        # A second job, due after both of the first job's entries: when it is polled, the
        # scheduler has passed them, and the first job's second check is still in flight.
        second = await service.reserve(runner_request(prompt="two"))
        await service.launch(second, status_message_id=98)
        async with asyncio.timeout(10):
            while True:
                presenter.generating.clear()  # before reading: a later submit sets it again
                other = (await store.get(second.id)).api_job_id  # type: ignore[union-attr]
                if other is not None:
                    break
                await presenter.generating.wait()
        await client.wait_for_call(other, 1)
        assert client.calls[api_job] == 2, "the first job was checked twice at once"
    finally:
        client.gate.set()
        await runner.stop()
        await client.aclose()
        await db.close()
