"""Rate-limit benchmark: the real bot under PixelDojo's documented per-key limit.

Run from the repository root: `python bench/rate_limit_bench.py [--scenario a,c,b]
[--time-scale 0.1]`.

`python -m bot` runs as its own process with the product's default settings (no
`PIXELDOJO_REQUESTS_PER_MINUTE`: the bot assumes the documented 60 a minute and learns the rest
from the headers; polls 0.5 s / 5 s; status edits every 3 s) against the Discord double and
FakePixelDojo behind `RateLimiter(limit=60, window=60)` (a sliding window per key, with
`X-RateLimit-*` headers; image downloads do not count, as on PixelDojo's separate file host).
The database starts warm (20 earlier jobs of the scenario's duration, in another guild) unless
`--cold`; the guild's allowance is unlimited and every other limit is the default.

Scenarios:
  (a) 20 /imagine from 10 members over 10 s, 8 s jobs: wall time from the first command to
      the last result, PixelDojo completion -> result posted p50/p95, API requests per job,
      429s, jobs lost. Goals: all 20 posted, 0 lost, <= 2 429s, wall <= 30 s, p50 <= 2 s.
  (c) 30 /imagine from 6 members within 1 s: every one must run (needs the fair queue; without
      it the members' concurrency limit refuses most).
  (b) offered load above capacity (40 jobs a minute from 50 members, 8 s jobs) for `--minutes`
      minutes: jobs delivered a minute with polling, over the offered span after the first
      minute. Goal: >= 28 a minute (one submit and one poll a job would allow 30).

`--bare` makes the limiter send no `X-RateLimit-*` headers and bare 429s (no Retry-After).
`--time-scale F` multiplies every duration by F: the limiter's window (60 requests per 60*F s),
the jobs, the spacing of commands, the bot's poll and status-edit intervals. Figures are printed
converted back to real-time units (seconds and per-minute figures as at F = 1), and say so.
The bot has to learn the scaled window from `X-RateLimit-Reset`, which is in whole seconds, so a
small F is harder on it than F = 1 (a 6 s window is known only to within a second).

Each /imagine has a unique prompt, which maps it to its job row; a command with no row was
refused. A job's result is timed when a public message first carries it (its images and result
buttons, created or edited in: bench/job_messages.py), wherever the bot shows it.

Prints one "name: value unit" line per figure and exits 1 (with FAIL lines) when a job is lost,
the ledger disagrees with what PixelDojo charged, or a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bot_process import (
    bench_doubles,
    bot_process,
    burst_asks,
    pct,
    read_database,
    send_burst,
    show,
    start_bot,
)
from bench.job_messages import ResultWatch, private_text
from bench.verdict import verdict
from tests.doubles.discord_double import DiscordDouble, InteractionRecord, MessageRecord
from tests.doubles.pixeldojo import FakePixelDojo
from tests.doubles.pixeldojo_rate_limit import RateLimiter
from tests.helpers import BotProcess, job_named_by, settings_for


@dataclass
class Scenario:
    name: str
    jobs: int
    members: int
    spread: float
    """Seconds (unscaled) over which the commands are sent."""
    duration: float = 8.0
    goals: dict[str, float] = field(default_factory=dict)


@dataclass
class Outcome:
    failures: list[str]
    figures: dict[str, float]


def messages_of(record: InteractionRecord) -> list[MessageRecord]:
    """The interaction's response and follow-ups."""
    return [m for m in [record.original, *record.followups] if m is not None]


def told(record: InteractionRecord) -> bool:
    """Whether the member has been told if their command became a job: a public response
    naming the job, or a private answer (a refusal). It says when to look, not which it was:
    the job table says that."""
    return any(m.ephemeral or job_named_by(m) is not None for m in messages_of(record))


