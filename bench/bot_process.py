"""What the benches that drive the real bot process share (bench/bot_bench.py,
bench/channel_bench.py, bench/rate_limit_bench.py): the guild the Discord double serves and the
bot's database, `python -m bot` against the doubles, the burst of /imagine, and the figures."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from bench.history import seed_history
from bot.config import Settings
from bot.credits.admission import Limits
from bot.credits.moderation import ModerationService
from bot.pixeldojo.models import ASPECT_RATIOS
from bot.storage import Database
from tests.doubles.discord_double import (
    ChannelSpec,
    DiscordDouble,
    GuildSpec,
    InteractionRecord,
    MemberSpec,
    RequestLog,
)
from tests.doubles.pixeldojo import FakePixelDojo
from tests.helpers import BotProcess

GUILD_ID = 1_300_000_000_000_000_001
CHANNEL_ID = 1_300_000_000_000_000_002
OWNER_ID = 1_300_000_000_000_000_010
FIRST_MEMBER_ID = 1_300_000_000_000_001_000
HISTORY_GUILD_ID = 1

BURST_CONCURRENCY = 10
"""Generations a member may have running at once under `prepare_database(burst_limits=True)`."""

PROMPTS = (
    "a lighthouse at dawn",
    "a fox in a snowy forest, watercolour",
    "neon city street in the rain",
    "a bowl of ramen, studio photo",
    "an astronaut riding a horse on the moon",
    "isometric pixel-art castle",
    "portrait of an old sailor, oil painting",
    "a cat wearing a tiny wizard hat",
)

Ask = tuple[int, str, int, str]
"""One /imagine: the member's id, the prompt, how many images, the aspect ratio."""


# -- the guild and the bot's database ----------------------------------------------------------


def make_guild(members: int) -> GuildSpec:
    """The bench guild: its owner, one channel, and `members` members."""
    return GuildSpec(
        id=GUILD_ID,
        name="Bench Lab",
        owner_id=OWNER_ID,
        channels=[ChannelSpec(CHANNEL_ID, "creations")],
        roles=[],
        members=[
            MemberSpec(OWNER_ID, "owner"),
            *(MemberSpec(FIRST_MEMBER_ID + i, f"member{i:03d}") for i in range(members)),
        ],
    )


async def prepare_database(path: Path, history: list[float], *, burst_limits: bool) -> None:
    """An unlimited allowance, and `history`: generation times of earlier jobs (in another
    guild, so no figure counts them), as a bot that has been running would have. With
    `burst_limits`, `BURST_CONCURRENCY` generations at a time per member and up to 4 images,
    so that a burst is not refused; else the other limits are the defaults."""
    db = Database(path)
    await db.connect()
    try:
        await seed_history(db, history, guild_id=HISTORY_GUILD_ID)
        moderation = ModerationService(db, Limits(db))
        await moderation.set_default_allowance(guild_id=GUILD_ID, actor_id=OWNER_ID, allowance=None)
        if burst_limits:
            await moderation.set_max_concurrent(
                guild_id=GUILD_ID, actor_id=OWNER_ID, value=BURST_CONCURRENCY
            )
            await moderation.set_max_outputs(guild_id=GUILD_ID, actor_id=OWNER_ID, value=4)
    finally:
        await db.close()


async def read_database(path: Path) -> tuple[dict[int, dict[str, Any]], int]:
    """Job rows by id, and the guild's credits used in the ledger (all kinds but grants)."""
    db = Database(path)
    await db.connect()
    try:
        rows = await db.fetchall(
            "SELECT id, prompt, state, api_job_id, num_outputs, credits_charged, polls, "
            "status_message_id FROM jobs "
            "WHERE guild_id = ?",
            (GUILD_ID,),
        )
        used = await db.fetchone(
            "SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE guild_id = ? AND kind != 'grant'",
            (GUILD_ID,),
        )
    finally:
        await db.close()
    assert used is not None
    return {row["id"]: dict(row) for row in rows}, int(used[0])


class Doubles(NamedTuple):
    """What `bench_doubles` sets up."""

    folder: Path
    """A temporary folder, removed at the end: the database's and the bot log's."""
    database: Path
    api: FakePixelDojo
    double: DiscordDouble


