"""Busy-channel benchmark: many members' /imagine in ONE channel, under Discord's limits.

Run from the repository root: `python bench/channel_bench.py [--goals] [--fast]`.

`python -m bot` runs as its own process (as in bench/bot_bench.py) against the Discord double
and FakePixelDojo. 15 `/imagine` from 8 members (seven send two) reach one channel within
`--burst-seconds`; jobs take 6-10 s (seeded), the poll and status-edit intervals are the
product's defaults and PixelDojo's request budget is unlimited: this bench is about Discord.

The double enforces Discord-like buckets, each keyed by its top-level resource and with
Discord's fixed windows (`--sliding-windows` for the stricter model that refuses some requests
Discord would take): per channel 5 message creates per 5 s, 5 edits per 5 s, 5 deletes per 1 s;
per interaction webhook (application id + token) 5 requests per 2 s. Every answer carries
`X-RateLimit-*` headers, so discord.py throttles itself as it would against Discord.

A job's result is identified by its buttons (custom ids `pdj:reroll:<job id>` & co., see
cogs/results.py) on a public message with attachments, never by text; each /imagine is mapped
to its job through its prompt, unique per command, in the job table. "Result visible" is the
first moment any message carrying the job's result exists in the channel, created or edited
in, from the double's message events.

Prints one "name: value unit" figure per line, then OK, or FAIL lines and exit status 1 when a
result is missing or shown in more than one message, a member was refused, or, with
`--goals` (issue 10), result visible p50 > 10 s or max > 16 s, any Discord 429, or more than
one channel message create per job. `--fast` multiplies job durations, the bot's intervals,
the Discord windows and the latency goals by `--fast-scale` (0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import re
import sys
from collections import Counter
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bot_process import (
    Ask,
    add_burst_options,
    bench_doubles,
    bot_process,
    burst_asks,
    job_durations,
    parse_burst,
    pct,
    proc_stats,
    read_database,
    send_burst,
    settle,
    show,
    show_discord_errors,
    show_spread,
    start_bot,
)
from bench.job_messages import ResultWatch, private_text
from bench.loop_lag import LoopLag
from bench.verdict import verdict
from bot.config import Settings
from tests.doubles.discord_double import DiscordDouble, InteractionRecord
from tests.doubles.pixeldojo import FakePixelDojo
from tests.helpers import BotProcess, settings_for

CHANNEL_CREATE = r"/channels/\d+/messages"
CHANNEL_MESSAGE = r"/channels/\d+/messages/\d+"
WEBHOOK_MESSAGE = r"/webhooks/\d+/[^/]+/messages/[^/]+"
WEBHOOK_EXECUTE = r"/webhooks/\d+/[^/]+"
CALLBACK = r"/interactions/\d+/[^/]+/callback"

GOAL_P50 = 10.0
GOAL_MAX = 16.0


def default(setting: str) -> float:
    """The product's default for a `Settings` field: what an install runs with."""
    value = next(f.default for f in fields(Settings) if f.name == setting)
    assert isinstance(value, float), setting
    return value


def limit_like_discord(double: DiscordDouble, scale: float, *, fixed: bool) -> None:
    """Discord's observed buckets, one per channel or per interaction webhook token."""
    limits = (
        ("POST", r"/channels/(\d+)/messages", 5, 5.0, "channel message create"),
        ("PATCH", r"/channels/(\d+)/messages/\d+", 5, 5.0, "channel message edit"),
        ("DELETE", r"/channels/(\d+)/messages/\d+", 5, 1.0, "channel message delete"),
        # Follow-ups and edits of the interaction's messages: the token's own bucket.
        ("*", r"/webhooks/(\d+/[^/]+)(?:/.*)?", 5, 2.0, "interaction webhook"),
    )
    for method, path, limit, per, kind in limits:
        double.rate_limit(
            method,
            path,
            limit=limit,
            per=per * scale,
            send_headers=True,
            per_match=True,
            fixed_window=fixed,
            kind=kind,
        )


