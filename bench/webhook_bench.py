"""Webhooks against polling, under PixelDojo's documented limit (60 requests/min per key).

Run from the repository root: `python bench/webhook_bench.py [--jobs N] [--duration S]
[--spread S] [--modes polling webhooks]`.

The real `JobStore` (temporary file database), `JobRunner` (product defaults) and
`PixelDojoClient` run against FakePixelDojo behind the sliding-window `RateLimiter`; the
presenter only records when each result would be posted. `--jobs` jobs of `--duration` s are
submitted over `--spread` s, twice: once polling only, once with webhooks on (the bot's
receiver, per-job tokens, the double calling back when each job ends; polls are then only the
safety net). Printed per mode: wall time until every job is posted, requests per job (submits
and polls; downloads are another host and do not count), HTTP 429s, jobs lost, and completion
(the moment the double finished the job) to posted, p50 and p95.

Each mode starts cold (nothing learned), as a bot's first minutes do.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.generation.models import GenerationRequest, Job
from bot.generation.runner import JobRunner, Phase, QueuePosition, ResultImage, RunnerSettings
from bot.generation.service import admit_without_limits
from bot.pixeldojo.client import PixelDojoClient
from bot.pixeldojo.transport import DOCUMENTED_REQUESTS_PER_MINUTE
from bot.pixeldojo.webhooks import WebhookReceiver, WebhookTokens
from bot.storage import Database
from bot.storage.jobs import JobStore
from tests.doubles.pixeldojo import FakePixelDojo
from tests.doubles.pixeldojo_rate_limit import RateLimiter


class Recorder:
    """A presenter that notes when each result would be posted."""

    def __init__(self) -> None:
        self.posted: dict[int, float] = {}
        self.failed: dict[int, str] = {}
        self.done = asyncio.Event()
        self.expected = 0

    async def show_status(
        self, job: Job, phase: Phase, elapsed: float, queue: QueuePosition | None = None
    ) -> None:
        return None

    async def show_failure(self, job: Job, reason: str) -> None:
        self.failed[job.id] = reason
        self._check()

    async def post_result(self, job: Job, images: list[ResultImage], elapsed: float) -> int:
        self.posted[job.id] = time.monotonic()
        self._check()
        return job.id

    async def find_posted_result(self, job: Job) -> int | None:
        return None

    def forget(self, job_id: int) -> None:
        """Nothing is kept per job."""

    def _check(self) -> None:
        if len(self.posted) + len(self.failed) >= self.expected:
            self.done.set()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if values else 0


async def run(mode: str, jobs: int, duration: float, spread: float, folder: Path) -> None:
    limiter = RateLimiter(limit=60, window=60, exempt=lambda r: r.path.startswith("/files/"))
    api = FakePixelDojo(job_duration=duration, middlewares=[limiter.middleware])
    await api.start()
    db = Database(folder / f"{mode}.sqlite3")
    await db.connect()
    store = JobStore(db)
    presenter = Recorder()
    presenter.expected = jobs
    # As bot/services.py builds it: the request budget on, at the documented figure.
    client = PixelDojoClient(
        "test-key", api.base_url, requests_per_minute=DOCUMENTED_REQUESTS_PER_MINUTE
    )
    webhooks = mode == "webhooks"
    runner = JobRunner(store, client, presenter, RunnerSettings(webhooks=webhooks))
    receiver = None
    if webhooks:
        tokens = WebhookTokens(b"bench-secret", "")
        receiver = WebhookReceiver(
            tokens, poll_now=runner.poll_now, was_submitted=_never, host="127.0.0.1", port=0
        )
        await receiver.start()
        tokens.public_base = f"http://127.0.0.1:{receiver.port}"
        runner.webhook_url_for = lambda job: tokens.url_for(job.id)
    await runner.start()
    started = time.monotonic()
    rng = random.Random(9)
    offsets = sorted(rng.uniform(0, spread) for _ in range(jobs))
    try:
        for index, offset in enumerate(offsets):
            await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
            request = GenerationRequest(
                guild_id=1,
                channel_id=1,
                user_id=100 + index % 10,
                prompt=f"bench {index}",
                aspect_ratio="1:1",
            )
            job, _ = await store.create_admitted(request, admit_without_limits)
            runner.submit(job)
        await asyncio.wait_for(presenter.done.wait(), 15 * 60)
        wall = time.monotonic() - started
    finally:
        if receiver is not None:
            await receiver.stop()
        await runner.stop()
        await client.aclose()
        await db.close()
        await api.stop()

    by_prompt = {job.prompt: job for job in api.jobs.values()}
    rows = await _jobs(folder / f"{mode}.sqlite3")
    delays = [
        presenter.posted[job_id] - by_prompt[prompt].complete_at
        for job_id, prompt in rows
        if job_id in presenter.posted and prompt in by_prompt
    ]
    requests = limiter.stats.total_allowed + limiter.stats.total_refused
    print(f"{mode}:")
    print(f"  posted {len(presenter.posted)}/{jobs}, lost {len(presenter.failed)}")
    print(
        f"  wall time until all posted: {wall:.1f} s ({len(presenter.posted) / wall * 60:.1f}/min)"
    )
    print(
        f"  API requests: {requests} ({requests / jobs:.2f} per job; "
        f"{limiter.stats.total_refused} answered 429)"
    )
    print(f"  completion -> posted: p50 {pct(delays, 50):.2f} s, p95 {pct(delays, 95):.2f} s")
    if webhooks:
        print(f"  callbacks made: {len(api.webhook_calls)}")


async def _never(job_id: int) -> bool:
    return False


async def _jobs(path: Path) -> list[tuple[int, str]]:
    db = Database(path)
    await db.connect()
    try:
        rows = await db.fetchall("SELECT id, prompt FROM jobs")
        return [(row[0], row[1]) for row in rows]
    finally:
        await db.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--spread", type=float, default=10.0)
    parser.add_argument("--modes", nargs="+", choices=("polling", "webhooks"))
    args = parser.parse_args()
    print(
        f"{args.jobs} jobs of {args.duration:g} s over {args.spread:g} s, "
        "limit 60 requests/min (sliding window), product runner defaults"
    )
    with tempfile.TemporaryDirectory() as folder:
        for mode in args.modes or ("polling", "webhooks"):
            await run(mode, args.jobs, args.duration, args.spread, Path(folder))


if __name__ == "__main__":
    asyncio.run(main())
