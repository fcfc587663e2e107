"""Ledger benchmark: reservation throughput with every limit check on, and over-spend checks.

Run from the repository root:
`python bench/ledger_bench.py [--jobs N] [--tasks T] [--burst B] [--processes P]`.

Uses a temporary file database (WAL, `synchronous=FULL`) with the real `JobStore` and
`Limits.admit`, on a server whose moderators set every limit a real server has: a ban, an
allowed channel, blocked plain terms and regular expressions, a maximum of images per request,
a per-member queue cap (jobs at once plus jobs waiting), a cooldown, a spend cap, role
allowances and member overrides.
Prints one figure per line:

- reservations/s through `JobStore.create_admitted` (one task, then T concurrent tasks), beside
  the stdlib-sqlite3 ceiling: the same transaction (`bot.storage.jobs.reserve` inside
  `bot.storage.database.in_transaction`) in a plain loop on a connection of its own, with no
  asyncio and no thread hop;
- settlements and refunds per second;
- the over-spend checks: P processes, each with its own connection and its own asyncio lock,
  fire B requests between them at once against a member's allowance, a member's queue cap
  and the server's spend cap. Only SQLite's write lock (`BEGIN IMMEDIATE`) keeps them
  apart, so a regression such as `BEGIN DEFERRED` shows up here: as credits reserved past a
  limit (OVER-SPEND) or as requests that failed instead of being admitted or refused (ERRORS).

Ends with OK, or FAIL lines and exit status 1 when any check over-spent or errored.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.verdict import verdict
from bot.credits.admission import Limits
from bot.credits.moderation import ModerationService
from bot.errors import RequestRefused
from bot.generation.models import GenerationRequest, Job
from bot.storage import Database, guild_settings, ledger
from bot.storage.database import in_one_transaction
from bot.storage.jobs import JobStore, reserve

SEQUENTIAL_GUILD = 1
ALLOWANCE_GUILD = 2
QUEUE_GUILD = 3
CAP_GUILD = 4
CEILING_GUILD = 5
CONCURRENT_GUILD = 6
GROUPED_CEILING_GUILD = 7
CHANNEL = 10
MOD = 1
ROLE = 500
OTHER_ROLE = 501
MEMBER = 42
BLOCKED = ("dragon", "wyvern", "kraken", "basilisk", "gorgon", "hydra", "chimera", "manticore")
BLOCKED_REGEXES = (r"\bwy(rm|vern)s?\b", r"\bgr[iy]ff?[io]ns?\b", r"n[o0]+pe\d{2,}")


def request(guild_id: int, user_id: int, outputs: int = 1) -> GenerationRequest:
    return GenerationRequest(
        guild_id,
        CHANNEL,
        user_id,
        "a lighthouse at dusk over a calm sea, oil painting",
        "1:1",
        outputs,
        role_ids=(ROLE, OTHER_ROLE),
    )


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s ({count} in {seconds:.2f}s)"


async def configure(db: Database, guild_id: int, **settings: Any) -> None:
    """Every limit a real server has, through the moderators' own actions."""
    mod = ModerationService(db, Limits(db))
    await db.run(lambda conn: guild_settings.save(conn, guild_id, **settings))
    await mod.ban(guild_id=guild_id, actor_id=MOD, user_id=7, reason="spam")
    await mod.ban(guild_id=guild_id, actor_id=MOD, user_id=8, duration_seconds=3600)
    await mod.allow_channel(guild_id=guild_id, actor_id=MOD, channel_id=CHANNEL)
    await mod.allow_channel(guild_id=guild_id, actor_id=MOD, channel_id=CHANNEL + 1)
    for term in BLOCKED:
        await mod.add_blocked_term(guild_id=guild_id, actor_id=MOD, term=term)
    for pattern in BLOCKED_REGEXES:
        await mod.add_blocked_term(guild_id=guild_id, actor_id=MOD, term=pattern, is_regex=True)
    await mod.set_role_allowance(guild_id=guild_id, actor_id=MOD, role_id=ROLE, allowance=None)
    await mod.set_role_allowance(guild_id=guild_id, actor_id=MOD, role_id=OTHER_ROLE, allowance=5)
    for user in range(100, 110):
        await mod.set_user_allowance(guild_id=guild_id, actor_id=MOD, user_id=user, allowance=3)


