"""End-to-end benchmark: the real bot process under a burst of /imagine from many members.

Run from the repository root: `python bench/bot_bench.py [--fast] [--requests N] [--members M]`.

`python -m bot` runs as its own process (environment from `tests.helpers.settings_env`) against
the Discord double and FakePixelDojo, which both run in this process. The guild's limits are
set on the database file with `ModerationService` before the bot starts (unlimited allowance,
10 generations at a time per member, up to 4 images), so nothing is refused.

Defaults are the product's timing: POLL_INITIAL_INTERVAL 0.5, POLL_MAX_INTERVAL 5,
STATUS_EDIT_INTERVAL 3, job durations drawn from 6-10 s (seeded). `--fast` multiplies durations
and intervals by `--fast-scale` (0.1) for a quick smoke run.

Prints one "name: value unit" figure per line, then OK, or FAIL lines and exit status 1 when
a result is missing, the ledger does not match the images posted, or a member was refused
because Discord did not accept their job's message. A result is a public message with images
and the job's result buttons, timed when it is created or edited in (bench/job_messages.py);
each /imagine has a unique prompt, which maps it to its job row. Caveat: the doubles share
this process's event loop, so their timestamps include this process's own scheduling delay
(printed as "bench loop lag"). Without `--discord-limits` the Discord double enforces no rate
limits (and sends no rate-limit headers, so discord.py sends one request per route and channel
at a time); with it, the double's sliding-window buckets answer 429 somewhat more often than
Discord's fixed windows would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import re
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bot_process import (
    Ask,
    add_burst_options,
    bench_doubles,
    bot_process,
    burst_asks,
    job_durations,
    parse_burst,
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
from tests.doubles.discord_double import DiscordDouble, InteractionRecord
from tests.doubles.pixeldojo import FakePixelDojo
from tests.helpers import BotProcess, settings_for

# -- figures -----------------------------------------------------------------------------------


def peak_per_window(times: list[float], window: float) -> int:
    """Most events in any sliding window of `window` seconds."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def route_kind(method: str, path: str) -> str:
    if path.startswith("/interactions/"):
        return "interaction callback"
    if path.startswith("/webhooks/"):
        return f"webhook {method}"
    if re.fullmatch(r"/channels/\d+/messages", path):
        return f"channel message {method}"
    if re.fullmatch(r"/channels/\d+/messages/\d+", path):
        return f"channel message {method}"
    return "other"


# -- the run -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    scale = args.fast_scale if args.fast else 1.0
    rng = random.Random(args.seed)
    durations = job_durations(rng, args, scale, args.requests)
    asks = burst_asks(rng, args.requests, args.members)
    bench_started = time.monotonic()
    show("mode", "fast" if args.fast else "realistic")
    show("requests", args.requests)
    show("members", args.members)
    show("poll initial interval", args.poll_initial * scale, "s")
    show("poll max interval", args.poll_max * scale, "s")
    show("status edit interval", args.status_edit * scale, "s")
    show("job duration min", min(durations), "s")
    show("job duration max", max(durations), "s")

    history = job_durations(rng, args, scale, 0 if args.cold else 20)
    show("earlier jobs in the database (warm poll schedule)", len(history))
    set_up = bench_doubles("bot-bench-", args.members, history, FakePixelDojo(), burst_limits=True)
    async with set_up as (folder, database, api, double):
        api.durations.extend(durations)
        if args.discord_limits:
            # Discord's observed per-channel buckets (one channel here, so one bucket each):
            # message create 5 per 5 s, edit 5 per 5 s, delete 5 per 1 s.
            message = r"/channels/\d+/messages/\d+"
            double.rate_limit(
                "POST",
                r"/channels/\d+/messages",
                limit=5,
                per=5,
                send_headers=True,
                kind="channel message create",
            )
            double.rate_limit(
                "PATCH", message, limit=5, per=5, send_headers=True, kind="channel message edit"
            )
            double.rate_limit(
                "DELETE",
                message,
                limit=5,
                per=1,
                send_headers=True,
                kind="channel message delete",
            )
        settings = replace(
            settings_for(double, api, database),
            poll_initial_interval=args.poll_initial * scale,
            poll_max_interval=args.poll_max * scale,
            status_edit_interval=args.status_edit * scale,
            job_timeout=300.0,
        )
        async with bot_process(settings, folder) as process:
            with LoopLag() as lag:
                return await drive(args, api, double, process, asks, database, bench_started, lag)


