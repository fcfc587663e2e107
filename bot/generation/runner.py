"""The job runner: starts queued jobs fairly, polls them all from one scheduler, and delivers
their results.

Admitted jobs wait in SQLite (QUEUED) and in a `FairQueue`; one dispatcher task, woken by
events (a job queued, a slot freed, a cancel, the end of a rate-limit pause), starts the next
one whenever its member is below their guild's concurrency and a submit slot is free.

One scheduler task keeps a heap of due times rather than one sleeping task per job, so a
thousand jobs in flight cost a heap entry each. Every transition is written to SQLite
before it is acted on, so `start()` after a crash resumes each unfinished job where it was.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
import statistics
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from bot import pixeldojo
from bot.generation import edit_input
from bot.generation.models import CREDITS_PER_OUTPUT, Job, JobState
from bot.generation.queue import FairQueue, Slot, seconds_until_start
from bot.pixeldojo.schema import CapabilityCache
from bot.pixeldojo.transport import RequestTiming
from bot.pixeldojo.webhooks import doubt, result_origins
from bot.storage import TRANSIENT_ERRORS
from bot.storage.jobs import JobStore

log = logging.getLogger(__name__)

T = TypeVar("T")

STORE_RETRY_BASE = 0.5
STORE_RETRY_CAP = 30.0
"""Backoff (seconds) between attempts at a state write the database refused."""

WEBHOOK_HINTS_PER_JOB = 3
"""Callbacks that may each make a job be checked at once; later ones wait for the schedule.
(A callback whose report is delivered as it stands costs no request and is not counted.)"""

RATE_LIMIT_PAUSE = 5.0
"""Seconds dispatch pauses after a 429 that gave no hint of when to try again."""
RATE_LIMIT_PAUSE_CAP = 120.0
"""The longest pause a 429's hint may impose (the hint is the server's and not trusted)."""
LATE_CHECK_RETRIES = 5
"""Status checks at or after a job's deadline that may fail (an error, no answer) before it
times out anyway: only PixelDojo saying "still running" times a job out at once."""
_START_RATE_WINDOW = 20
"""How many recent job starts the queue's ETA measures the current throughput over."""

Member = tuple[int, int]
"""(guild id, user id): whose turn it is, in the fair queue."""


class Phase(StrEnum):
    """What a status message says a job is doing."""

    QUEUED = "queued"
    GENERATING = "generating"
    DELIVERING = "delivering"


@dataclass(frozen=True)
class ResultImage:
    """A downloaded result, ready to upload."""

    data: bytes
    content_type: str | None
    index: int