async def throughput(db: Database, jobs: int, tasks: int) -> float:
    """Reservations/s with one task, then with `tasks` at once (each phase on a guild of its
    own, so both start from an empty ledger); returns the latter rate."""
    store, limits = JobStore(db), Limits(db)

    async def reserve_many(guild_id: int, users: range) -> list[Job]:
        return [(await store.create_admitted(request(guild_id, u), limits.admit))[0] for u in users]

    started = time.perf_counter()
    sequential = await reserve_many(SEQUENTIAL_GUILD, range(1000, 1000 + jobs))
    print(f"reserve, every limit on, 1 task: {rate(jobs, time.perf_counter() - started)}")
    per_task = jobs // tasks
    started = time.perf_counter()
    batches = await asyncio.gather(
        *(
            reserve_many(CONCURRENT_GUILD, range(1000 + t * per_task, 1000 + (t + 1) * per_task))
            for t in range(tasks)
        )
    )
    elapsed = time.perf_counter() - started
    print(f"reserve, every limit on, {tasks} concurrent tasks: {rate(per_task * tasks, elapsed)}")

    for job in sequential:
        await store.mark_submitted(job.id, api_job_id=str(job.id), status_url="", expires_at=None)
    started = time.perf_counter()
    for job in sequential:
        await store.mark_completed(job.id, charged=1)
    print(f"settle sequential: {rate(len(sequential), time.perf_counter() - started)}")
    refunds = [job for batch in batches for job in batch]
    started = time.perf_counter()
    await asyncio.gather(*(store.mark_failed(job.id, "bench") for job in refunds))
    print(f"refund concurrent: {rate(len(refunds), time.perf_counter() - started)}")
    return per_task * tasks / elapsed


