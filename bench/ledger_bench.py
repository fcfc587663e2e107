"""Ledger benchmark: reservation, settlement and refund throughput, and the over-spend check.

Run from the repository root: `python bench/ledger_bench.py [--jobs N] [--tasks T] [--burst B]`.
Uses a temporary file database with the real `JobStore` and `Limits.admit`, and prints one
figure per line. OVER-SPEND must be 0: concurrent requests may never reserve past a limit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.credits.admission import Limits
from bot.errors import RequestRefused
from bot.generation.models import GenerationRequest, Job
from bot.storage import Database, guild_settings, ledger
from bot.storage.jobs import JobStore

THROUGHPUT_GUILD = 1
BURST_GUILD = 2
CAP_GUILD = 3


def request(guild_id: int, user_id: int, outputs: int = 1) -> GenerationRequest:
    return GenerationRequest(guild_id, 10, user_id, "a lighthouse at dusk", "1:1", outputs)


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s ({count} in {seconds:.2f}s)"


async def configure(db: Database, guild_id: int, **values: object) -> None:
    async with db.transaction() as conn:
        await guild_settings.save(conn, guild_id, **values)


async def reserve(store: JobStore, limits: Limits, job_request: GenerationRequest) -> Job:
    job, _ = await store.create_admitted(job_request, limits.admit)
    return job


async def reserve_many(store: JobStore, limits: Limits, users: range) -> list[Job]:
    return [await reserve(store, limits, request(THROUGHPUT_GUILD, user)) for user in users]


async def throughput(db: Database, store: JobStore, limits: Limits, jobs: int, tasks: int) -> None:
    await configure(db, THROUGHPUT_GUILD, default_allowance=None, max_concurrent=1_000_000)
    started = time.perf_counter()
    sequential = await reserve_many(store, limits, range(jobs))
    print(f"reserve sequential: {rate(jobs, time.perf_counter() - started)}")

    per_task = jobs // tasks
    started = time.perf_counter()
    batches = await asyncio.gather(
        *(
            reserve_many(store, limits, range(jobs * (t + 1), jobs * (t + 1) + per_task))
            for t in range(tasks)
        )
    )
    print(
        f"reserve with {tasks} concurrent tasks: "
        f"{rate(per_task * tasks, time.perf_counter() - started)}"
    )

    for job in sequential:
        await store.mark_submitted(job.id, api_job_id=str(job.id), status_url="", expires_at=None)
    started = time.perf_counter()
    for job in sequential:
        await store.mark_completed(job.id, charged=2)
    print(f"settle sequential: {rate(len(sequential), time.perf_counter() - started)}")

    refunds = [job for batch in batches for job in batch]
    started = time.perf_counter()
    await asyncio.gather(*(store.mark_failed(job.id, "bench") for job in refunds))
    print(f"refund concurrent: {rate(len(refunds), time.perf_counter() - started)}")


async def burst(store: JobStore, limits: Limits, db: Database, size: int, allowance: int) -> None:
    """`size` concurrent requests from one member whose allowance is `allowance`."""
    await configure(db, BURST_GUILD, default_allowance=allowance, max_concurrent=1_000_000)
    member = 42
    started = time.perf_counter()
    results = await asyncio.gather(
        *(reserve(store, limits, request(BURST_GUILD, member)) for _ in range(size)),
        return_exceptions=True,
    )
    elapsed = time.perf_counter() - started
    admitted = sum(isinstance(r, Job) for r in results)
    refused = sum(isinstance(r, RequestRefused) for r in results)
    other = size - admitted - refused
    async with db.read() as conn:
        used = (await ledger.usage_between(conn, BURST_GUILD, member, 0.0)).used
    print(f"burst: {size} concurrent requests from one member, allowance {allowance}")
    print(f"burst admitted: {admitted}")
    print(f"burst refused: {refused}")
    print(f"burst errors: {other}")
    print(f"burst credits reserved: {used}")
    print(f"burst OVER-SPEND: {max(0, used - allowance)}")
    print(f"burst time: {elapsed:.2f}s")


async def cap_burst(store: JobStore, limits: Limits, db: Database, size: int, cap: int) -> None:
    """`size` concurrent 2-image requests from different members against a server spend cap."""
    await configure(db, CAP_GUILD, default_allowance=None, max_concurrent=10, spend_cap=cap)
    results = await asyncio.gather(
        *(reserve(store, limits, request(CAP_GUILD, user, 2)) for user in range(size)),
        return_exceptions=True,
    )
    admitted = sum(isinstance(r, Job) for r in results)
    async with db.read() as conn:
        spent = await ledger.guild_spend(conn, CAP_GUILD, 0.0)
    print(f"cap burst: {size} concurrent 2-credit requests from different members, cap {cap}")
    print(f"cap burst admitted: {admitted}")
    print(f"cap burst credits reserved: {spent}")
    print(f"cap burst OVER-SPEND: {max(0, spent - cap)}")


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as folder:
        db = Database(Path(folder) / "bench.sqlite3")
        await db.connect()
        try:
            store, limits = JobStore(db), Limits(db)
            await throughput(db, store, limits, args.jobs, args.tasks)
            await burst(store, limits, db, args.burst, args.allowance)
            await cap_burst(store, limits, db, args.burst, args.allowance * 3 + 1)
        finally:
            await db.close()
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="reservations per phase")
    parser.add_argument("--tasks", type=int, default=50, help="concurrent reserving tasks")
    parser.add_argument("--burst", type=int, default=200, help="concurrent requests at a limit")
    parser.add_argument("--allowance", type=int, default=25, help="the member's allowance K")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse())))