def ok_requests(double: DiscordDouble, since: int, method: str, path: str) -> int:
    """Accepted API requests (2xx) to `method` + a path fully matching `path`."""
    pattern = re.compile(path)
    return sum(
        1
        for r in double.requests[since:]
        if r.api and r.method == method and pattern.fullmatch(r.path) and 200 <= r.status < 300
    )


# -- the run -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    scale = args.fast_scale if args.fast else 1.0
    rng = random.Random(args.seed)
    durations = job_durations(rng, args, scale, args.requests)
    asks = burst_asks(rng, args.requests, args.members)
    history = job_durations(rng, args, scale, 20)
    poll_initial = default("poll_initial_interval") * scale
    poll_max = default("poll_max_interval") * scale
    status_edit = default("status_edit_interval") * scale
    show("mode", "fast" if args.fast else "realistic")
    show("requests", args.requests)
    show("members", args.members)
    show("Discord windows", "sliding" if args.sliding_windows else "fixed (Discord's)")
    show("poll initial interval", poll_initial, "s")
    show("poll max interval", poll_max, "s")
    show("status edit interval", status_edit, "s")
    show("job duration min", min(durations), "s")
    show("job duration max", max(durations), "s")

    set_up = bench_doubles(
        "channel-bench-", args.members, history, FakePixelDojo(), burst_limits=True
    )
    async with set_up as (folder, database, api, double):
        api.durations.extend(durations)
        limit_like_discord(double, scale, fixed=not args.sliding_windows)
        settings = replace(
            settings_for(double, api, database),
            poll_initial_interval=poll_initial,
            poll_max_interval=poll_max,
            status_edit_interval=status_edit,
            job_timeout=default("job_timeout"),
        )
        async with bot_process(settings, folder) as process:
            with LoopLag() as lag:
                return await drive(args, scale, api, double, process, asks, database, lag)


async def drive(
    args: argparse.Namespace,
    scale: float,
    api: FakePixelDojo,
    double: DiscordDouble,
    process: BotProcess,
    asks: list[Ask],
    database: Path,
    lag: LoopLag,
) -> int:
    show("bot start-up to commands synced", await start_bot(process, double), "s")
    lag.samples.clear()

    watch = ResultWatch(expected=len(asks))
    timeout = args.timeout or 30 + 120 * scale
    watch.start(double, timeout=timeout + 120)
    requests_before = len(double.requests)
    spacing = args.burst_seconds * scale / max(1, len(asks))
    try:
        records = await send_burst(double, asks, spacing)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watch.complete.wait(), timeout)
        # Until Discord has had no request for two status-edit intervals (or 1 s).
        quiet = max(2 * default("status_edit_interval") * scale, 1.0)
        await settle(double, quiet, at_most=4 * quiet)
    finally:
        await watch.stop()
    stats = proc_stats(process)
    await asyncio.to_thread(process.stop)
    jobs = {job["prompt"]: job for job in (await read_database(database))[0].values()}
    return report(args, scale, api, double, records, asks, jobs, watch, requests_before, stats, lag)