@contextlib.asynccontextmanager
async def bench_doubles(
    prefix: str,
    members: int,
    history: list[float],
    api: FakePixelDojo,
    *,
    burst_limits: bool,
) -> AsyncIterator[Doubles]:
    """A prepared database (see `prepare_database`), `api` and the Discord double serving
    `make_guild(members)`, both running until the end."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        database = Path(folder) / "bot.sqlite3"
        await prepare_database(database, history, burst_limits=burst_limits)
        async with api, DiscordDouble(guilds=[make_guild(members)]) as double:
            yield Doubles(Path(folder), database, api, double)


# -- the bot process ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bot_process(
    settings: Settings, folder: Path, *, keep_log_at: Path | None = None
) -> AsyncIterator[BotProcess]:
    """`python -m bot` with `settings` (not started yet: see `start_bot`), logging to
    `folder`/bot.log. On an error the log's last lines go to stderr; at the end the bot is
    stopped, and its log copied to `keep_log_at` if given."""
    process = BotProcess(settings, folder / "bot.log")
    try:
        yield process
    except BaseException:
        print("--- last lines of the bot log ---", file=sys.stderr)
        print("\n".join(process.log().splitlines()[-40:]), file=sys.stderr)
        raise
    finally:
        await asyncio.to_thread(process.stop)
        if keep_log_at is not None:
            await asyncio.to_thread(keep_log_at.write_text, process.log())


async def start_bot(process: BotProcess, double: DiscordDouble) -> float:
    """Start the bot and wait until it is connected and has synced its commands; the seconds
    that took."""
    started = time.monotonic()
    process.start()
    await double.wait_until_ready(timeout=30)
    await double.wait_for_commands(timeout=30)
    return time.monotonic() - started


async def settle(double: DiscordDouble, quiet: float, *, at_most: float) -> None:
    """Return once Discord has had no request for `quiet` seconds, or after `at_most`: lets
    the traffic a finished job still causes (a last edit, a status delete) land, as it counts."""
    loop = asyncio.get_running_loop()
    settled_by = loop.time() + at_most
    while (left := settled_by - loop.time()) > 0:
        try:
            await double.wait_for(lambda e: e.kind == "request", timeout=min(quiet, left))
        except TimeoutError:
            return


def proc_stats(process: BotProcess) -> tuple[float, int] | None:
    """(CPU seconds, peak RSS in KiB) of the running bot, from /proc; None if unavailable."""
    assert process.process is not None
    pid = process.process.pid
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks
        hwm = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
        return cpu, hwm
    except (OSError, IndexError, ValueError):
        return None


# -- the burst ---------------------------------------------------------------------------------


def add_burst_options(parser: argparse.ArgumentParser) -> None:
    """--burst-seconds, --min-duration and --max-duration."""
    parser.add_argument("--burst-seconds", type=float, default=1.0, help="dispatch window")
    parser.add_argument("--min-duration", type=float, default=6.0, help="shortest job (s)")
    parser.add_argument("--max-duration", type=float, default=10.0, help="longest job (s)")


def parse_burst(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """`argv` parsed, with --requests and --members checked against `BURST_CONCURRENCY`."""
    args = parser.parse_args(argv)
    if args.members < 1 or args.requests < 1:
        parser.error("--requests and --members must be positive")
    if args.requests > args.members * BURST_CONCURRENCY:
        parser.error(
            f"more than {BURST_CONCURRENCY} requests per member would hit max_concurrent "
            f"{BURST_CONCURRENCY}"
        )
    return args


def job_durations(
    rng: random.Random, args: argparse.Namespace, scale: float, count: int
) -> list[float]:
    """`count` job durations drawn between --min-duration and --max-duration, times `scale`."""
    return [rng.uniform(args.min_duration, args.max_duration) * scale for _ in range(count)]


def burst_asks(
    rng: random.Random,
    requests: int,
    members: int,
    *,
    outputs: int | None = None,
    aspect_ratio: str | None = None,
) -> list[Ask]:
    """`requests` /imagine from `members` members in turn, each for `outputs` images in
    `aspect_ratio` (drawn, 1-4 and any, when None). Prompts are unique per command: they map
    each /imagine to its job row."""
    return [
        (
            FIRST_MEMBER_ID + i % members,
            f"{rng.choice(PROMPTS)}, take {i + 1}",
            rng.randint(1, 4) if outputs is None else outputs,
            rng.choice(ASPECT_RATIOS) if aspect_ratio is None else aspect_ratio,
        )
        for i in range(requests)
    ]


async def send_burst(
    double: DiscordDouble, asks: Sequence[Ask], spacing: float
) -> list[InteractionRecord]:
    """Each ask as /imagine in the bench channel, `spacing` seconds apart from 0.1 s on."""
    loop = asyncio.get_running_loop()
    burst_at = loop.time() + 0.1

    async def fire(index: int, ask: Ask) -> InteractionRecord:
        await asyncio.sleep(max(0.0, burst_at + index * spacing - loop.time()))
        user_id, prompt, outputs, ratio = ask
        return await double.slash(
            "imagine",
            {"prompt": prompt, "num_outputs": outputs, "aspect_ratio": ratio},
            user_id=user_id,
            guild_id=GUILD_ID,
            channel_id=CHANNEL_ID,
        )

    return list(await asyncio.gather(*(fire(i, ask) for i, ask in enumerate(asks))))


# -- figures -----------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def show(name: str, value: float | int | str, unit: str = "") -> None:
    """Print one "name: value unit" figure."""
    if isinstance(value, float):
        text = "nan" if math.isnan(value) else f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    else:
        text = str(value)
    print(f"{name}: {text}{' ' + unit if unit else ''}", flush=True)


def show_spread(
    name: str, seconds: list[float], percentiles: Sequence[int] = (50, 99), unit: str = "ms"
) -> None:
    """`name` p50, p99 (or `percentiles`) and max of `seconds`, shown in `unit` (ms or s)."""
    factor = 1000 if unit == "ms" else 1
    for p in percentiles:
        show(f"{name} p{p}", pct(seconds, p) * factor, unit)
    show(f"{name} max", (max(seconds) if seconds else math.nan) * factor, unit)


def show_discord_errors(double: DiscordDouble, load: list[RequestLog], rate_limited: str) -> None:
    """Discord 429s (named `rate_limited`), by bucket kind, and non-2xx responses in `load`."""
    show(rate_limited, double.rate_limited_count)
    for kind, count in sorted(double.rate_limited_by_kind.items()):
        show(f"  429s {kind}", count)
    show("Discord non-2xx responses", sum(not 200 <= r.status < 300 for r in load))
