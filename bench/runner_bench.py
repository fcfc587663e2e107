"""Runner benchmark: 1,000 jobs in one process, those in flight polled by one scheduler.

Run from the repository root: `python bench/runner_bench.py [--cold] [--jobs N] [--duration S]
[--members M] [--jobs-at-once K]`.

The real `JobStore` (temporary file database), `JobRunner` and `PixelDojoClient` run against
FakePixelDojo with a no-op presenter, using the product's runner defaults (`RunnerSettings()`,
printed at the start; the options below override them). Every job takes `--duration` seconds
(20 by default). The jobs come from `--members` members (50) of one guild, and the runner's fair
queue runs at most the guild's jobs-at-once per member, wired as `bot/services.py` wires it (the
guild settings in the database, read at each dispatch): the product default (2) unless
`--jobs-at-once` sets it, through the moderators' own `ModerationService.set_max_concurrent`
(so only what `/mod settings` accepts, 1 to 10). So min(jobs, members x jobs at once) are in
flight at the peak (100 by default; `--members 100 --jobs-at-once 10` puts all 1,000 in flight)
and the rest follow in waves as jobs finish. Phases: "submitting" runs until the peak in flight
is reached, "polling" (or "all in flight") from then to the first completion, "delivering"
from then to the last post (later waves included).

It exits 1 (a FAIL line per check) if the peak in flight is not min(jobs, members x jobs at
once), a job is not posted or not final in the database, or a poll count in SQLite differs from
what PixelDojo saw; in either pass.

The runner shapes its poll schedule (`JobRunner._interval`) around the typical generation time
it has learned (the median of recent jobs, read from the database at `start()`): sparse before
most of it has passed, dense (`poll_initial_interval`) around it, backing off after. By default
the run is warm, as on a bot that has been running: the database starts with 20 earlier
finished jobs of `--duration` s (in another guild, so no figure counts them). `--cold` starts
empty, so the runner uses its schedule for when nothing has been learned yet.

The expected figures ("ideal schedule": polls per job, polls per second asked, completion to
first poll) come from the runner itself: a `JobRunner` with the same settings and the same
learned durations is asked for `_interval(elapsed)` along each job's life, from the moment the
runner counts from (its `submitted_at`) to its completion at FakePixelDojo, with one seeded
jitter draw per interval (so a mean over 1,000 jobs averages the jitter out). Ideal means every
poll on time and instant.

Two passes: the timing pass (no tracemalloc, which roughly triples the CPU cost of this
allocation-heavy code and would distort every timing) prints event-loop lag (overshoot of a
50 ms timer) per phase, poll lateness against the schedule and where each poll's time goes, the
poll slots' and the DB lock's load, polls per second asked and served, peak RSS and the time
until all jobs are posted; then a memory pass repeats the run under tracemalloc (jobs of
`--memory-duration` s, same warm or cold start, still all in flight) and prints only its
tracemalloc peak.

How a poll runs (bot/generation/runner.py): the scheduler takes a poll slot *before* it starts
the poll task (due order, at most `max_concurrent_polls` poll tasks), the task asks PixelDojo and
gives the slot back as soon as PixelDojo answered, then handles the answer (reschedule, or mark the
job completed and deliver it, in the same task). Polls read no row and write none: the runner
keeps polled jobs and poll counts in memory and writes the count with the job's final state.
So one poll's lateness splits into: the scheduler reaching it, waiting for a slot, the task
starting, then the HTTP request; the slot is held from the scheduler's acquire to the answer.
A late poll is rescheduled from when it ran, so an overloaded process polls less often than
asked rather than falling ever further behind: compare "asked" with "sent".

Caveat: FakePixelDojo serves from the same process and event loop, so its CPU time and its
allocations are included in every figure (the bot would spend none of that).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import copy
import math
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.history import seed_history
from bench.loop_lag import LoopLag
from bench.verdict import verdict
from bot.credits.admission import Limits
from bot.credits.moderation import MAX_CONCURRENT_MAX, ModerationService
from bot.generation import runner as runner_module
from bot.generation.models import GenerationRequest, Job
from bot.generation.runner import JobRunner, Phase, ResultImage, RunnerSettings
from bot.generation.service import admit_without_limits
from bot.pixeldojo.client import PixelDojoClient
from bot.pixeldojo.models import JobStatus, SubmittedJob

# The composition root's own wiring of the per-member limit (not a copy of it).
from bot.services import member_concurrency_from
from bot.storage import Database
from bot.storage.guild_settings import GuildSettings
from bot.storage.jobs import JobStore
from tests.doubles.pixeldojo import FakePixelDojo

GUILD_ID = 1
CHANNEL_ID = 10
HISTORY_GUILD_ID = 2  # earlier finished jobs (warm start) live in another guild
HISTORY_JOBS = 20
MODERATOR_ID = 99  # who sets --jobs-at-once (in the audit log)
DEFAULT_JOBS_AT_ONCE = GuildSettings(guild_id=0).max_concurrent


# -- figures -----------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


MUTED = False


def show(name: str, value: float | int | str, unit: str = "", *, always: bool = False) -> None:
    if MUTED and not always:
        return
    if isinstance(value, float):
        text = "nan" if math.isnan(value) else f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    else:
        text = str(value)
    print(f"{name}: {text}{' ' + unit if unit else ''}", flush=True)


def show_dist(name: str, seconds: list[float], *, scale: float = 1000, unit: str = "ms") -> None:
    show(f"{name} p50", pct(seconds, 50) * scale, unit)
    show(f"{name} p99", pct(seconds, 99) * scale, unit)
    show(f"{name} max", (max(seconds) if seconds else math.nan) * scale, unit)


def peak_per_window(times: list[float], window: float = 1.0) -> int:
    """Most events in any sliding window of `window` seconds."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def rate(times: list[float], start: float, end: float) -> float:
    """Events per second between `start` and `end` (NaN for an empty window)."""
    if end <= start:
        return math.nan
    return sum(start <= t < end for t in times) / (end - start)


