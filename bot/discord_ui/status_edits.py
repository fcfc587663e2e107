"""A per-channel queue of status-message edits that keeps a busy channel under Discord's limits.

Progress ticks are fire-and-forget and coalesced (only the newest edit per message is kept),
so the job runner never waits on Discord for them; one worker per channel sends them at a
budgeted rate. Final edits (a failure notice) jump the queue, skip the budget and are awaited,
and because a channel's edits are sent one at a time, a stale tick can never land after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

EditFunc = Callable[[], Awaitable[Any]]


@dataclass
class _Pending:
    send: EditFunc
    final: bool
    done: asyncio.Future[None] | None = None


@dataclass
class _Channel:
    pending: OrderedDict[int, _Pending] = field(default_factory=OrderedDict)
    tokens: float = 0.0
    refilled_at: float = 0.0
    worker: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sending: asyncio.Future[None] | None = None
    """Done when the edit being sent now has been answered."""


class StatusEditQueue:
    """Sends edits per channel at most `rate` per second on average, `burst` at once.

    The defaults (3 at once, then one every 2 s) allow at most 5 edits in any 5 s window,
    which is Discord's per-channel budget for message routes.
    """

    def __init__(
        self, *, rate: float = 0.5, burst: int = 3, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._channels: dict[int, _Channel] = {}

    def tick(
        self, channel_id: int, message_id: int, send: EditFunc, *, urgent: bool = False
    ) -> None:
        """Queue a progress edit; it replaces any edit of that message still waiting.

        An `urgent` one (a job changing phase) goes before the other waiting progress edits
        (a queue's place-in-line updates), still behind finals and within the budget."""
        channel = self._channel(channel_id)
        previous = channel.pending.get(message_id)
        if previous is not None and previous.final:
            return  # never replace a failure notice with progress
        channel.pending[message_id] = _Pending(send, final=False)
        if urgent:
            channel.pending.move_to_end(message_id, last=False)
            for key in [key for key, item in channel.pending.items() if item.final]:
                channel.pending.move_to_end(key, last=False)
        channel.wake.set()

    async def final(self, channel_id: int, message_id: int, send: EditFunc) -> None:
        """Queue an edit that must land last and soon; wait until it was sent (its exception,
        if it failed, is raised here)."""
        channel = self._channel(channel_id)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        channel.pending[message_id] = _Pending(send, final=True, done=done)
        channel.pending.move_to_end(message_id, last=False)
        channel.wake.set()
        await done

    def forget(self, channel_id: int, message_id: int) -> None:
        """Drop a waiting progress edit (the message is about to be deleted or replaced)."""
        channel = self._channels.get(channel_id)
        if channel is not None:
            pending = channel.pending.get(message_id)
            if pending is not None and not pending.final:
                del channel.pending[message_id]

    async def settle(self, channel_id: int) -> None:
        """Wait until the edit `channel_id`'s queue is sending right now (if any) is answered."""
        channel = self._channels.get(channel_id)
        if channel is not None and channel.sending is not None:
            await asyncio.shield(channel.sending)

    def discard(self, channel_id: int) -> None:
        """Stop the queue of `channel_id` (a key that will not be used again, such as one
        job's own) once it has nothing left to send."""
        channel = self._channels.get(channel_id)
        if channel is None or channel.pending:
            return
        del self._channels[channel_id]
        if channel.worker is not None:
            channel.worker.cancel()

    async def close(self) -> None:
        workers = [c.worker for c in self._channels.values() if c.worker is not None]
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._channels.clear()

    def _channel(self, channel_id: int) -> _Channel:
        channel = self._channels.get(channel_id)
        if channel is None:
            channel = self._channels[channel_id] = _Channel(
                tokens=float(self.burst), refilled_at=self.clock()
            )
        if channel.worker is None or channel.worker.done():
            channel.worker = asyncio.create_task(
                self._work(channel_id, channel), name=f"status-edits-{channel_id}"
            )
        return channel

    def _refill(self, channel: _Channel) -> None:
        now = self.clock()
        channel.tokens = min(self.burst, channel.tokens + (now - channel.refilled_at) * self.rate)
        channel.refilled_at = now

    async def _work(self, channel_id: int, channel: _Channel) -> None:
        while True:
            if not channel.pending:
                channel.wake.clear()
                await channel.wake.wait()
                continue
            _message_id, first = next(iter(channel.pending.items()))
            if not first.final:
                self._refill(channel)
                if channel.tokens < 1:
                    # Wait for the budget, but wake at once for a final edit.
                    channel.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            channel.wake.wait(), (1 - channel.tokens) / self.rate
                        )
                    continue
                channel.tokens -= 1
            message_id, item = channel.pending.popitem(last=False)
            channel.sending = asyncio.get_running_loop().create_future()
            try:
                await item.send()
            except Exception as exc:  # a failed edit must not stop the channel's queue
                if item.done is not None:
                    item.done.set_exception(exc)
                else:
                    log.info(
                        "channel %d: edit of message %d failed (%s)", channel_id, message_id, exc
                    )
            else:
                if item.done is not None:
                    item.done.set_result(None)
            finally:
                sending, channel.sending = channel.sending, None
                if sending is not None and not sending.done():
                    sending.set_result(None)