def ceiling(path: Path, guild_id: int, jobs: int, per_commit: int) -> float:
    """The same reservation transaction in a plain loop on a stdlib sqlite3 connection of its
    own (no asyncio, no thread hop), `per_commit` reservations to a COMMIT."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=5000"):
        conn.execute(f"PRAGMA {pragma}")
    limits = Limits(Database(path))  # only its admit() and term cache: it never connects

    def one(job_request: GenerationRequest) -> Callable[[sqlite3.Connection], Any]:
        return lambda c: reserve(c, job_request, limits.admit, time.time())

    try:
        started = time.perf_counter()
        for first in range(1000, 1000 + jobs, per_commit):
            users = range(first, min(first + per_commit, 1000 + jobs))
            outcomes = in_one_transaction(conn, [one(request(guild_id, u)) for u in users])
            assert all(ok for ok, _ in outcomes), outcomes
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    commits = "one COMMIT each" if per_commit == 1 else f"{per_commit} to a COMMIT"
    print(f"stdlib sqlite3 ceiling, same transaction, {commits}: {rate(jobs, elapsed)}")
    return jobs / elapsed


# -- over-spend, from several processes --------------------------------------------------


def _worker(
    path: str, guild_id: int, users: list[int], outputs: int, barrier: Any, out: Any
) -> None:
    """One bot process: its own connection and lock, all its requests at once."""

    async def main() -> tuple[int, int, list[str]]:
        db = Database(path)
        await db.connect()
        try:
            store, limits = JobStore(db), Limits(db)
            barrier.wait()
            results = await asyncio.gather(
                *(
                    store.create_admitted(request(guild_id, u, outputs), limits.admit)
                    for u in users
                ),
                return_exceptions=True,
            )
        finally:
            await db.close()
        admitted = sum(not isinstance(r, BaseException) for r in results)
        refused = sum(isinstance(r, RequestRefused) for r in results)
        errors = [
            f"{type(r).__name__}: {r}"
            for r in results
            if isinstance(r, BaseException) and not isinstance(r, RequestRefused)
        ]
        return admitted, refused, errors

    out.put(asyncio.run(main()))


def burst(
    path: Path,
    processes: int,
    guild_id: int,
    users: Callable[[int], int],
    size: int,
    outputs: int = 1,
) -> tuple[int, int, list[str]]:
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(processes), context.Queue()
    shares = [[users(i) for i in range(p, size, processes)] for p in range(processes)]
    workers = [
        context.Process(target=_worker, args=(str(path), guild_id, share, outputs, barrier, out))
        for share in shares
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    admitted = sum(r[0] for r in results)
    refused = sum(r[1] for r in results)
    errors = [e for r in results for e in r[2]]
    return admitted, refused, errors


def report(
    name: str, limit: int, used: int, admitted: int, refused: int, errors: list[str]
) -> list[str]:
    over = max(0, used - limit)
    print(f"{name} admitted: {admitted}")
    print(f"{name} refused: {refused}")
    print(f"{name} ERRORS: {len(errors)}")
    print(f"{name} reserved: {used} (limit {limit})")
    print(f"{name} OVER-SPEND: {over}")
    failures = []
    if over:
        failures.append(f"{name}: {over} over the limit of {limit}")
    if errors:
        failures.append(f"{name}: {len(errors)} requests failed, e.g. {errors[0]}")
    return failures


async def over_spend(
    db: Database, path: Path, size: int, processes: int, allowance: int
) -> list[str]:
    print(f"over-spend checks: {size} requests at once from {processes} processes")
    failures: list[str] = []
    mod = ModerationService(db, Limits(db))
    # A member's own allowance (a cooldown would admit one request and hide any race).
    await mod.set_user_allowance(
        guild_id=ALLOWANCE_GUILD, actor_id=MOD, user_id=MEMBER, allowance=allowance
    )
    admitted, refused, errors = burst(path, processes, ALLOWANCE_GUILD, lambda i: MEMBER, size)
    used = await db.call(lambda c: ledger.usage_between(c, ALLOWANCE_GUILD, MEMBER, 0.0).used)
    failures += report("allowance burst", allowance, used, admitted, refused, errors)

    # 3 at once and 2 waiting: the queue cap admits 5 unfinished jobs per member.
    admitted, refused, errors = burst(path, processes, QUEUE_GUILD, lambda i: MEMBER, size)
    failures += report("queue cap burst", 5, admitted, admitted, refused, errors)

    cap = allowance * 3 + 1
    await db.run(lambda conn: guild_settings.save(conn, CAP_GUILD, spend_cap=cap))
    admitted, refused, errors = burst(path, processes, CAP_GUILD, lambda i: 20_000 + i, size, 2)
    spent = await db.call(lambda c: ledger.guild_spend(c, CAP_GUILD, 0.0))
    failures += report("cap burst (2 credits each)", cap, spent, admitted, refused, errors)
    return failures


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.sqlite3"
        db = Database(path)
        await db.connect()
        try:
            every = dict(max_concurrent=1_000_000, cooldown_seconds=30, max_outputs=2)
            for guild in (SEQUENTIAL_GUILD, CONCURRENT_GUILD, CEILING_GUILD, GROUPED_CEILING_GUILD):
                await configure(db, guild, spend_cap=10**9, **every)
            await configure(db, ALLOWANCE_GUILD, spend_cap=10**9, **every | {"cooldown_seconds": 0})
            await configure(
                db, QUEUE_GUILD, spend_cap=10**9, max_concurrent=3, max_queued=2, max_outputs=2
            )
            await configure(db, CAP_GUILD, **every | {"cooldown_seconds": 0, "max_concurrent": 10})
            reservations = await throughput(db, args.jobs, args.tasks)
            single = ceiling(path, CEILING_GUILD, args.jobs, 1)
            grouped = ceiling(path, GROUPED_CEILING_GUILD, args.jobs, args.tasks)
            print(
                f"reservations/s with {args.tasks} tasks: {reservations:,.0f}; ceiling "
                f"{single:,.0f} one COMMIT each, {grouped:,.0f} grouped "
                f"({reservations / grouped:.0%} of it)"
            )
            failures = await over_spend(db, path, args.burst, args.processes, args.allowance)
        finally:
            await db.close()
    return verdict(failures)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="reservations per phase")
    parser.add_argument("--tasks", type=int, default=50, help="concurrent reserving tasks")
    parser.add_argument("--burst", type=int, default=200, help="requests at once at a limit")
    parser.add_argument("--processes", type=int, default=4, help="processes sharing the burst")
    parser.add_argument("--allowance", type=int, default=25, help="the member's allowance K")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse())))
