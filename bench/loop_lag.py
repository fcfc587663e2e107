"""Event-loop lag probe shared by the benchmarks."""

from __future__ import annotations

import asyncio
from typing import Self


class LoopLag:
    """Overshoot of a periodic timer in the running event loop.

    A timer callback re-armed after each sample (no task, no sleep loop). Like a task waking
    from `asyncio.sleep`, the sample is taken one loop iteration after the timer fires, so the
    figure is the same as a sleeping task's overshoot. Subclasses may extend `record`.
    `with LoopLag() as lag:` starts and stops it.
    """

    def __init__(self, period: float = 0.05) -> None:
        self.period = period
        self.samples: list[float] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.Handle | None = None
        self._due = 0.0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def record(self, now: float, overshoot: float) -> None:
        """Keep one sample (`now` is the loop's clock)."""
        self.samples.append(overshoot)

    def _arm(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self.period
        self._handle = self._loop.call_at(self._due, self._fired)

    def _fired(self) -> None:
        assert self._loop is not None
        self._handle = self._loop.call_soon(self._sample)

    def _sample(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self.record(now, max(0.0, now - self._due))
        self._arm()