def report(
    args: argparse.Namespace,
    scale: float,
    api: FakePixelDojo,
    double: DiscordDouble,
    records: list[InteractionRecord],
    asks: list[Ask],
    jobs: dict[str, dict[str, Any]],
    watch: ResultWatch,
    since: int,
    stats: tuple[float, int] | None,
    lag: LoopLag,
) -> int:
    failures: list[str] = []
    refused: Counter[str] = Counter()
    visible: list[float] = []
    submitted: list[float] = []
    per_job: Counter[int] = Counter()
    admitted = 0
    for record, (_, prompt, outputs, _) in zip(records, asks, strict=True):
        job = jobs.get(prompt)
        if job is None or (job["state"] == "failed" and job["api_job_id"] is None):
            refused[private_text(record)] += 1
            continue
        admitted += 1
        job_id = job["id"]
        shown = watch.messages.get(job_id, set())
        per_job[len(shown)] += 1
        if not shown:
            failures.append(f"job #{job_id}: no message with its result in the channel")
            continue
        if len(shown) > 1:
            failures.append(f"job #{job_id}: its result is in {len(shown)} messages")
        if watch.images.get(job_id) != outputs:
            failures.append(
                f"job #{job_id}: {watch.images.get(job_id)} images shown, {outputs} asked for"
            )
        visible.append(watch.first_seen[job_id] - record.received_at)
        fake = api.jobs.get(job["api_job_id"] or "")
        if fake is not None:
            submitted.append(fake.created_at - record.received_at)

    acks = [r.ack_latency for r in records if r.ack_latency is not None]
    show("ack latency p50", pct(acks, 50) * 1000, "ms")
    show("ack latency p99", pct(acks, 99) * 1000, "ms")
    show("acks missing", len(records) - len(acks))
    show("jobs admitted", admitted)
    show("jobs refused", sum(refused.values()))
    for text, count in refused.most_common(3):
        show("  refused", f"{count}x {text!r}")
    show_spread("/imagine to PixelDojo submission", submitted, (50, 95), "s")
    show_spread("/imagine to result visible", visible, (50, 95), "s")
    show(
        "result messages per job",
        ", ".join(f"{n} ({count} jobs)" for n, count in sorted(per_job.items())) or "none",
    )

    # Accepted requests, per admitted job (per /imagine for what refusals also cause).
    jobs_n, commands = max(admitted, 1), len(records)
    creates = ok_requests(double, since, "POST", CHANNEL_CREATE)
    for name, method, path, per in (
        ("channel message creates per job", "POST", CHANNEL_CREATE, jobs_n),
        ("channel message edits per job", "PATCH", CHANNEL_MESSAGE, jobs_n),
        ("channel message deletes per job", "DELETE", CHANNEL_MESSAGE, jobs_n),
        ("webhook edits per job", "PATCH", WEBHOOK_MESSAGE, jobs_n),
        ("webhook deletes per job", "DELETE", WEBHOOK_MESSAGE, jobs_n),
        ("interaction callbacks per /imagine", "POST", CALLBACK, commands),
        ("webhook follow-ups per /imagine", "POST", WEBHOOK_EXECUTE, commands),
    ):
        show(name, ok_requests(double, since, method, path) / per)
    show("public messages created per job (deleted ones too)", len(watch.public_created) / jobs_n)
    show_discord_errors(double, [r for r in double.requests[since:] if r.api], "Discord 429s")
    if stats is not None:
        show("bot process CPU time", stats[0], "s")
    show("bench loop lag p99 (doubles' timestamp noise)", pct(lag.samples, 99) * 1000, "ms")

    if refused:
        failures.append(f"{sum(refused.values())} of {len(records)} members were refused")
    if args.goals:
        p50, worst = pct(visible, 50), max(visible, default=math.nan)
        if not p50 <= GOAL_P50 * scale:
            failures.append(f"result visible p50 {p50:.1f} s > {GOAL_P50 * scale:g} s")
        if not worst <= GOAL_MAX * scale:
            failures.append(f"result visible max {worst:.1f} s > {GOAL_MAX * scale:g} s")
        if double.rate_limited_count:
            failures.append(f"{double.rate_limited_count} Discord 429s")
        if creates > admitted:
            failures.append(f"{creates / jobs_n:.2f} channel message creates per job > 1")
    return verdict(failures)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=15, help="/imagine commands")
    parser.add_argument("--members", type=int, default=8, help="members sending them")
    add_burst_options(parser)
    parser.add_argument("--goals", action="store_true", help="FAIL when issue 10's goals miss")
    parser.add_argument("--fast", action="store_true", help="scale every duration down")
    parser.add_argument("--fast-scale", type=float, default=0.1, help="the --fast factor")
    parser.add_argument(
        "--sliding-windows",
        action="store_true",
        help="Discord buckets as sliding windows (stricter than Discord's fixed ones)",
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--timeout", type=float, default=0, help="seconds to wait for results")
    return parse_burst(parser, argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(run(parse())))