class DeliveryError(Exception):
    """Posting a result failed. `permanent` means retrying cannot help (no access, no channel)."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class QueuePosition:
    """Where a waiting job is in the queue, for its status message."""

    position: int
    """1 for the next job to start. (Only a change of position is shown, so the message
    carries no total that every newcomer would make stale.)"""
    eta: float | None
    """Unix time the result is expected, or None until durations have been learned."""


class JobPresenter(Protocol):
    """How the runner shows jobs to people. The Discord implementation lives outside `bot.runner`
    so the runner never depends on discord.py."""

    async def show_status(
        self, job: Job, phase: Phase, elapsed: float, queue: QueuePosition | None = None
    ) -> None:
        """Update the job's status message (implementations throttle these). `queue` is given
        for a waiting job whenever its position changes."""

    async def show_failure(self, job: Job, reason: str) -> None:
        """Tell the member the job failed and that its credits came back."""

    async def post_result(self, job: Job, images: list[ResultImage], elapsed: float) -> int:
        """Post the images; return the result message id. Raise `DeliveryError` on failure."""

    async def find_posted_result(self, job: Job) -> int | None:
        """After a crash: the id of a result message already posted for this job, if any."""

    def forget(self, job_id: int) -> None:
        """The job is over for this process (ended, or moved on by another process): drop
        anything kept for it and show nothing more for it."""


POLL_QUANTILES = (0.7, 0.9, 0.97, 0.995)
"""Where a job's polls go, as quantiles of the learned generation times: the first where most
jobs are done, the rest spread over the tail, then backing off. Fewer polls cost more delay only
for the slowest jobs: about 1.3 polls a job in all."""
TIGHT_POLL_QUANTILES = (0.9, 0.99)
"""The same when the request budget is tight: each poll spent on a job still running is a
submission not sent, so later and fewer (about 1.1 a job)."""
TIGHT_BUDGET = 0.8
"""Request-budget pressure (sends in the window plus waiting requests, over capacity) above
which the tight schedule is used."""
EXPLORE_QUANTILE, EXPLORE_SHARE = 0.3, 0.1
"""A tenth of jobs get their first poll earlier: a job found done then teaches the estimate
that generation got faster, which polls placed only at or after the usual time never could."""


class DurationEstimate:
    """The distribution of recent generation times, which the poll schedule is shaped around.

    Each sample is when the poll that found the job finished was sent (its answer less the time
    it waited for the request budget), so queueing for the budget never makes jobs look slow.
    """

    def __init__(self, window: int = 50, minimum_samples: int = 3) -> None:
        self.window = window
        self.minimum_samples = minimum_samples
        self._recent: deque[float] = deque(maxlen=window)

    def add(self, seconds: float) -> None:
        if seconds > 0 and math.isfinite(seconds):
            self._recent.append(seconds)

    @property
    def learned(self) -> bool:
        """Whether enough jobs finished to trust the distribution."""
        return len(self._recent) >= self.minimum_samples

    def quantile(self, q: float) -> float | None:
        """The `q` quantile (0..1, interpolated), or None until enough jobs finished."""
        if not self.learned:
            return None
        ordered = sorted(self._recent)
        position = min(max(q, 0.0), 1.0) * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    def done_share(self, elapsed: float) -> float:
        """The share of recent jobs that had finished `elapsed` seconds in (0.5 if unknown)."""
        if not self.learned:
            return 0.5
        return sum(seconds <= elapsed for seconds in self._recent) / len(self._recent)

    def typical(self) -> float | None:
        """The median, or None until enough jobs finished to trust one."""
        if not self.learned:
            return None
        return statistics.median(self._recent)


@dataclass(frozen=True)
class RunnerSettings:
    poll_initial_interval: float = 0.5
    poll_max_interval: float = 5.0
    job_timeout: float = 300.0
    max_concurrent_submits: int = 4
    max_concurrent_polls: int = 8
    delivery_attempts: int = 3
    poll_timeout: float = 30.0
    """The longest one status check may take (the client's retries included): a request that
    never answers gives its poll slot back after this, or at the job's deadline if sooner."""
    shutdown_grace: float = 8.0
    """How long `stop()` waits for submissions already sent to PixelDojo to be answered and
    recorded (under Docker's default 10 s between SIGTERM and SIGKILL)."""
    webhooks: bool = False
    """PixelDojo calls back when a job ends (`poll_now`): polls are only a sparse safety net."""
    webhook_fallback_poll: float = 30.0
    """With webhooks: the least time before a job's first safety-net poll; later ones back off."""


class JobRunner:
    """Drives every job from QUEUED to POSTED or FAILED."""

    def __init__(
        self,
        store: JobStore,
        client: pixeldojo.PixelDojoClient,
        presenter: JobPresenter,
        settings: RunnerSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        on_finished: Callable[[Job], Awaitable[None]] | None = None,
        capabilities: CapabilityCache | None = None,
        webhook_url_for: Callable[[Job], str | None] | None = None,
        member_concurrency: Callable[[int], Awaitable[int]] | None = None,
    ) -> None:
        """`member_concurrency(guild_id)` is how many jobs one member of that guild may have
        running at once (read at each dispatch, so a moderator's change applies at once);
        None: no per-member limit, only `max_concurrent_submits`."""
        self.store = store
        self.capabilities = capabilities
        self.on_finished = on_finished
        self.client = client
        self.presenter = presenter
        self.settings = settings or RunnerSettings()
        self.clock = clock
        self._sleep = sleep
        self._due: list[tuple[float, int]] = []
        # The due time of each job's one live heap entry; `poll_now` moves it, leaving the old
        # entry stale (skipped), so a job is never polled twice at once.
        self._next_due: dict[int, float] = {}
        # Webhook hints for jobs whose poll or submission was in flight: owed a poll as soon
        # as they are next scheduled.
        self._hinted: set[int] = set()
        self._hints: dict[int, int] = {}
        # The report of a callback that came while a poll or the submission was in flight:
        # weighed when that answer has been acted on and the job is next scheduled.
        self._reports: dict[int, pixeldojo.JobStatus] = {}
        self._late_errors: dict[int, int] = {}
        """Per job: status checks at or after its deadline that got no answer (an error)."""
        self.webhook_url_for = webhook_url_for
        # Jobs being polled, kept in memory so a poll costs no database round trip.
        self._polling: dict[int, Job] = {}
        self._polls: dict[int, int] = {}
        self._wake = asyncio.Event()
        self.member_concurrency = member_concurrency
        self._queue: FairQueue[Member, Job] = FairQueue()
        self._running: Counter[Member] = Counter()
        self._counted: dict[int, Member] = {}
        self._limits: dict[int, int] = {}
        self._sending = 0
        self._paused_until = 0.0
        self._starts: deque[float] = deque(maxlen=_START_RATE_WINDOW)
        self._shown: dict[int, int] = {}
        self._dispatch_wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._poll_slots = asyncio.Semaphore(self.settings.max_concurrent_polls)
        self._tasks: set[asyncio.Task[None]] = set()
        # Submission tasks by job id; `_committed` ones may have reached PixelDojo (or are
        # failing the job), so `stop()` lets them finish instead of cancelling them.
        self._submits: dict[int, tuple[Job, asyncio.Task[None]]] = {}
        self._committed: set[int] = set()
        self._accepting = True
        self._stopping = False
        self._stop_lock = asyncio.Lock()
        self._scheduler: asyncio.Task[None] | None = None
        self._finished: dict[int, asyncio.Future[Job]] = {}
        self.durations = DurationEstimate()

    @property
    def accepting(self) -> bool:
        """Whether new jobs are taken: False from `stop()` until the next `start()`."""
        return self._accepting

    @property
    def running(self) -> bool:
        """Whether the poll scheduler and the dispatcher are alive: False before `start()`,
        after `stop()`, and if either loop died (the health check reports it)."""
        return all(t is not None and not t.done() for t in (self._scheduler, self._dispatcher))

    @property
    def in_flight(self) -> int:
        """Jobs the scheduler is tracking (waiting for their next poll or being polled)."""
        return len(self._polling)

    @property
    def queued(self) -> int:
        """Jobs waiting for their turn."""
        return len(self._queue)

    async def start(self) -> None:
        """Resume every unfinished job (queued ones in their original order), then start the
        poll scheduler and the dispatcher."""
        if self._scheduler is not None:
            return
        self._accepting = True
        self._scheduler = asyncio.create_task(self._schedule_loop(), name="job-scheduler")
        for seconds in await self.store.recent_durations(self.durations.window):
            self.durations.add(seconds)
        for job in await self.store.active():
            log.info("job %d: resuming in state %s", job.id, job.state)
            self._resume(job)
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="job-dispatcher")

    async def stop(self) -> None:
        """Stop taking new work, wait up to `shutdown_grace` for submissions already sent to
        PixelDojo to be recorded, then stop polling. Unfinished jobs stay in the database and
        resume on the next `start()`."""
        async with self._stop_lock:
            self._accepting = False
            # Polls and deliveries resume from the database: cancel them now. Each task is
            # cancelled once only, so none is interrupted again while rolling back.
            cancelled: set[asyncio.Task[None]] = set()
            submitting = {task for _, task in self._submits.values()}
            for task in (self._scheduler, self._dispatcher, *self._tasks):
                if task is not None and task not in submitting:
                    task.cancel()
                    cancelled.add(task)
            self._stopping = True
            try:
                await self._drain_submissions(cancelled)
            finally:
                self._stopping = False
            tasks = [t for t in (self._scheduler, self._dispatcher, *self._tasks) if t]
            for task in tasks:
                if task not in cancelled:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._scheduler = None
            self._dispatcher = None
        self._tasks.clear()
        # Queued jobs stay QUEUED in the database: the next `start()` queues them again.
        self._queue = FairQueue()
        self._running.clear()
        self._counted.clear()
        self._shown.clear()
        self._sending = 0
        self._paused_until = 0.0
        self._submits.clear()
        self._committed.clear()
        self._due.clear()
        self._next_due.clear()
        self._hinted.clear()
        self._hints.clear()
        self._reports.clear()
        self._polling.clear()

    async def wait_finished(self, job_id: int) -> Job:
        """Wait until this runner takes the job to POSTED or FAILED; returns the final record."""
        job = await self.store.get(job_id)
        if job is not None and job.state.is_final:
            return job
        return await asyncio.shield(self._finished_future(job_id))

    def _finished_future(self, job_id: int) -> asyncio.Future[Job]:
        future = self._finished.get(job_id)
        if future is None:
            future = self._finished[job_id] = asyncio.get_running_loop().create_future()
        return future

    async def _finish(self, job: Job) -> None:
        """A job reached POSTED or FAILED: run the hook (the audit trail), then wake waiters."""
        self._release(job.id)
        self.presenter.forget(job.id)
        if self.on_finished is not None:
            try:
                await self.on_finished(job)
            except Exception:
                log.exception("job %d: the on_finished hook failed", job.id)
        future = self._finished.pop(job.id, None)
        if future is not None and not future.done():
            future.set_result(job)

    async def _drain_submissions(self, cancelled: set[asyncio.Task[None]]) -> None:
        """The part of stopping that must not lose a charge.

        A submission in flight is not cancelled: PixelDojo may accept (and charge for) it, and
        only its answer says which PixelDojo job to poll, so it gets `shutdown_grace` to be
        answered and recorded. A job whose turn came but whose request was not sent yet
        stays queued (in the database) for the next start.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_grace
        unsent = [
            (job, task)
            for job_id, (job, task) in self._submits.items()
            if job_id not in self._committed
        ]
        for _, task in unsent:
            task.cancel()
            cancelled.add(task)
        await asyncio.gather(*(task for _, task in unsent), return_exceptions=True)
        if self._submits:
            log.info(
                "stopping: waiting up to %.0f s for %d submission(s) to PixelDojo",
                self.settings.shutdown_grace,
                len(self._submits),
            )
        while pending := [task for _, task in self._submits.values() if not task.done()]:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait(pending, timeout=remaining)
        for job_id, (_, task) in self._submits.items():
            if not task.done():
                log.error(
                    "job %d: stopping before its submission was answered and recorded; if "
                    "PixelDojo accepted it, it charged for a job the next start refunds",
                    job_id,
                )
                task.cancel()
                cancelled.add(task)

    def submit(self, job: Job) -> None:
        """Queue a freshly admitted (QUEUED) job; the dispatcher starts it in its turn.

        Once stopping, the job is left queued in the database: the next `start()` sends it.
        """
        if not self._accepting:
            log.info("job %d: queued while the runner is stopped; sent after the restart", job.id)
            return
        if job.id not in self._queue and job.id not in self._submits:
            self._queue.push((job.guild_id, job.user_id), job.id, job)
        self._dispatch_wake.set()

    async def cancel(self, job_id: int, reason: str) -> Job | None:
        """Cancel a job still waiting for its turn: out of the queue and refunded at once, in
        one transaction. None if it has already started (PixelDojo cannot cancel) or ended."""
        job = await self.store.cancel_queued(job_id, reason)
        if job is None:
            return None
        log.info("job %d: cancelled while queued", job_id)
        self._queue.remove(job_id)
        self._shown.pop(job_id, None)
        self._dispatch_wake.set()
        await self._finish(job)
        return job

    def _track_submission(
        self, job: Job, coro: Coroutine[Any, Any, None], *, committed: bool = False
    ) -> None:
        task = self._spawn(coro, f"submit-{job.id}")
        self._submits[job.id] = (job, task)
        if committed:
            self._committed.add(job.id)

        def forget(_: object) -> None:
            if self._submits.get(job.id, (None, None))[1] is task:
                del self._submits[job.id]
                self._committed.discard(job.id)

        task.add_done_callback(forget)

    def _resume(self, job: Job) -> None:
        if job.state is JobState.QUEUED:
            # `active()` is oldest first, so the queue is rebuilt in its original order. (A job
            # whose message id was never recorded still runs: its outcome gets a new message.)
            self._queue.push((job.guild_id, job.user_id), job.id, job)
        elif job.state is JobState.RESERVED:
            # A crash between reserving and PixelDojo's reply: whether PixelDojo got the request
            # is unknowable (there is no lookup by our id), so refund rather than risk a double.
            self._spawn(
                self._fail(
                    job, "The bot restarted before PixelDojo confirmed this job. Please try again."
                ),
                f"fail-{job.id}",
            )
        elif job.state is JobState.SUBMITTED:
            self._count(job)
            self._polls[job.id] = job.polls
            self._schedule(job, delay=0)
        elif job.state is JobState.COMPLETED:
            self._count(job)
            self._spawn(self._deliver(job), f"deliver-{job.id}")

    def _count(self, job: Job) -> None:
        """The job counts against its member's concurrency until it ends (`_release`)."""
        member = (job.guild_id, job.user_id)
        if self._counted.setdefault(job.id, member) is member:
            self._running[member] += 1

    def _release(self, job_id: int) -> None:
        member = self._counted.pop(job_id, None)
        if member is not None:
            self._running[member] -= 1
            if self._running[member] <= 0:
                del self._running[member]
            self._dispatch_wake.set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Every path handles its own errors; this is the last resort, so nothing is silent.
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    # Webhooks ---------------------------------------------------------------------------

    def _webhook_field(self, job: Job) -> dict[str, str]:
        url = self.webhook_url_for(job) if self.webhook_url_for is not None else None
        return {"webhook_url": url} if url else {}

    def poll_now(self, job_id: int, report: pixeldojo.JobStatus | None = None) -> bool:
        """PixelDojo called back: the job ended. `report` is the callback's body read as a job
        status (None: not that shape).

        The call is authenticated (the job's token), so a report `webhooks.doubt` finds
        nothing wrong with is the result: delivered at once, without a status request. Any
        other call is a hint to check the job now instead of when it is due; repeated hints
        before that check answers cost nothing more, and at most `WEBHOOK_HINTS_PER_JOB` move
        a job's check. While a poll or the submission is in flight, the call waits for its
        answer (which wins if it ends the job). Returns whether the runner is waiting on the
        job (submitting or polling it).
        """
        job = self._polling.get(job_id)
        if job is None and job_id not in self._submits:
            return False
        due = self._next_due.get(job_id)
        if job is None or due is None:
            # A poll, the delivery or the submission is in flight and may have been answered
            # before the job ended: the next scheduling takes the report or polls at once.
            if report is not None:
                self._reports.setdefault(job_id, report)
            if job_id not in self._hinted and self._hint(job_id):
                self._hinted.add(job_id)
            return True
        if report is not None and self._trusted(job, report):
            del self._next_due[job_id]  # its heap entry is now stale: never polled as well
            self._spawn(self._take_report(job, report), f"callback-{job_id}")
            return True
        if due <= asyncio.get_running_loop().time():
            return True  # a check is owed already
        if self._hint(job_id):
            self._schedule(job, delay=0)
        return True

    def _hint(self, job_id: int) -> bool:
        """Count a callback that costs a status check; False past `WEBHOOK_HINTS_PER_JOB`
        (a flood, from a leaked URL, must not spend the budget: polling still runs)."""
        if self._hints.get(job_id, 0) >= WEBHOOK_HINTS_PER_JOB:
            return False
        self._hints[job_id] = self._hints.get(job_id, 0) + 1
        return True

    def _trusted(self, job: Job, report: pixeldojo.JobStatus) -> bool:
        """Whether a callback's report can be delivered as it stands (`webhooks.doubt`)."""
        base = getattr(self.client, "base_url", None)
        why = doubt(
            report,
            api_job_id=job.api_job_id,
            num_outputs=job.num_outputs,
            price=job.num_outputs * CREDITS_PER_OUTPUT,
            result_origins=result_origins(base if isinstance(base, str) else None),
        )
        if why is not None:
            log.info("job %d: the callback is checked with a status request: %s", job.id, why)
        return why is None

    async def _take_report(self, job: Job, report: pixeldojo.JobStatus) -> None:
        """Act on a trusted callback's report as on a poll's answer that found the job done."""
        now = self.clock()
        log.info("job %d: delivering the result PixelDojo called back with", job.id)
        try:
            elapsed = now - (job.submitted_at or job.created_at)
            await self._after_poll(job, report, elapsed, now, final=False)
        except Exception:
            log.exception("job %d: unexpected error after its callback", job.id)
            if job.id in self._polling:
                self._schedule(job, self.settings.poll_max_interval)

    def next_poll_in(self, job_id: int) -> float | None:
        """Seconds until the job's next status check; None unless one is waiting to be made."""
        due = self._next_due.get(job_id)
        return None if due is None else due - asyncio.get_running_loop().time()

    async def _store(self, job: Job, what: str, write: Callable[[], Awaitable[T]]) -> T:
        """Run a store call until the database takes it, backing off (capped, jittered).

        A job PixelDojo accepted must not be dropped because SQLite was locked by another
        process or the disk was full for a while: the caller keeps the job in memory and
        carries on once the write succeeds.
        """
        attempt = 0
        while True:
            try:
                return await write()
            except TRANSIENT_ERRORS as exc:
                attempt += 1
                delay = min(STORE_RETRY_CAP, STORE_RETRY_BASE * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)
                log.error(
                    "job %d: the database refused to %s (%s); retrying in %.1f s (attempt %d)",
                    job.id,
                    what,
                    exc,
                    delay,
                    attempt,
                )
                await self._sleep(delay)

    # Dispatch and submission ------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        """Start every job whose turn it is, then sleep until something changes: a job queued
        or cancelled, a slot freed, or the end of a rate-limit pause. Never polls the DB."""
        loop = asyncio.get_running_loop()
        while True:
            self._dispatch_wake.clear()
            timeout: float | None = None
            try:
                if self._queue:
                    paused_for = self._paused_until - loop.time()
                    if paused_for > 0:
                        timeout = paused_for
                    else:
                        await self._dispatch_ready()
                await self._publish_positions()
            except Exception:
                # The queue must not stop for good: try again at the next event, or soon.
                log.exception("the dispatcher failed; trying again")
                timeout = self.settings.poll_max_interval
            if self._dispatch_wake.is_set():
                continue  # something changed while this round awaited
            try:
                await asyncio.wait_for(self._dispatch_wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _dispatch_ready(self) -> None:
        for guild_id in {guild_id for guild_id, _ in self._queue.members()}:
            self._limits[guild_id] = await self._member_limit(guild_id)

        def ready(member: Member) -> bool:
            limit = self._limits.get(member[0])
            return limit is not None and self._running[member] < limit

        while self._accepting and self._sending < self.settings.max_concurrent_submits:
            slot = self._queue.pop(ready)
            if slot is None:
                return
            self._start(slot)

    async def _member_limit(self, guild_id: int) -> int:
        if self.member_concurrency is None:
            return self.settings.max_concurrent_submits
        try:
            return max(1, await self.member_concurrency(guild_id))
        except Exception:
            # The database is busy or failing: the last figure known, else one at a time.
            log.exception("guild %d: could not read the concurrency limit", guild_id)
            return self._limits.get(guild_id, 1)

    def _start(self, slot: Slot[Member, Job]) -> None:
        job = slot.item
        self._sending += 1
        self._count(job)
        self._shown.pop(job.id, None)
        self._track_submission(job, self._submit(job))

    async def _publish_positions(self) -> None:
        """Show each waiting job whose place changed where it is now, and when to expect it."""
        order = self._queue.order()
        if not order:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        typical = self.durations.typical()
        paused_for = max(0.0, self._paused_until - now)
        starts = [t for t in self._starts if t > now - 600]
        rate = (len(starts) - 1) / (now - starts[0]) if len(starts) >= 2 else None
        ahead: Counter[Member] = Counter()
        for position, slot in enumerate(order, start=1):
            own_ahead = ahead[slot.member]
            ahead[slot.member] += 1
            if self._shown.get(slot.job_id) == position:
                continue
            self._shown[slot.job_id] = position
            eta = None
            if typical is not None:
                start_in = paused_for + seconds_until_start(
                    position=position,
                    ahead_of_own=own_ahead,
                    own_running=self._running[slot.member],
                    own_limit=self._limits.get(slot.member[0], 1),
                    typical=typical,
                    starts_per_second=rate,
                )
                eta = self.clock() + start_in + typical
            where = QueuePosition(position=position, eta=eta)
            try:
                await self.presenter.show_status(slot.item, Phase.QUEUED, 0.0, queue=where)
            except Exception:
                log.exception("job %d: could not show its place in the queue", slot.job_id)

    async def _submit(self, job: Job) -> None:
        """Send a job whose turn came. RESERVED is written just before the request: a crash
        from then on refunds it on restart (whether PixelDojo got it is unknowable)."""
        try:
            # An edit sends its input image in the field the model's schema names.
            extra = await edit_input.submission_extra(self.capabilities, job.input_image_url)
            extra = {**(extra or {}), **self._webhook_field(job)}
            # From here on, stopping waits for this task: PixelDojo may charge for it.
            self._committed.add(job.id)
            sending = await self._store(
                job, "start the job", lambda: self.store.mark_sending(job.id)
            )
            if sending is None:
                log.info("job %d: cancelled before its turn came", job.id)
                self._release(job.id)
                return
            job = sending
            submitted = await self.client.submit(
                prompt=job.prompt,
                aspect_ratio=job.aspect_ratio,
                num_outputs=job.num_outputs,
                seed=job.seed,
                extra=extra or None,
            )
        except pixeldojo.RateLimited as exc:
            # A 429 created no job: back to the front of the queue, never a failure.
            await self._requeue(job, exc.retry_after)
            return
        except pixeldojo.PixelDojoError as exc:
            self._committed.add(job.id)  # the failure is shown with its own reason
            log.warning("job %d: PixelDojo refused the submission: %s", job.id, exc.message)
            await self._fail(job, exc.message)
            return
        except Exception:
            self._committed.add(job.id)
            log.exception("job %d: unexpected error while submitting", job.id)
            await self._fail(job, "Something went wrong while submitting this job.")
            return
        finally:
            self._sending -= 1
            self._dispatch_wake.set()
        self._starts.append(asyncio.get_running_loop().time())
        # Logged before it is recorded: if the database never takes it, the log still says
        # which PixelDojo job was paid for.
        log.info("job %d: submitted as PixelDojo job %s", job.id, submitted.job_id)
        expires = submitted.expires_at.timestamp() if submitted.expires_at else None
        job = await self._store(
            job,
            f"record PixelDojo job {submitted.job_id}",
            lambda: self.store.mark_submitted(
                job.id,
                api_job_id=submitted.job_id,
                status_url=submitted.status_url,
                expires_at=expires,
                charged=submitted.credit_cost,
            ),
        )
        # The status moves at once, even when the first poll is a few seconds away.
        await self.presenter.show_status(job, Phase.GENERATING, 0.0)
        self._schedule(job, delay=self._interval(0.0, first=True))

    async def _requeue(self, job: Job, retry_after: float | None) -> None:
        """PixelDojo answered 429: pause dispatch until its hint and put the job back first."""
        pause = RATE_LIMIT_PAUSE if retry_after is None else retry_after
        pause = min(RATE_LIMIT_PAUSE_CAP, max(0.0, pause))
        loop = asyncio.get_running_loop()
        self._paused_until = max(self._paused_until, loop.time() + pause)
        log.info("job %d: PixelDojo is rate limiting; queued again for %.1f s", job.id, pause)
        queued = await self._store(job, "queue the job again", lambda: self.store.requeue(job.id))
        self._committed.discard(job.id)
        self._release(job.id)
        if queued is not None and self._accepting:
            self._queue.push_front((job.guild_id, job.user_id), job.id, queued)

    # Polling ----------------------------------------------------------------------------

    def _interval(self, elapsed: float, *, first: bool = False) -> float:
        """Seconds until a job `elapsed` seconds into generation is polled again.

        Once a few jobs have finished, polls aim at quantiles of the learned generation times
        (`POLL_QUANTILES`, or `TIGHT_POLL_QUANTILES` while the request budget is tight), at
        least `poll_initial_interval` apart, then back off towards `poll_max_interval` past
        the slowest. Until then: growing from twice `poll_initial_interval`. A little jitter
        keeps jobs submitted in the same burst from being polled in lockstep.
        """
        s = self.settings
        if s.webhooks:
            return self._safety_net_interval(elapsed)
        gap = s.poll_initial_interval
        jitter = random.uniform(0, 0.2 * gap)
        if not self.durations.learned:
            # Nothing learned yet: about 2 x gap, growing by a third each poll.
            return min(s.poll_max_interval, max(2 * gap, elapsed / 3)) + jitter
        if first:
            jitter = 0.0  # aimed exactly: the estimate learns from when these polls were sent
        quantiles = TIGHT_POLL_QUANTILES if self._budget_tight() else POLL_QUANTILES
        if first and random.random() < EXPLORE_SHARE:
            quantiles = (EXPLORE_QUANTILE, *quantiles)
        for q in quantiles:
            target = self.durations.quantile(q) or 0.0
            if target >= elapsed + gap:
                return target - elapsed + jitter
        slowest = self.durations.quantile(1.0) or 0.0
        late = max(0.0, elapsed - slowest)
        return min(s.poll_max_interval, gap * (1 + late / max(slowest, gap))) + jitter

    def _budget_tight(self) -> bool:
        budget = getattr(self.client, "budget", None)
        return budget is not None and budget.pressure() > TIGHT_BUDGET

    def _poll_priority(self, elapsed: float) -> float:
        """For the request budget: polls of jobs likely done first (lower goes first)."""
        return 1.0 - self.durations.done_share(elapsed)

    def _safety_net_interval(self, elapsed: float) -> float:
        """With webhooks on, polls only catch a missed callback: the first well after the
        typical duration (three times it, at least `webhook_fallback_poll`), then each about
        twice as far into the job as the last, at most 4 × that first interval apart."""
        first = max(self.settings.webhook_fallback_poll, 3 * (self.durations.typical() or 0.0))
        base = first - elapsed if elapsed < first else min(4 * first, max(first, elapsed))
        return max(self.settings.poll_initial_interval, base) * random.uniform(0.9, 1.1)

    def _schedule(self, job: Job, delay: float) -> None:
        loop = asyncio.get_running_loop()
        report = self._reports.pop(job.id, None)
        if report is not None and self._trusted(job, report):
            # Called back while the submission or a poll was in flight, whose answer did not
            # end the job: the callback's report is the result.
            self._hinted.discard(job.id)
            self._polling[job.id] = job
            self._next_due.pop(job.id, None)
            self._spawn(self._take_report(job, report), f"callback-{job.id}")
            return
        if job.id in self._hinted:
            self._hinted.discard(job.id)
            delay = 0
        self._polling[job.id] = job
        due = loop.time() + delay
        self._next_due[job.id] = due
        heapq.heappush(self._due, (due, job.id))
        self._wake.set()

    def _poll_again(self, job: Job, delay: float) -> None:
        """Schedule the next check, never later than the job's deadline: the check due then is
        the job-timeout watchdog, so a job times out on time however sparse its polls were."""
        self._schedule(job, min(delay, max(0.0, self._deadline(job) - self.clock())))

    def _stop_polling(self, job_id: int) -> int:
        """Forget a job that left SUBMITTED; returns how many times it was polled."""
        self._polling.pop(job_id, None)
        self._next_due.pop(job_id, None)
        self._hinted.discard(job_id)
        self._hints.pop(job_id, None)
        self._reports.pop(job_id, None)
        self._late_errors.pop(job_id, None)
        return self._polls.pop(job_id, 0)

    async def _schedule_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            now = loop.time()
            while self._due and self._due[0][0] <= now:
                # Take a poll slot before starting the poll: due jobs are polled in due order
                # and at most `max_concurrent_polls` poll tasks exist at once.
                await self._poll_slots.acquire()
                due, job_id = heapq.heappop(self._due)
                job = self._polling.get(job_id)
                if job is None or self._next_due.get(job_id) != due:
                    self._poll_slots.release()  # finished, or moved by `poll_now`
                    continue
                del self._next_due[job_id]
                self._spawn(self._poll(job), f"poll-{job_id}")
                now = loop.time()  # waiting for a slot took time: more polls may be due
            timeout = self._due[0][0] - now if self._due else None
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    def _deadline(self, job: Job) -> float:
        """When the job is given up on, unless the check made then finds it finished."""
        deadline = (job.submitted_at or job.created_at) + self.settings.job_timeout
        if job.api_expires_at is not None:
            deadline = min(deadline, job.api_expires_at)
        return deadline

    async def _poll(self, job: Job) -> None:
        """One status check; the caller acquired a poll slot, released once PixelDojo answers
        or the check's time is up, so a request that never answers cannot keep the slot.

        The check's time (`poll_timeout`) is the request's own: it does not run while the
        request waits for the request budget (above capacity that wait can be most of a
        minute, and a check abandoned there would only queue again behind the others).

        Every check asks PixelDojo, even past the deadline: a job that finished while the bot
        was down is delivered, not refunded. A check sent at or after the deadline is the last
        one: unless it finds the job finished or failed, the job times out. Earlier checks may
        only take until the deadline, where the last one follows.
        """
        started = self.clock()
        elapsed = started - (job.submitted_at or job.created_at)
        remaining = self._deadline(job) - started
        final = remaining <= 0
        limit = self.settings.poll_timeout
        if not final:
            limit = min(limit, remaining)
        answered_at: float | None = None
        timing = RequestTiming()
        try:
            try:
                async with asyncio.timeout(limit) as bound:
                    timing.bound = bound  # paused while the request waits for the budget
                    # A 429 comes back at once, to be rescheduled at its hint.
                    state: pixeldojo.JobStatus | Exception = await self.client.get_job(
                        job.api_job_id or "",
                        priority=self._poll_priority(elapsed),
                        raise_rate_limited=True,
                        timing=timing,
                    )
            except TimeoutError as exc:
                log.warning("job %d: no answer to a status check within %.1f s", job.id, limit)
                state = exc
            except Exception as exc:
                state = exc
            # When PixelDojo said so, not when the database got to it, and less the wait for
            # the request budget: the learned durations must not grow with the bot's load.
            answered_at = self.clock() - timing.waited
            # Sent at or after the deadline (it waited for the budget): the last check.
            final = final or timing.waited >= remaining
            self._polls[job.id] = self._polls.get(job.id, 0) + 1
        finally:
            self._poll_slots.release()

        try:
            await self._after_poll(job, state, elapsed, answered_at, final=final)
        except Exception:
            # The job must not silently stop being polled: it is still SUBMITTED if nothing
            # was written (the transaction rolled back), so try again later.
            log.exception("job %d: unexpected error after polling", job.id)
            if job.id in self._polling:
                self._schedule(job, self.settings.poll_max_interval)

    async def _after_poll(
        self,
        job: Job,
        state: pixeldojo.JobStatus | Exception,
        elapsed: float,
        answered_at: float | None,
        *,
        final: bool,
    ) -> None:
        """Act on what a poll found: give up, retry later, fail, deliver, or poll again."""
        if isinstance(state, (pixeldojo.AuthenticationError, pixeldojo.NotFound)):
            log.warning("job %d: polling refused: %s", job.id, state.message)
            await self._fail(job, f"PixelDojo can no longer report on this job. {state.message}")
        elif isinstance(state, Exception) or state.is_running:
            if isinstance(state, pixeldojo.RateLimited):
                # Not a failure: the window is spent; ask again when the budget says so.
                log.info("job %d: poll rate-limited, asks again later", job.id)
            elif isinstance(state, pixeldojo.PixelDojoError):
                # The client already retried; keep the job and try again later.
                log.warning("job %d: poll failed, will retry: %s", job.id, state.message)
            elif isinstance(state, Exception) and not isinstance(state, TimeoutError):
                log.error("job %d: unexpected error while polling", job.id, exc_info=state)
            late_errors = self._late_errors.get(job.id, 0) + 1 if final else 0
            if final and isinstance(state, Exception) and late_errors <= LATE_CHECK_RETRIES:
                # Past the deadline only an answer of "still running" proves a timeout: a job
                # that finished while the bot was down must not be refunded for one 503.
                self._late_errors[job.id] = late_errors
                delay = min(self.settings.poll_max_interval * 2 ** (late_errors - 1), 60.0)
                hint = state.retry_after if isinstance(state, pixeldojo.RateLimited) else None
                if hint is not None and 0 <= hint <= self.settings.job_timeout:
                    delay = max(delay, hint)  # a 429's hint: sooner would only be refused
                log.info("job %d: late check %d failed, asks again", job.id, late_errors)
                self._schedule(job, delay)
            elif final:
                minutes = max(1, round(self.settings.job_timeout / 60))
                log.warning("job %d: gave up after %.0f s without a result", job.id, elapsed)
                why = " (its status could not be checked)" if isinstance(state, Exception) else ""
                await self._fail(
                    job, f"PixelDojo did not finish this job within {minutes} min.{why}"
                )
            elif isinstance(state, pixeldojo.RateLimited):
                hint = state.retry_after
                if hint is None or not 0 <= hint <= self.settings.job_timeout:
                    hint = self.settings.poll_max_interval
                # Jittered, so the polls it held back do not all come back at once.
                self._poll_again(job, hint + random.uniform(0, self.settings.poll_initial_interval))
            elif isinstance(state, Exception):
                self._poll_again(job, self.settings.poll_max_interval)
            else:
                await self.presenter.show_status(job, Phase.GENERATING, elapsed)
                self._poll_again(job, self._interval(elapsed))
        elif state.is_failed:
            reason = state.error or "the job failed"
            log.info("job %d: PixelDojo reports failure: %s", job.id, reason)
            await self._fail(job, f"PixelDojo could not generate this: {reason}")
        elif state.is_completed:
            if not state.image_urls:
                log.warning("job %d: completed without any image URL", job.id)
                await self._fail(job, "PixelDojo finished but returned no images.")
                return
            polls = self._polls.get(job.id, 0)
            completed = await self._store(
                job,
                "record the completion",
                lambda: self.store.mark_completed(
                    job.id, charged=state.credit_cost, polls=polls, at=answered_at
                ),
            )
            self._stop_polling(job.id)
            if completed is None:
                # Another process (a rolling deploy) ended it first: it delivers or refunds.
                await self._left_alone(job, "completed on PixelDojo; not delivered here")
                return
            job = completed
            if job.completed_at is not None and job.submitted_at is not None:
                # The same figure a restart reads back from the database.
                self.durations.add(job.completed_at - job.submitted_at)
            log.info("job %d: completed after %.1f s and %d polls", job.id, elapsed, polls)
            await self._deliver(job, state.image_urls)

    # Delivery ---------------------------------------------------------------------------

    async def _deliver(self, job: Job, image_urls: tuple[str, ...] | None = None) -> None:
        try:
            posted = await self.presenter.find_posted_result(job) if image_urls is None else None
            if posted is not None:
                log.info("job %d: result was already posted as message %d", job.id, posted)
                await self._mark_posted(job, posted)
                return
            if image_urls is None:
                # Resumed after a crash: ask PixelDojo for the URLs again.
                state = await self.client.get_job(job.api_job_id or "")
                image_urls = state.image_urls
            await self.presenter.show_status(job, Phase.DELIVERING, self._elapsed(job))
            images = await self._download(job, image_urls)
            message_id = await self._post(job, images)
        except pixeldojo.PixelDojoError as exc:
            log.warning("job %d: could not fetch the images: %s", job.id, exc.message)
            await self._fail(job, f"The images could not be saved. {exc.message}")
            return
        except DeliveryError as exc:
            log.warning("job %d: could not post the result: %s", job.id, exc)
            await self._fail(job, f"The result could not be posted here: {exc}")
            return
        except Exception:
            log.exception("job %d: unexpected error while delivering", job.id)
            await self._fail(job, "Something went wrong while saving the images.")
            return
        await self._mark_posted(job, message_id)
        log.info("job %d: posted as message %d", job.id, message_id)

    async def _mark_posted(self, job: Job, message_id: int) -> None:
        # Posted already: keep trying to record it rather than ever posting it again.
        posted = await self._store(
            job,
            "record the posted result",
            lambda: self.store.mark_posted(job.id, result_message_id=message_id),
        )
        if posted is None:
            # Never turn a refunded job into a posted one: the ledger and the row must agree.
            await self._left_alone(job, f"result posted as message {message_id}, not recorded")
            return
        await self._finish(posted)

    async def _left_alone(self, job: Job, what: str) -> None:
        """The job left the state this process expected (another process moved it): say so,
        and let waiters go, without announcing, refunding or auditing anything here."""
        current = await self._store(job, "read the job", lambda: self.store.get(job.id))
        state = current.state.value if current is not None else "gone"
        log.warning("job %d: %s: it is already %s", job.id, what, state)
        self._release(job.id)
        self.presenter.forget(job.id)
        future = self._finished.pop(job.id, None)
        if future is not None and not future.done():
            future.set_result(current or job)

    async def _download(self, job: Job, urls: tuple[str, ...]) -> list[ResultImage]:
        # Only the images the member asked (and paid) for, however many PixelDojo listed.
        results = await self.client.download_results(urls, limit=job.num_outputs)
        return [
            ResultImage(data=data, content_type=content_type, index=index)
            for index, (data, content_type) in enumerate(results)
        ]

    async def _post(self, job: Job, images: list[ResultImage]) -> int:
        attempts = self.settings.delivery_attempts
        for attempt in range(1, attempts + 1):
            try:
                return await self.presenter.post_result(job, images, self._elapsed(job))
            except DeliveryError as exc:
                if exc.permanent or attempt == attempts:
                    raise
                log.warning("job %d: posting failed (attempt %d): %s", job.id, attempt, exc)
                await self._sleep(min(2.0**attempt, 10.0))
        raise AssertionError("unreachable")

    def _elapsed(self, job: Job) -> float:
        end = job.completed_at or self.clock()
        return max(0.0, end - (job.submitted_at or job.created_at))

    async def _fail(self, job: Job, reason: str) -> None:
        polls = self._polls.get(job.id)
        current = await self._store(job, "read the job", lambda: self.store.get(job.id))
        if current is None or current.state.is_final:
            self._stop_polling(job.id)
            self._release(job.id)
            return  # already ended (and shown); never refund or announce twice
        job = await self._store(
            job, "record the failure", lambda: self.store.mark_failed(job.id, reason, polls=polls)
        )
        self._stop_polling(job.id)
        try:
            await self.presenter.show_failure(job, reason)
        except Exception:
            log.exception("job %d: could not show the failure to the member", job.id)
        await self._finish(job)
