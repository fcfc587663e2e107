"""The health signal: a heartbeat file the running bot rewrites, and the check that reads it.

Every `HEARTBEAT_INTERVAL` seconds the bot writes one small JSON file (next to the database by
default): when it wrote it, how often it writes, when it was last healthy (every gateway shard
connected, the job loops running) and, if it is not, why. `python -m bot --check` reads it for
a supervisor (Docker's HEALTHCHECK, a monitoring probe): a bot that stopped writing (dead, or
its event loop stuck) or that has been unhealthy for longer than `STALE_AFTER_BEATS` beats
fails the check. A file needs no port, no Discord and no secret to read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeGuard

log = logging.getLogger(__name__)

STALE_AFTER_BEATS = 3
"""Beats a check tolerates without a fresh (or a healthy) one: a reconnecting shard or one
slow write does not fail it, a bot down for three beats does."""
_MAX_INTERVAL = 24 * 3600.0


@dataclass(frozen=True)
class Beat:
    """One heartbeat, as written to the file."""

    at: float
    """Unix time of this beat."""
    interval: float
    """Seconds until the next one."""
    healthy_at: float | None
    """Unix time of the last beat without a problem (None: none yet since start)."""
    problem: str | None
    """Why the bot is not serving members right now (None: it is)."""
    pid: int


class Heartbeat:
    """Writes beats to `path` (atomically: a check never reads half a file)."""

    def __init__(
        self, path: Path, interval: float, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.interval = interval
        self.clock = clock
        self.on_beat: Callable[[Beat], None] | None = None
        """Called after every beat written (tests wait on it)."""
        self._healthy_at: float | None = None
        self._failing: str | None = None

    def beat(self, problem: str | None) -> Beat:
        """Write a beat saying `problem` (None: healthy). A failed write is logged (once per
        cause) and not raised: the file then goes stale, which is the signal."""
        now = self.clock()
        if problem is None:
            self._healthy_at = now
        beat = Beat(now, self.interval, self._healthy_at, problem, os.getpid())
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(self.path.name + ".tmp")
            partial.write_text(json.dumps(asdict(beat)))
            os.replace(partial, self.path)
        except OSError as exc:
            cause = f"{type(exc).__name__}: {exc.strerror or exc}"
            if cause != self._failing:
                log.warning("cannot write the heartbeat file %s (%s)", self.path, cause)
            self._failing = cause
            return beat
        self._failing = None
        if self.on_beat is not None:
            self.on_beat(beat)
        return beat

    def remove(self) -> None:
        """Delete the file (on shutdown: a stopped bot is not a stuck one)."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove the heartbeat file %s (%s)", self.path, exc)


async def keep_beating(
    heartbeat: Heartbeat,
    problem: Callable[[], str | None],
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Beat with what `problem()` says, every `heartbeat.interval` seconds, until cancelled."""
    while True:
        heartbeat.beat(problem())
        await sleep(heartbeat.interval)


@dataclass(frozen=True)
class Verdict:
    """What `check` found: whether the bot is healthy, and one line saying so or why not."""

    healthy: bool
    line: str


def check(path: Path, *, now: float) -> Verdict:
    """Read the heartbeat at `path` as of unix time `now`."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return Verdict(False, f"no heartbeat file at {path}: the bot is not running")
    except OSError as exc:
        return Verdict(False, f"cannot read the heartbeat file {path}: {exc.strerror or exc}")
    beat = _parse(raw)
    if beat is None:
        return Verdict(False, f"{path} is not a heartbeat file the bot wrote")
    limit = STALE_AFTER_BEATS * beat.interval
    age = now - beat.at
    if not -limit <= age <= limit:
        return Verdict(
            False,
            f"last heartbeat {_seconds(age)} ago (expected every {_seconds(beat.interval)}): "
            "the bot is stopped or stuck",
        )
    if beat.problem is not None:
        if beat.healthy_at is None:
            return Verdict(False, f"not healthy since it started: {beat.problem}")
        if now - beat.healthy_at > limit:
            return Verdict(
                False, f"unhealthy for {_seconds(now - beat.healthy_at)}: {beat.problem}"
            )
        return Verdict(True, f"ok, but for {_seconds(now - beat.healthy_at)}: {beat.problem}")
    return Verdict(True, f"ok: last heartbeat {_seconds(age)} ago")


def _parse(raw: str) -> Beat | None:
    """The beat in `raw`, or None unless every field has the type and range the bot writes."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    at, interval, healthy_at = data.get("at"), data.get("interval"), data.get("healthy_at")
    problem, pid = data.get("problem"), data.get("pid")
    if not (_finite(at) and _finite(interval) and 0 < interval <= _MAX_INTERVAL):
        return None
    if not (healthy_at is None or _finite(healthy_at)):
        return None
    if not (problem is None or isinstance(problem, str)) or type(pid) is not int:
        return None
    if problem is not None:
        problem = " ".join(problem.split())[:200]  # one line, whatever was written
    return Beat(at, interval, healthy_at, problem, pid)


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _seconds(value: float) -> str:
    value = abs(value)
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"