async def drive(
    args: argparse.Namespace,
    api: FakePixelDojo,
    double: DiscordDouble,
    process: BotProcess,
    asks: list[Ask],
    database: Path,
    bench_started: float,
    lag: LoopLag,
) -> int:
    show("bot start-up to commands synced", await start_bot(process, double), "s")
    lag.samples.clear()

    # (a) The burst: every /imagine dispatched within ~burst_seconds. Results are collected as
    # they are created or edited in, whether into a new message or the job's status message.
    watch = ResultWatch(expected=len(asks))
    watch.start(double, timeout=24 * 3600)
    requests_before = len(double.requests)
    spacing = args.burst_seconds / max(1, len(asks))
    burst_started = time.monotonic()
    records = await send_burst(double, asks, spacing)
    dispatched = [r.received_at for r in records]
    show("burst dispatch span", max(dispatched) - min(dispatched), "s")
    await asyncio.gather(
        *(r.wait_for_response(timeout=10) for r in records), return_exceptions=True
    )
    acks = [r.ack_latency for r in records if r.ack_latency is not None]
    show_spread("ack latency", acks)
    show("acks missing", len(records) - len(acks))
    show("acks rejected (late or duplicate)", sum(bool(r.rejected_callbacks) for r in records))
    over_3s = sum(a > 3.0 for a in acks)
    show("acks over 3 s", over_3s)

    scale = args.fast_scale if args.fast else 1.0
    # With Discord's limits each status message waits for the channel's create bucket (~1/s).
    slack = 2.5 * len(records) if args.discord_limits else 0.0
    # Wait for every result (a refused member's never comes: then until the timeout).
    timeout = args.timeout or 60 + 30 * scale + slack
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(watch.complete.wait(), timeout)
    wall = max(watch.first_seen.values(), default=time.monotonic()) - burst_started
    stats = proc_stats(process)
    # Let the last edits and deletes land before stopping (they count as REST traffic): until
    # Discord has had no request for two status-edit intervals (or 1 s).
    quiet = max(2 * args.status_edit * scale, 1.0)
    await settle(double, quiet, at_most=4 * quiet)
    await watch.stop()
    await asyncio.to_thread(process.stop)
    jobs, credits_used = await read_database(database)

    # Each member should have a job; one that was never shown was refused, however it is told.
    by_prompt = {job["prompt"]: job for job in jobs.values()}
    queued: dict[int, InteractionRecord] = {}
    refusals: Counter[str] = Counter()
    for record, (_, prompt, _, _) in zip(records, asks, strict=True):
        job = by_prompt.get(prompt)
        if job is None or (job["state"] == "failed" and not job["status_message_id"]):
            refusals[private_text(record)] += 1
        else:
            queued[job["id"]] = record
    show("jobs queued", len(queued))
    for text, count in refusals.most_common(3):
        show("refused", f"{count}x {text!r}")
    results = {job_id: seen for job_id, seen in watch.first_seen.items() if job_id in jobs}

    # (b) API completion -> result message in the channel.
    to_post: list[float] = []
    detect: list[float] = []
    deliver: list[float] = []
    polls: list[int] = []
    poll_rates: list[float] = []
    for job_id, shown_at in results.items():
        fake = api.jobs.get(jobs.get(job_id, {}).get("api_job_id") or "")
        if fake is None:
            continue
        to_post.append(shown_at - fake.complete_at)
        if fake.completed_seen_at is not None:
            detect.append(fake.completed_seen_at - fake.complete_at)
            deliver.append(shown_at - fake.completed_seen_at)
        polls.append(fake.polls)
        poll_rates.append(fake.polls / max(1e-9, fake.complete_at - fake.created_at))
    submit_delay = []
    status_delay = []
    submitted_after_status = 0
    for job_id, record in queued.items():
        fake = api.jobs.get(jobs.get(job_id, {}).get("api_job_id") or "")
        if fake is not None:
            submit_delay.append(fake.created_at - record.received_at)
        # The public message the job was first shown in (its status), as the bot recorded it.
        status = double.messages.get(jobs[job_id]["status_message_id"] or 0)
        if status is not None:
            status_delay.append(status.created_at - record.received_at)
            submitted_after_status += fake is not None and fake.created_at >= status.created_at
    show_spread("interaction to PixelDojo submission", submit_delay)
    show_spread("interaction to status message posted", status_delay)
    show("submissions made only after their status message was posted", submitted_after_status)
    show_spread("completion to result message", to_post)
    show_spread("  completion to first poll seeing it", detect)
    show_spread("  that poll to result message", deliver)

    # (c) Polls.
    show("polls per job mean", sum(polls) / len(polls) if polls else math.nan)
    # The runner counts polls in memory and writes the count with the job's final state.
    db_polls = {job_id: jobs[job_id]["polls"] for job_id in results if job_id in jobs}
    show(
        "polls per job mean (jobs.polls in the DB)",
        sum(db_polls.values()) / len(db_polls) if db_polls else math.nan,
    )
    api_polls = {
        job_id: fake.polls
        for job_id in db_polls
        if (fake := api.jobs.get(jobs[job_id]["api_job_id"] or "")) is not None
    }
    matching = sum(api_polls.get(job_id) == count for job_id, count in db_polls.items())
    show("jobs whose DB poll count matches PixelDojo's", f"{matching}/{len(db_polls)}")
    show("polls per job max", max(polls, default=0))
    show(
        "polls per job per second of generation mean",
        sum(poll_rates) / len(poll_rates) if poll_rates else math.nan,
        "/s",
    )
    poll_times = [t for m, p, _, t in api.request_log if m == "GET" and "/jobs/" in p]
    show("PixelDojo polls per second peak", peak_per_window(poll_times, 1.0), "/s")

    # (d) Discord REST traffic during the load.
    load = [r for r in double.requests[requests_before:] if r.api]
    times = [r.at for r in load]
    span = (max(times) - min(times)) if times else 0.0
    show("Discord REST requests", len(load))
    show("Discord REST requests per second peak", peak_per_window(times, 1.0), "/s")
    show("Discord REST requests per second mean", len(load) / span if span else math.nan, "/s")
    # Interaction callbacks and their webhooks are exempt from Discord's 50/s global limit.
    bound = [r.at for r in load if not r.path.startswith(("/interactions/", "/webhooks/"))]
    show(
        "  of which global-limit routes, peak (Discord allows 50)",
        peak_per_window(bound, 1.0),
        "/s",
    )
    kinds = Counter(route_kind(r.method, r.path) for r in load)
    for kind, count in sorted(kinds.items()):
        show(f"  {kind}", count)
    creates = [
        r.at for r in load if r.method == "POST" and re.fullmatch(r"/channels/\d+/messages", r.path)
    ]
    show("channel message POSTs in busiest 5 s (Discord allows ~5)", peak_per_window(creates, 5.0))
    show_discord_errors(double, load, "Discord 429 responses")

    # (e) Totals and consistency.
    requested = sum(a[2] for a in asks)
    posted_jobs = [j for j in jobs.values() if j["state"] == "posted"]
    posted_outputs = sum(j["num_outputs"] for j in posted_jobs)
    # A job whose public message Discord never took is abandoned (refunded) before it starts:
    # its member was refused although nothing but Discord's rate limits stood in the way.
    never_shown = [
        j for j in jobs.values() if j["state"] == "failed" and not j["status_message_id"]
    ]
    show("members refused because Discord did not accept their job's post", len(never_shown))
    show("wall time burst to last result", wall, "s")
    show("results posted", f"{len(results)}/{len(records)}")
    show("jobs in state posted", f"{len(posted_jobs)}/{len(jobs)}")
    show("images requested", requested)
    show("images in posted jobs", posted_outputs)
    show("credits used in ledger", credits_used)
    show("credits charged by PixelDojo", sum(j.credit_cost for j in api.jobs.values()))
    if stats is not None:
        show("bot process CPU time", stats[0], "s")
        show("bot process peak RSS", stats[1] / 1024, "MiB")
    show_spread("bench loop lag (doubles' timestamp noise)", lag.samples)
    show("bench runtime", time.monotonic() - bench_started, "s")

    failures = []
    if never_shown:
        failures.append(
            f"{len(never_shown)} of {len(records)} members were refused because Discord "
            "rate-limited (did not accept) their job's post"
        )
    if len(results) != len(records):
        failures.append(f"only {len(results)} of {len(records)} results posted")
    if len(posted_jobs) != len(records):
        failures.append(f"only {len(posted_jobs)} of {len(records)} jobs reached 'posted'")
    if not credits_used == posted_outputs == requested:
        failures.append(
            f"ledger {credits_used} credits, posted jobs {posted_outputs} images, "
            f"requested {requested} images"
        )
    return verdict(failures)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="/imagine commands in the burst")
    parser.add_argument("--members", type=int, default=50, help="members sending them")
    add_burst_options(parser)
    parser.add_argument("--poll-initial", type=float, default=0.5, help="POLL_INITIAL_INTERVAL")
    parser.add_argument("--poll-max", type=float, default=5.0, help="POLL_MAX_INTERVAL")
    parser.add_argument("--status-edit", type=float, default=3.0, help="STATUS_EDIT_INTERVAL")
    parser.add_argument("--fast", action="store_true", help="scale durations and intervals down")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="start with no earlier jobs, so the bot has not learned typical generation times",
    )
    parser.add_argument("--fast-scale", type=float, default=0.1, help="the --fast factor")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--timeout", type=float, default=0, help="seconds to wait for results")
    parser.add_argument(
        "--discord-limits",
        action="store_true",
        help="have the double enforce Discord's per-channel message limits (create and edit 5 "
        "per 5 s, delete 5 per 1 s); slow: use with fewer --requests",
    )
    return parse_burst(parser, argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(run(parse())))
