"""Webhooks against polling, under PixelDojo's documented limit (60 requests/min per key).

Run from the repository root: `python bench/webhook_bench.py [--scenario a,b] [--modes polling
webhooks] [--jobs N] [--duration S] [--spread S] [--minutes M]`.

The real `JobStore` (temporary file database), `JobRunner` (product defaults) and
`PixelDojoClient` (the request budget on, as `bot/services.py` builds it) run against
FakePixelDojo behind the sliding-window `RateLimiter`; the presenter only records when each
result would be posted. Each mode runs once polling only, once with webhooks on (the bot's
receiver, per-job tokens, the double calling back when each job ends with its job-status body;
a complete callback is delivered as it stands, and polls are only the safety net). Each run
starts cold (nothing learned), as a bot's first minutes do.

Scenarios:
  (a) `--jobs` jobs (20) of `--duration` s (8) from 10 members over `--spread` s (10): wall
      time until every job is posted, requests per job (submits and polls; downloads are
      another host and do not count), HTTP 429s, jobs lost, completion (the moment the double
      finished the job) to posted, p50 and p95.
  (b) offered load above capacity for `--minutes` (3) minutes, 8 s jobs from 50 members: 40
      jobs a minute polling (one submit and one poll a job allow 30), 80 a minute with webhooks
      (one submit a job allows 60), over the offered span after the first minute: jobs posted
      a minute, jobs sent a minute, and jobs served a minute, their mean (posts alone swing
      with the jobs in flight at either end of the span). Goals, on jobs served: >= 28 a
      minute polling, >= 55 with webhooks. The database starts warm (20 earlier jobs of 8 s,
      so the poll schedule has learned them, as a running bot's has) unless `--cold`.

Exits 1 (with FAIL lines) when a job is lost or a goal of (b) is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.history import seed_history
from bench.verdict import verdict
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

OFFERED_PER_MINUTE = {"polling": 40, "webhooks": 80}
"""(b): jobs offered a minute, above what each mode can serve under 60 requests a minute."""
GOALS_PER_MINUTE = {"polling": 28.0, "webhooks": 55.0}
"""(b): the least jobs a minute each mode must deliver (issue 9's goal (b))."""
HISTORY_GUILD_ID = 2
"""The guild of the earlier jobs a warm database holds (the measured jobs are in guild 1)."""


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


@dataclass
class Outcome:
    jobs: int
    posted: int
    lost: int
    per_minute: float | None
    """(b) only: jobs served a minute while offered, after the first minute."""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if values else 0


async def run(
    mode: str,
    offsets: list[float],
    duration: float,
    members: int,
    folder: Path,
    *,
    offered_for: float | None = None,
    warm: bool = False,
) -> Outcome:
    """Submit a job at each of `offsets` (seconds from the start) and wait until all are
    posted or failed. With `offered_for` (seconds of offered load above capacity), also
    measure from the end of the first minute to `offered_for`: jobs posted a minute, and jobs
    served a minute (the mean of jobs sent to PixelDojo and jobs posted in that span).
    `warm`: the database holds 20 earlier jobs of `duration` s (another guild), so the runner
    starts with them learned."""
    jobs = len(offsets)
    limiter = RateLimiter(limit=60, window=60, exempt=lambda r: r.path.startswith("/files/"))
    api = FakePixelDojo(job_duration=duration, middlewares=[limiter.middleware])
    await api.start()
    path = folder / f"{mode}-{jobs}.sqlite3"
    db = Database(path)
    await db.connect()
    if warm:
        await seed_history(db, [duration] * 20, guild_id=HISTORY_GUILD_ID)
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
    try:
        for index, offset in enumerate(offsets):
            await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
            request = GenerationRequest(
                guild_id=1,
                channel_id=1,
                user_id=100 + index % members,
                prompt=f"bench {index}",
                aspect_ratio="1:1",
            )
            job, _ = await store.create_admitted(request, admit_without_limits)
            runner.submit(job)
        await asyncio.wait_for(presenter.done.wait(), 30 * 60)
        wall = time.monotonic() - started
    finally:
        if receiver is not None:
            await receiver.stop()
        await runner.stop()
        await client.aclose()
        await db.close()
        await api.stop()

    by_prompt = {job.prompt: job for job in api.jobs.values()}
    rows = [(job_id, prompt) for job_id, prompt in await _jobs(path) if prompt != "history"]
    delays = [
        presenter.posted[job_id] - by_prompt[prompt].complete_at
        for job_id, prompt in rows
        if job_id in presenter.posted and prompt in by_prompt
    ]
    polls = sum(job.polls for job in api.jobs.values())
    requests = limiter.stats.total_allowed + limiter.stats.total_refused
    print(f"{mode}:")
    print(f"  posted {len(presenter.posted)}/{jobs}, lost {len(presenter.failed)}")
    print(
        f"  wall time until all posted: {wall:.1f} s ({len(presenter.posted) / wall * 60:.1f}/min)"
    )
    print(
        f"  API requests: {requests} ({requests / jobs:.2f} per job, {polls / jobs:.2f} of them "
        f"polls; {limiter.stats.total_refused} answered 429)"
    )
    print(f"  completion -> posted: p50 {pct(delays, 50):.2f} s, p95 {pct(delays, 95):.2f} s")
    if webhooks:
        print(f"  callbacks made: {len(api.webhook_calls)}")
    per_minute = None
    if offered_for is not None:
        # Posts alone swing with how many jobs are in flight at either end of the span (a
        # saturated sliding window sends, and so posts, in bursts: +-1.5 a minute over two
        # minutes); the mean of jobs sent and jobs posted does not, as the jobs in flight are
        # the difference of the two. Over a long run both are the same rate.
        begin, end = started + 60, started + offered_for
        minutes = (end - begin) / 60
        posted = sum(begin <= t < end for t in presenter.posted.values())
        sent = sum(begin <= job.created_at < end for job in api.jobs.values())
        per_minute = (sent + posted) / 2 / minutes
        print(f"  offered: {jobs / (offered_for / 60):.1f} jobs a minute for {offered_for:.0f} s")
        print(
            f"  after the first minute, while offered: {posted / minutes:.1f} jobs posted a "
            f"minute, {sent / minutes:.1f} sent; served {per_minute:.1f} a minute"
        )
    lost = jobs - len(presenter.posted)
    return Outcome(jobs=jobs, posted=len(presenter.posted), lost=lost, per_minute=per_minute)


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


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="a,b", help="which of a, b, in order")
    parser.add_argument("--modes", nargs="+", choices=("polling", "webhooks"))
    parser.add_argument("--jobs", type=int, default=20, help="(a): jobs")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds a job takes")
    parser.add_argument("--spread", type=float, default=10.0, help="(a): seconds to submit over")
    parser.add_argument("--minutes", type=float, default=3.0, help="(b): minutes of offered load")
    parser.add_argument("--cold", action="store_true", help="(b): no earlier jobs in the database")
    args = parser.parse_args()
    if args.minutes <= 1:
        parser.error("--minutes must be above 1 (the first minute is not measured)")
    modes = args.modes or ("polling", "webhooks")
    failures: list[str] = []
    rng = random.Random(9)
    with tempfile.TemporaryDirectory() as folder:
        for name in args.scenario.split(","):
            name = name.strip()
            if name == "a":
                print(
                    f"(a) {args.jobs} jobs of {args.duration:g} s from 10 members over "
                    f"{args.spread:g} s, limit 60 requests/min (sliding window), runner defaults"
                )
                offsets = sorted(rng.uniform(0, args.spread) for _ in range(args.jobs))
                for mode in modes:
                    outcome = await run(mode, offsets, args.duration, 10, Path(folder))
                    if outcome.lost:
                        failures.append(f"(a) {mode}: {outcome.lost} job(s) lost")
            elif name == "b":
                span = 60 * args.minutes
                print(
                    f"(b) above capacity for {args.minutes:g} min, {args.duration:g} s jobs from "
                    "50 members, limit 60 requests/min (sliding window), runner defaults, "
                    + ("cold" if args.cold else "warm (20 earlier jobs)")
                )
                for mode in modes:
                    count = math.ceil(OFFERED_PER_MINUTE[mode] * args.minutes)
                    offsets = sorted(rng.uniform(0, span) for _ in range(count))
                    outcome = await run(
                        mode,
                        offsets,
                        args.duration,
                        50,
                        Path(folder),
                        offered_for=span,
                        warm=not args.cold,
                    )
                    if outcome.lost:
                        failures.append(f"(b) {mode}: {outcome.lost} job(s) lost")
                    goal = GOALS_PER_MINUTE[mode]
                    rate = outcome.per_minute if outcome.per_minute is not None else math.nan
                    if not rate >= goal:
                        failures.append(
                            f"(b) {mode}: {rate:.1f} jobs a minute served, goal >= {goal:g}"
                        )
            else:
                parser.error(f"unknown scenario {name!r}")
    return verdict(failures)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