async def run_scenario(args: argparse.Namespace, scenario: Scenario) -> Outcome:
    scale = args.time_scale
    print(f"--- scenario ({scenario.name}) ---", flush=True)
    show("commands", scenario.jobs)
    show("members", scenario.members)
    show("commands sent over", scenario.spread, "s")
    show("job duration", scenario.duration, "s")
    history = [scenario.duration * scale] * (0 if args.cold else 20)
    limiter = RateLimiter(
        limit=args.limit,
        window=60 * scale,
        headers=not args.bare,
        exempt=lambda request: request.path.startswith("/files/"),
    )
    api = FakePixelDojo(job_duration=scenario.duration * scale, middlewares=[limiter.middleware])
    set_up = bench_doubles("rate-limit-bench-", scenario.members, history, api, burst_limits=False)
    async with set_up as (folder, database, api, double):
        settings = replace(
            settings_for(double, api, database),
            # The product's defaults, scaled; no request budget figure of our own.
            poll_initial_interval=0.5 * scale,
            poll_max_interval=5.0 * scale,
            status_edit_interval=3.0 * scale,
            job_timeout=300.0,
            pixeldojo_requests_per_minute=None,
        )
        keep_log_at = Path(args.log) if args.log else None
        async with bot_process(settings, folder, keep_log_at=keep_log_at) as process:
            return await drive(args, scenario, api, limiter, double, process, database)


async def drive(
    args: argparse.Namespace,
    scenario: Scenario,
    api: FakePixelDojo,
    limiter: RateLimiter,
    double: DiscordDouble,
    process: BotProcess,
    database: Path,
) -> Outcome:
    scale = args.time_scale
    rng = random.Random(args.seed)
    await start_bot(process, double)
    allowed_before = limiter.stats.total_allowed
    refused_before = limiter.stats.total_refused

    spacing = scenario.spread * scale / max(1, scenario.jobs)
    asks = burst_asks(rng, scenario.jobs, scenario.members, outputs=1, aspect_ratio="1:1")
    timeout = args.timeout or (scenario.spread + 120 + 4 * scenario.jobs) * scale + 30
    watch = ResultWatch(expected=scenario.jobs)
    watch.start(double, timeout=timeout + 120)
    try:
        started = time.monotonic()
        records = await send_burst(double, asks, spacing)
        offered_until = time.monotonic()

        def finished() -> bool:
            # Every member told, and every job they were told of has shown its result.
            if not all(told(record) for record in records):
                return False
            named = (job_named_by(m) for r in records for m in messages_of(r) if not m.ephemeral)
            return {job for job in named if job is not None} <= watch.first_seen.keys()

        with contextlib.suppress(TimeoutError):
            await double.wait_until(finished, timeout=timeout)
    finally:
        await watch.stop()
    await asyncio.to_thread(process.stop)
    jobs, credits_used = await read_database(database)

    # A command became a job when it has a row (its unique prompt); else it was refused. Every
    # job ends in a result, or it is lost (failed, or still nowhere at the end).
    by_prompt = {job["prompt"]: job for job in jobs.values()}
    accepted: dict[int, InteractionRecord] = {}
    refusals: Counter[str] = Counter()
    for record, (_, prompt, _, _) in zip(records, asks, strict=True):
        job = by_prompt.get(prompt)
        if job is None:
            refusals[private_text(record)] += 1
        else:
            accepted[job["id"]] = record
    results = {job_id: at for job_id, at in watch.first_seen.items() if job_id in accepted}

    to_post = []
    for job_id, shown_at in results.items():
        fake = api.jobs.get(jobs[job_id]["api_job_id"] or "")
        if fake is not None:
            to_post.append(shown_at - fake.complete_at)
    posted_times = sorted(results.values())
    wall = (posted_times[-1] - started) if posted_times else math.nan
    requests = limiter.stats.total_allowed - allowed_before
    refused = limiter.stats.total_refused - refused_before
    lost = len(accepted) - len(results)
    charged = sum(job.credit_cost for job in api.jobs.values())
    polls = [jobs[j]["polls"] for j in results if jobs[j]["polls"] is not None]

    if scale != 1:
        print(f"(time scale {scale:g}: every figure below is converted back to real time)")
    show("commands refused", sum(refusals.values()))
    for text, count in refusals.most_common(3):
        show("  refused", f"{count}x {text!r}")
    show("jobs accepted", len(accepted))
    show("results posted", f"{len(results)}/{len(accepted)}")
    show("jobs lost", lost)
    show("wall time first command to last result", wall / scale, "s")
    show("completion to result posted p50", pct(to_post, 50) / scale, "s")
    show("completion to result posted p95", pct(to_post, 95) / scale, "s")
    show("API requests (let through)", requests)
    show("API requests per posted job", requests / len(results) if results else math.nan)
    show("polls per posted job (jobs.polls)", sum(polls) / len(polls) if polls else math.nan)
    show("HTTP 429s", refused)
    show("credits used in ledger", credits_used)
    show("credits charged by PixelDojo", charged)

    figures = {"wall": wall / scale, "p50": pct(to_post, 50) / scale, "429s": float(refused)}
    failures = []
    if lost:
        failures.append(f"({scenario.name}) {lost} accepted job(s) lost")
    if credits_used != charged:
        failures.append(
            f"({scenario.name}) ledger used {credits_used} credits, PixelDojo charged {charged}"
        )
    if scenario.name == "b":
        # Delivered a minute while the offered load exceeded capacity, past the first minute.
        first_minute = started + 60 * scale
        window_end = offered_until
        delivered = sum(first_minute <= t < window_end for t in posted_times)
        span_minutes = (window_end - first_minute) / (60 * scale)
        per_minute = delivered / span_minutes if span_minutes > 0 else math.nan
        show("offered jobs a minute", scenario.jobs / (scenario.spread / 60))
        show("delivered jobs a minute (after the first minute, while offered)", per_minute)
        figures["per_minute"] = per_minute
    if scenario.name == "c" and (refusals or len(results) < scenario.jobs):
        failures.append(f"(c) {len(results)}/{scenario.jobs} ran; {sum(refusals.values())} refused")
    for goal, bound in scenario.goals.items():
        value = figures.get(goal, math.nan)
        ok = value >= bound if goal == "per_minute" else value <= bound
        if not ok:
            failures.append(
                f"({scenario.name}) goal {goal} {'>=' if goal == 'per_minute' else '<='} "
                f"{bound:g} missed: {value:.2f}"
            )
    if scenario.name == "a" and len(results) < scenario.jobs:
        failures.append(f"(a) only {len(results)} of {scenario.jobs} posted")
    return Outcome(failures, figures)