def ideal_poll_times(model: JobRunner, complete_after: float, rng: random.Random) -> list[float]:
    """When the runner's own `_interval` asks to poll a job (seconds after the moment it counts
    `elapsed` from), every poll on time and instant, up to the first poll that sees the job
    completed `complete_after` seconds in. `rng` stands in for `bot.runner`'s `random`, so the
    jitter is drawn as in the product but reproducibly."""
    times: list[float] = []
    with mock.patch.object(runner_module, "random", rng):
        t = model._interval(0.0)
        while True:
            times.append(t)
            if t >= complete_after or t > model.settings.job_timeout:
                return times
            t += model._interval(t)


# -- instrumentation (subclasses and wrappers only: bot code is unchanged) ---------------------


@dataclass(slots=True)
class PollRecord:
    """One poll's timeline (`time.monotonic()` values; `loop.time()` is the same clock)."""

    job_id: int
    due: float
    asked: float  # the scheduler asked for a poll slot
    acquired: float  # ... and got it
    started: float = math.nan  # the poll task started
    http_sent: float = math.nan  # client.get_job called
    answered: float = math.nan  # client.get_job returned (or raised)
    released: float = math.nan  # the poll slot given back
    ended: float = math.nan  # the poll task ended (after any reschedule, or the delivery)
    outcome: str = "?"  # "generating", "completed" or "other"


# The poll the current task is running (set by TimedRunner._poll, read by the client and slots).
_current_poll: contextvars.ContextVar[PollRecord | None] = contextvars.ContextVar(
    "current_poll", default=None
)


class TimedLock(asyncio.Lock):
    """The Database's lock, recording when callers asked for it, got it and gave it back."""

    def __init__(self) -> None:
        super().__init__()
        self.holds: list[tuple[float, float, float]] = []  # (asked, acquired, released)
        self._asked = 0.0
        self._since = 0.0

    async def acquire(self) -> bool:
        asked = time.monotonic()
        result = await super().acquire()
        self._asked, self._since = asked, time.monotonic()
        return result

    def release(self) -> None:
        self.holds.append((self._asked, self._since, time.monotonic()))
        super().release()

    def between(self, start: float, end: float) -> list[tuple[float, float, float]]:
        """The holds that began between `start` and `end`."""
        return [hold for hold in self.holds if start <= hold[1] <= end]

    def held_fraction(self, start: float, end: float) -> float:
        if end <= start:
            return math.nan
        held = sum(max(0.0, min(r, end) - max(a, start)) for _, a, r in self.holds)
        return held / (end - start)


class TimedSlots(asyncio.Semaphore):
    """The runner's poll slots. Only the scheduler acquires one (then starts the poll task at
    once, with no await in between); the poll task releases it once PixelDojo answered."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.capacity = value
        self.busy = 0
        self.busy_steps: list[tuple[float, int]] = [(time.monotonic(), 0)]
        self.last_asked = math.nan
        self.last_acquired = math.nan
        self.acquisitions = 0
        self.unused_releases = 0  # released by the scheduler: the job had stopped polling

    async def acquire(self) -> bool:
        asked = time.monotonic()
        result = await super().acquire()
        self.last_asked, self.last_acquired = asked, time.monotonic()
        self.acquisitions += 1
        self._step(+1)
        return result

    def release(self) -> None:
        record = _current_poll.get()
        if record is not None and math.isnan(record.released):
            record.released = time.monotonic()
        else:
            self.unused_releases += 1
        self._step(-1)
        super().release()

    def _step(self, delta: int) -> None:
        self.busy += delta
        self.busy_steps.append((time.monotonic(), self.busy))

    def busy_fraction(self, start: float, end: float) -> float:
        """Mean share of the slots held between `start` and `end`."""
        if end <= start:
            return math.nan
        area = 0.0
        steps = self.busy_steps
        for (at, busy), (following, _) in zip(steps, [*steps[1:], (end, 0)], strict=True):
            lo, hi = max(at, start), min(following, end)
            if hi > lo:
                area += busy * (hi - lo)
        return area / (self.capacity * (end - start))


class TimedStore(JobStore):
    """Times the store calls the runner still makes (each holds the DB lock once)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.get_calls: list[float] = []  # when
        self.times: dict[str, list[float]] = {
            "mark_submitted": [],
            "mark_completed": [],
            "mark_posted": [],
        }
        self.polls_written: dict[int, int | None] = {}
        self.submitted = 0
        self.expected = 0
        self.all_submitted = asyncio.Event()

    async def get(self, job_id: int) -> Job | None:
        self.get_calls.append(time.monotonic())
        return await super().get(job_id)

    async def mark_submitted(self, job_id: int, **kwargs: object) -> Job:
        started = time.perf_counter()
        job = await super().mark_submitted(job_id, **kwargs)  # type: ignore[arg-type]
        self.times["mark_submitted"].append(time.perf_counter() - started)
        self.submitted += 1
        if self.submitted >= self.expected:
            self.all_submitted.set()
        return job

    async def mark_completed(
        self,
        job_id: int,
        *,
        charged: int | None,
        polls: int | None = None,
        at: float | None = None,
    ) -> Job:
        started = time.perf_counter()
        self.polls_written[job_id] = polls
        try:
            return await super().mark_completed(job_id, charged=charged, polls=polls, at=at)
        finally:
            self.times["mark_completed"].append(time.perf_counter() - started)

    async def mark_posted(self, job_id: int, *, result_message_id: int) -> Job:
        started = time.perf_counter()
        try:
            return await super().mark_posted(job_id, result_message_id=result_message_id)
        finally:
            self.times["mark_posted"].append(time.perf_counter() - started)


class TimedClient(PixelDojoClient):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.download_times: list[float] = []
        self.downloading = 0
        self.downloading_max = 0

    async def get_job(self, job: SubmittedJob | str, **kwargs: Any) -> JobStatus:
        record = _current_poll.get()
        if record is not None:
            record.http_sent = time.monotonic()
        try:
            return await super().get_job(job, **kwargs)
        finally:
            if record is not None:
                record.answered = time.monotonic()

    async def download(self, url: str, **kwargs: object) -> tuple[bytes, str | None]:
        started = time.perf_counter()
        self.downloading += 1
        self.downloading_max = max(self.downloading_max, self.downloading)
        try:
            return await super().download(url, **kwargs)  # type: ignore[arg-type]
        finally:
            self.downloading -= 1
            self.download_times.append(time.perf_counter() - started)