SCENARIOS = {
    "a": Scenario("a", jobs=20, members=10, spread=10.0, goals={"wall": 30, "p50": 2, "429s": 2}),
    "c": Scenario("c", jobs=30, members=6, spread=1.0),
}


async def run(args: argparse.Namespace) -> int:
    show("time scale", args.time_scale)
    show("rate-limit headers", "none, bare 429s" if args.bare else "X-RateLimit-*, Retry-After")
    show("limit", f"{args.limit} requests per {60 * args.time_scale:g} s (sliding window, per key)")
    failures: list[str] = []
    for name in args.scenario.split(","):
        name = name.strip()
        if name == "b":
            offered = int(40 * args.minutes)
            scenario = Scenario(
                "b", jobs=offered, members=50, spread=60.0 * args.minutes, goals={"per_minute": 28}
            )
        else:
            scenario = SCENARIOS[name]
        outcome = await run_scenario(args, scenario)
        failures += outcome.failures
    return verdict(failures)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="a,c,b", help="which of a, b, c, in order")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply every duration")
    parser.add_argument("--minutes", type=float, default=3.0, help="(b): minutes of offered load")
    parser.add_argument("--cold", action="store_true", help="no earlier jobs in the database")
    parser.add_argument(
        "--limit", type=int, default=60, help="the limiter's requests a window (the bot assumes 60)"
    )
    parser.add_argument(
        "--bare", action="store_true", help="the limiter sends no X-RateLimit-* and bare 429s"
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--log", default="", help="keep the bot's log of the last scenario here")
    parser.add_argument("--timeout", type=float, default=0, help="seconds to wait for results")
    args = parser.parse_args(argv)
    if args.time_scale <= 0 or args.minutes <= 1:
        parser.error("--time-scale must be positive and --minutes above 1")
    return args


if __name__ == "__main__":
    raise SystemExit(asyncio.run(run(parse())))