class TimedRunner(JobRunner):
    """Records each poll's timeline: due time (from `_schedule`), slot asked/acquired (from the
    slots, copied when the scheduler spawns the poll task), then the task's own steps."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.slots = TimedSlots(self.settings.max_concurrent_polls)
        self._poll_slots = self.slots
        self.due: dict[int, float] = {}
        self.spawned: dict[int, PollRecord] = {}
        self.records: list[PollRecord] = []
        self.schedule_calls = 0
        self.max_tasks = 0
        self.peak_in_flight = 0
        self.peak_at = math.nan  # when `in_flight` first reached `peak_in_flight`

    def _schedule(self, job: Job, delay: float) -> None:
        self.due[job.id] = asyncio.get_running_loop().time() + delay
        self.schedule_calls += 1
        super()._schedule(job, delay)
        # `_schedule` is where a job joins the polled ones: this sees every new peak.
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight, self.peak_at = self.in_flight, time.monotonic()

    def _spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        if name.startswith("poll-"):
            # The scheduler got a slot and spawns right away: the last acquire is this poll's.
            job_id = int(name.removeprefix("poll-"))
            self.spawned[job_id] = PollRecord(
                job_id,
                due=self.due.get(job_id, self.slots.last_acquired),
                asked=self.slots.last_asked,
                acquired=self.slots.last_acquired,
            )
        return super()._spawn(coro, name)

    async def _poll(self, job: Job) -> None:
        record = self.spawned.pop(job.id)
        record.started = time.monotonic()
        _current_poll.set(record)
        self.records.append(record)
        self.max_tasks = max(self.max_tasks, len(self._tasks))
        try:
            await super()._poll(job)
        finally:
            record.ended = time.monotonic()
            if job.id not in self._polling:
                record.outcome = "completed" if job.id in self.store.polls_written else "other"
            else:
                record.outcome = "generating"


class NullPresenter:
    """Implements `bot.runner.JobPresenter` and shows nothing."""

    def __init__(self) -> None:
        self.posted: dict[int, float] = {}
        self.failures: dict[int, str] = {}
        self.status_calls = 0
        self.all_posted = asyncio.Event()
        self.expected = 0

    async def show_status(
        self, job: Job, phase: Phase, elapsed: float, queue: object = None
    ) -> None:
        self.status_calls += 1

    async def show_failure(self, job: Job, reason: str) -> None:
        self.failures[job.id] = reason
        self._check()

    async def post_result(self, job: Job, images: list[ResultImage], elapsed: float) -> int:
        self.posted[job.id] = time.monotonic()
        self._check()
        return 10_000_000 + job.id

    async def find_posted_result(self, job: Job) -> int | None:
        return None

    def forget(self, job_id: int) -> None:
        """Nothing is kept per job."""

    def _check(self) -> None:
        if len(self.posted) + len(self.failures) >= self.expected:
            self.all_posted.set()


class TimedLoopLag(LoopLag):
    """Loop lag with the time of each sample, the loop thread's CPU time and jobs in flight."""

    def __init__(self, period: float = 0.05) -> None:
        super().__init__(period)
        self.timed: list[tuple[float, float]] = []
        self.cpu: list[tuple[float, float]] = []  # (time, this thread's CPU seconds)
        self.in_flight: list[tuple[float, int]] = []
        self.runner: JobRunner | None = None

    def record(self, now: float, overshoot: float) -> None:
        self.timed.append((now, overshoot))
        self.cpu.append((now, time.thread_time()))
        if self.runner is not None:
            self.in_flight.append((now, self.runner.in_flight))

    def between(self, start: float, end: float) -> list[float]:
        return [lag for at, lag in self.timed if start <= at <= end]

    def busy(self, start: float, end: float) -> float:
        """The event loop thread's CPU time over wall time between `start` and `end`."""
        inside = [(at, cpu) for at, cpu in self.cpu if start <= at <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return math.nan
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def timeline(
    start: float,
    end: float,
    runner: TimedRunner,
    lock: TimedLock,
    lag: TimedLoopLag,
    asked: list[float],
) -> None:
    """Per 2 s of the run: polls the ideal schedule asks for (`asked`: on-time poll times),
    polls due (the runner's due times, which move later when polls run late) and sent per
    second, their lateness, and what was busy."""
    step = 2.0
    records = [r for r in runner.records if not math.isnan(r.http_sent)]
    at = start
    while at < end:
        until = min(end, at + step)
        span = until - at
        due = sum(at <= r.due < until for r in records)
        ideal = sum(at <= t < until for t in asked)
        sent = [r for r in records if at <= r.http_sent < until]
        late = pct([r.http_sent - r.due for r in sent], 50) * 1000
        slots = runner.slots.busy_fraction(at, until)
        held = lock.held_fraction(at, until)
        cpu = lag.busy(at, until)
        show(
            f"timeline {at - start:4.1f}-{until - start:4.1f} s",
            f"polls asked {ideal / span:4.0f}/s, due {due / span:4.0f}/s, "
            f"sent {len(sent) / span:4.0f}/s, "
            f"lateness p50 {late:5.0f} ms, slots busy {slots:4.0%}, DB lock held {held:4.0%}, "
            f"loop CPU {cpu:4.0%}, in flight {runner_in_flight(lag, until)}",
        )
        at = until


def runner_in_flight(lag: TimedLoopLag, at: float) -> int:
    """Jobs the scheduler tracked at the last sample before `at`."""
    before = [n for when, n in lag.in_flight if when <= at]
    return before[-1] if before else 0


def show_typical(name: str, runner: JobRunner) -> None:
    typical = runner.durations.typical()
    if typical is None:
        show(name, "none (too few finished jobs: the schedule for no history)")
    else:
        show(name, typical, "s")


def capacity(
    polling: int,
    settings: RunnerSettings,
    lag: TimedLoopLag,
    records: list[PollRecord],
    asked: float,
    sent: float,
    start: float,
    end: float,
) -> None:
    """Say whether this process sent the polls the schedule asked for between `start` and `end`
    (while every job is polling), and if not, what it ran out of."""
    if math.isnan(asked) or asked <= 0:
        show("capacity", "no polls asked while every job was polling (window too short)")
        return
    late = pct([r.http_sent - r.due for r in records if start <= r.http_sent < end], 50)
    cpu = lag.busy(start, end)
    where = (
        f"{end - start:.1f} s with all {polling} jobs polling: asked {asked:.0f} polls/s, "
        f"sent {sent:.0f}/s ({sent / asked:.0%}), polls {late * 1000:.0f} ms late (p50), "
        f"event loop thread {cpu:.0%} busy"
    )
    if sent >= 0.9 * asked:
        limit = ", at the limit (the loop thread is saturated)" if cpu >= 0.95 else ""
        show("capacity", f"met{limit}: {where}")
        return
    show(
        "capacity",
        f"NOT MET: {where}. The {asked:.0f} polls/s the schedule asks for {polling} jobs "
        f"(dense interval {settings.poll_initial_interval:g} s) are more than this process "
        "serves on one event loop thread with FakePixelDojo in it; late polls are rescheduled "
        "from when they ran, so the runner polls less often than asked rather than falling "
        "further behind",
    )


# -- the run -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    global MUTED
    bench_started = time.monotonic()
    overrides = {
        name: value
        for name, value in (
            ("poll_initial_interval", args.poll_initial),
            ("poll_max_interval", args.poll_max),
            ("max_concurrent_polls", args.max_concurrent_polls),
            ("max_concurrent_submits", args.max_concurrent_submits),
        )
        if value is not None
    }
    settings = replace(RunnerSettings(), **overrides)
    if args.cold:
        show("mode", "cold: no earlier jobs, the runner has not learned a typical duration")
    else:
        show(
            "mode",
            f"warm: {HISTORY_JOBS} earlier finished jobs of {args.duration:g} s in the database"
            " (--cold for none)",
        )
    show("jobs", args.jobs)
    show("job duration", args.duration, "s")
    show("members", args.members)
    show(
        "jobs at once per member",
        f"{jobs_at_once(args)}"
        + (" (set by a moderator)" if args.jobs_at_once else " (the product default)"),
    )
    show("jobs in flight asked (at the peak)", expected_peak(args))
    changed = ", ".join(f"{name}={value}" for name, value in overrides.items())
    show("runner settings", f"RunnerSettings() defaults{' except ' + changed if changed else ''}")
    show("poll initial (dense) interval", settings.poll_initial_interval, "s")
    show("poll max interval", settings.poll_max_interval, "s")
    show("job timeout", settings.job_timeout, "s")
    show("max concurrent polls", settings.max_concurrent_polls)
    show("max concurrent submits", settings.max_concurrent_submits)
    show("caveat", "FakePixelDojo runs in this process: its CPU and memory are in every figure")

    failures = await one_pass(args, settings, args.duration)
    show("peak RSS (ru_maxrss)", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MiB")
    show("timing pass runtime", time.monotonic() - bench_started, "s")
    if args.memory_duration > 0:
        started = time.monotonic()
        MUTED = True
        tracemalloc.start()
        try:
            memory_failures = await one_pass(args, settings, args.memory_duration)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            MUTED = False
        show("memory pass job duration", args.memory_duration, "s")
        show("tracemalloc peak (memory pass)", peak / 1024 / 1024, "MiB")
        show("memory pass runtime", time.monotonic() - started, "s")
        failures += [f"memory pass: {failure}" for failure in memory_failures]
    show("bench runtime", time.monotonic() - bench_started, "s")
    return verdict(failures)


def jobs_at_once(args: argparse.Namespace) -> int:
    """How many jobs one member may run at once in this run."""
    return int(args.jobs_at_once or DEFAULT_JOBS_AT_ONCE)


def expected_peak(args: argparse.Namespace) -> int:
    """Jobs in flight at the peak if the fair queue runs every member's jobs-at-once."""
    return min(int(args.jobs), int(args.members) * jobs_at_once(args))


async def one_pass(
    args: argparse.Namespace, settings: RunnerSettings, duration: float
) -> list[str]:
    """One run on a fresh database; the checks it failed."""
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as folder:
        db = Database(Path(folder) / "bench.sqlite3")
        await db.connect()
        await seed_history(
            db, [] if args.cold else [duration] * HISTORY_JOBS, guild_id=HISTORY_GUILD_ID
        )
        limits = Limits(db)
        if args.jobs_at_once:
            # As `/mod settings concurrency:` does it (audited, range-checked).
            await ModerationService(db, limits).set_max_concurrent(
                guild_id=GUILD_ID, actor_id=MODERATOR_ID, value=args.jobs_at_once
            )
        lock = TimedLock()
        db._lock = lock  # instrument the one lock every query goes through
        lag = TimedLoopLag()
        lag.start()
        try:
            async with FakePixelDojo(job_duration=duration) as api:
                client = TimedClient("test-key", api.base_url)
                try:
                    return await drive(args, settings, duration, db, limits, lock, api, client, lag)
                finally:
                    await client.aclose()
        finally:
            lag.stop()
            await db.close()


async def drive(
    args: argparse.Namespace,
    settings: RunnerSettings,
    duration: float,
    db: Database,
    limits: Limits,
    lock: TimedLock,
    api: FakePixelDojo,
    client: TimedClient,
    lag: TimedLoopLag,
) -> list[str]:
    store = TimedStore(db)
    store.expected = args.jobs
    presenter = NullPresenter()
    presenter.expected = args.jobs
    runner = TimedRunner(
        store, client, presenter, settings, member_concurrency=member_concurrency_from(limits)
    )
    lag.runner = runner

    # Start first: `start()` refunds RESERVED jobs left over from a crash, and reads the
    # generation times of earlier jobs (the warm start's history) to shape the poll schedule.
    await runner.start()
    # The expectations' model: the runner's class, settings and learned durations as they are
    # now. It is never started; only its `_interval` is asked.
    model = JobRunner(store, client, presenter, settings)
    model.durations = copy.deepcopy(runner.durations)
    show_typical("typical generation time the runner starts with", model)
    wall_minus_mono = time.time() - time.monotonic()  # the store's clock is time.time()
    started = time.monotonic()
    jobs = []
    for i in range(args.jobs):
        member = 100 + i % args.members
        request = GenerationRequest(
            GUILD_ID, CHANNEL_ID, member, f"bench prompt {i}", "1:1", args.outputs, seed=i
        )
        job, _ = await store.create_admitted(request, admit_without_limits)
        jobs.append(job)
    show("reserve jobs in DB", time.monotonic() - started, "s")

    # Jobs beyond the peak wait in the fair queue for a job of their member to end.
    waves = math.ceil(args.jobs / expected_peak(args))
    allowed = 60 + waves * (duration + 30)
    t_submit = time.monotonic()
    for job in jobs:
        runner.submit(job)
    # Submitted: every job is accepted by PixelDojo and marked SUBMITTED.
    try:
        await asyncio.wait_for(store.all_submitted.wait(), allowed)
    except TimeoutError:
        show("submit timed out", f"{store.submitted}/{args.jobs} submitted", always=True)
    t_all_submitted = time.monotonic()
    show("submit all to PixelDojo (waves included)", t_all_submitted - t_submit, "s")
    # The peak's own jobs: all submitted and polled, none completed yet.
    t_full = runner.peak_at
    show("submit until the peak in flight", t_full - t_submit, "s")
    show(
        "submissions per second (until the peak)", runner.peak_in_flight / (t_full - t_submit), "/s"
    )

    try:
        await asyncio.wait_for(presenter.all_posted.wait(), allowed)
    except TimeoutError:
        show("delivery timed out", f"{len(presenter.posted)}/{args.jobs} posted", always=True)
    t_done = time.monotonic()
    # Posting is followed by `mark_posted`: let every job reach its final state in the DB.
    try:
        await asyncio.wait_for(asyncio.gather(*(runner.wait_finished(job.id) for job in jobs)), 30)
    except TimeoutError:
        show("final state timed out", "see 'unfinished in DB'", always=True)
    t_final = time.monotonic()
    await runner.stop()

    fakes = list(api.jobs.values())
    t_first = min(f.complete_at for f in fakes)
    last_complete = max(f.complete_at for f in fakes)
    # Event loop lag per phase.
    show_dist("loop lag while submitting", lag.between(t_submit, t_full))
    show_dist("loop lag while polling", lag.between(t_full, t_first))
    show_dist("loop lag while delivering", lag.between(t_first, t_done))
    show_dist("loop lag overall", lag.between(t_submit, t_done))
    show("jobs in flight peak", runner.peak_in_flight)

    # The ideal schedule: each job's poll times from the model's `_interval`, counted from the
    # job's `submitted_at` (where the runner counts `elapsed` from) to the first poll at or
    # after its completion at FakePixelDojo; one seeded jitter draw per interval.
    rows = await db.fetchall(
        "SELECT id, api_job_id, polls, submitted_at FROM jobs WHERE guild_id = ?", (GUILD_ID,)
    )
    api_of = {row["id"]: row["api_job_id"] for row in rows}
    rng = random.Random(args.seed)
    asked: list[float] = []  # every ideal poll time (monotonic), all jobs
    asked_first: list[float] = []  # first ideal poll of each job in flight at the peak
    ideal_counts: list[int] = []
    ideal_detect: list[float] = []
    for row in rows:
        fake = api.jobs.get(row["api_job_id"] or "")
        if fake is None or row["submitted_at"] is None:
            continue
        origin = row["submitted_at"] - wall_minus_mono
        times = [origin + t for t in ideal_poll_times(model, fake.complete_at - origin, rng)]
        asked.extend(times)
        if origin <= t_full:
            asked_first.append(times[0])
        ideal_counts.append(len(times))
        ideal_detect.append(times[-1] - fake.complete_at)

    # Polls: rate asked (ideal schedule) and sent, per job and per second.
    poll_times = [t for m, p, _, t in api.request_log if m == "GET" and "/jobs/" in p]
    polls = [f.polls for f in fakes]
    show("polls total", len(poll_times))
    show("polls total on an ideal schedule", len(asked))
    show("polls per job mean", sum(polls) / len(polls))
    show("polls per job max", max(polls))
    show(
        "polls per job on an ideal schedule mean",
        sum(ideal_counts) / len(ideal_counts) if ideal_counts else math.nan,
    )
    show("polls per job on an ideal schedule max", max(ideal_counts, default=0))
    show(
        "polls per second the schedule asks for (all in flight)",
        rate(asked, t_full, t_first),
        "/s",
    )
    show("polls per second sent (all in flight)", rate(poll_times, t_full, t_first), "/s")
    # From the last job's first poll on, every job is on its dense schedule (until it completes,
    # as long as it completes before the runner backs off). Later waves' jobs only start once
    # one of the peak's has completed.
    t_dense = max(asked_first, default=math.nan)
    show("every peak job's first poll due (after submit start)", t_dense - t_submit, "s")
    show(
        "polls per second the schedule asks for (all polling)", rate(asked, t_dense, t_first), "/s"
    )
    show("polls per second sent (all polling)", rate(poll_times, t_dense, t_first), "/s")
    show("polls per second the schedule asks for, busiest 1 s", peak_per_window(asked), "/s")
    show("polls per second sent, busiest 1 s", peak_per_window(poll_times), "/s")

    # Can this process serve what the schedule asks for while every job is polling?
    records = [r for r in runner.records if not math.isnan(r.http_sent)]
    lo, hi = (t_dense, t_first) if t_first - t_dense >= 1.0 else (t_full, t_first)
    capacity(
        runner.peak_in_flight,
        settings,
        lag,
        records,
        rate(asked, lo, hi),
        rate(poll_times, lo, hi),
        lo,
        hi,
    )

    # Polls: lateness against the due time, and where it comes from.
    in_window = [r for r in records if t_full <= r.acquired <= t_first]
    show_dist("poll HTTP request lateness vs due time", [r.http_sent - r.due for r in records])
    show_dist(
        "poll HTTP request lateness while all in flight", [r.http_sent - r.due for r in in_window]
    )
    show_dist("  due -> scheduler asks for a slot", [r.asked - r.due for r in records])
    show_dist("  waiting for a poll slot (scheduler)", [r.acquired - r.asked for r in records])
    show_dist("  slot acquired -> poll task started", [r.started - r.acquired for r in records])
    show_dist("  poll task started -> HTTP sent", [r.http_sent - r.started for r in records])

    # Polls: where a slot's and a poll task's time goes.
    before = [r.answered - r.http_sent for r in records if r.http_sent < t_first]
    after = [r.answered - r.http_sent for r in records if r.http_sent >= t_first]
    show_dist("client.get_job (HTTP) before any completion", before)
    show_dist("client.get_job (HTTP) once jobs complete", after)
    show_dist("poll slot held (acquired -> released)", [r.released - r.acquired for r in records])
    show_dist("  of which answered -> released", [r.released - r.answered for r in records])
    show(
        "poll slots busy while all in flight",
        runner.slots.busy_fraction(t_full, t_first),
    )
    show("poll slots busy while delivering", runner.slots.busy_fraction(t_first, t_done))
    show("poll slot acquisitions", runner.slots.acquisitions)
    show("poll slots released unused (job no longer polling)", runner.slots.unused_releases)
    for outcome, label in (("generating", "reschedule"), ("completed", "mark_completed + deliver")):
        tails = [r.ended - r.released for r in records if r.outcome == outcome]
        show_dist(f"poll task after the answer, {label}", tails)
    show("poll outcomes not generating/completed", sum(r.outcome == "other" for r in records))
    show("runner tasks alive max (at a poll start)", runner.max_tasks)
    show("scheduler wake-ups requested", runner.schedule_calls)

    # The database: no poll reads or writes it any more; the lock serves the transitions.
    show("store.get calls (runner's _fail, bench's final wait_finished)", len(store.get_calls))
    for name, seconds in store.times.items():
        show_dist(f"store.{name} ({len(seconds)} calls, incl. DB lock wait)", seconds)
    holds = lock.between(t_submit, t_done)
    show_dist("DB lock wait", [acquired - asked for asked, acquired, _ in holds])
    show_dist("DB lock hold", [released - acquired for _, acquired, released in holds])
    delivering = lock.between(t_first, t_done)
    show_dist("DB lock hold while delivering", [r - a for _, a, r in delivering])
    show("DB lock held fraction of run", lock.held_fraction(t_submit, t_done))
    show("DB lock held fraction while all in flight", lock.held_fraction(t_full, t_first))
    show("DB lock held fraction while delivering", lock.held_fraction(t_first, t_done))
    elapsed = t_done - t_submit
    show("DB lock acquisitions per second", len(holds) / elapsed if elapsed else math.nan, "/s")

    # The event loop thread's own CPU use (aiosqlite's worker thread not included).
    show("event loop thread CPU busy while submitting", lag.busy(t_submit, t_full))
    show("event loop thread CPU busy while all in flight", lag.busy(t_full, t_first))
    show("event loop thread CPU busy while delivering", lag.busy(t_first, t_done))
    timeline(t_submit, t_done, runner, lock, lag, asked)

    # Poll counts now live in memory until the final state: compare with PixelDojo's count.
    pixeldojo_polls = {job_id: fake.polls for job_id, fake in api.jobs.items()}
    matching = sum(pixeldojo_polls.get(row["api_job_id"]) == row["polls"] for row in rows)
    show("jobs whose DB poll count matches PixelDojo's", f"{matching}/{len(rows)}")

    # Completion -> detection -> posted.
    detect = [f.completed_seen_at - f.complete_at for f in fakes if f.completed_seen_at is not None]
    show_dist("completion to first poll seeing it", detect)
    show_dist("completion to first poll on an ideal schedule", ideal_detect)
    unfinished = await store.active()
    posted_times: list[float] = []
    for job_id, at in presenter.posted.items():
        fake = api.jobs.get(api_of.get(job_id) or "")
        if fake is not None:
            posted_times.append(at - fake.complete_at)
    show_dist("image download", client.download_times)
    show("image downloads in progress max", client.downloading_max)
    show_dist("completion to posted", posted_times)
    show("posted", f"{len(presenter.posted)}/{args.jobs}")
    show("failed", len(presenter.failures))
    show("unfinished in DB", len(unfinished))
    show("time submit-start to all posted", t_done - t_submit, "s")
    show("time all posted to all final in DB", t_final - t_done, "s")
    show("time last completion to all posted", t_done - last_complete, "s")
    show_typical("typical generation time the runner ends with", runner)

    failures = []
    peak, asked_peak = runner.peak_in_flight, expected_peak(args)
    if peak != asked_peak:
        failures.append(
            f"{peak} jobs in flight at the peak, not {asked_peak} ({args.members} members x "
            f"{jobs_at_once(args)} at once, at most {args.jobs})"
        )
    if len(presenter.posted) != args.jobs:
        failures.append(
            f"only {len(presenter.posted)} of {args.jobs} posted ({len(presenter.failures)} failed)"
        )
    if unfinished:
        failures.append(f"{len(unfinished)} jobs did not reach a final state")
    if len(rows) != args.jobs or matching != len(rows):
        failures.append(
            f"{len(rows) - matching} of {len(rows)} poll counts in SQLite differ from "
            f"PixelDojo's ({args.jobs} jobs)"
        )
    return failures


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = RunnerSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs submitted together")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds each job takes")
    parser.add_argument("--members", type=int, default=50, help="members the jobs come from")
    parser.add_argument(
        "--jobs-at-once",
        type=int,
        help=f"jobs one member may run at once, set as a moderator would (1-{MAX_CONCURRENT_MAX}; "
        f"default: the product default, {DEFAULT_JOBS_AT_ONCE})",
    )
    parser.add_argument("--outputs", type=int, default=1, choices=range(1, 5), help="images/job")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="start with no earlier jobs, so the runner has not learned a typical duration",
    )
    parser.add_argument(
        "--poll-initial",
        type=float,
        help=f"dense poll interval (default RunnerSettings(): {defaults.poll_initial_interval})",
    )
    parser.add_argument(
        "--poll-max",
        type=float,
        help=f"longest poll interval (default RunnerSettings(): {defaults.poll_max_interval})",
    )
    parser.add_argument(
        "--max-concurrent-polls",
        type=int,
        help=f"default RunnerSettings(): {defaults.max_concurrent_polls}",
    )
    parser.add_argument(
        "--max-concurrent-submits",
        type=int,
        help=f"default RunnerSettings(): {defaults.max_concurrent_submits}",
    )
    parser.add_argument(
        "--memory-duration",
        type=float,
        default=10.0,
        help="job duration of the tracemalloc pass (0 skips it); must exceed its submit time",
    )
    parser.add_argument("--seed", type=int, default=1234, help="jitter of the ideal schedule")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.members < 1:
        parser.error("--jobs and --members must be at least 1")
    if args.jobs_at_once is not None and not 1 <= args.jobs_at_once <= MAX_CONCURRENT_MAX:
        parser.error(f"a moderator can set 1 to {MAX_CONCURRENT_MAX} jobs at once per member")
    return args


if __name__ == "__main__":
    raise SystemExit(asyncio.run(run(parse())))
