"""The status edit queue: coalesced, budgeted, never blocking, finals land last."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.discord_ui.status_edits import StatusEditQueue


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str, float]] = []
        self.changed = asyncio.Event()

    def edit(self, message_id: int, text: str, *, fail: Exception | None = None):
        async def send() -> None:
            if fail is not None:
                raise fail
            self.sent.append((message_id, text, time.monotonic()))
            self.changed.set()

        return send

    async def wait_for(self, predicate, timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def test_ticks_for_one_message_are_coalesced() -> None:
    queue, rec = StatusEditQueue(rate=2, burst=1), Recorder()
    for second in range(10):
        queue.tick(1, 100, rec.edit(100, f"{second} s"))
    await rec.wait_for(lambda: rec.sent and rec.sent[-1][1] == "9 s")
    assert len(rec.sent) <= 2  # the first, maybe, and the newest: never the eight between
    await queue.close()


class ManualClock:
    """The queue's clock: it moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_channel_never_exceeds_its_budget() -> None:
    clock = ManualClock()
    queue, rec = StatusEditQueue(rate=16, burst=3, clock=clock), Recorder()
    for message_id in range(12):
        queue.tick(7, message_id, rec.edit(message_id, "tick"))
    # (seconds the clock moves on, edits sent by then): the burst at once, then 16 a second,
    # and a quiet spell never saves up more than the burst. (Sixteenths add up exactly.)
    steps = [(0, 3), (1 / 16, 4), (1 / 16, 5), (1.0, 8), (2 / 16, 10), (1.0, 12)]
    for advance, expected in steps:
        clock.now += advance
        await rec.wait_for(lambda: len(rec.sent) >= expected)  # noqa: B023
        # The budget alone holds the rest back: without the clock moving, nothing more goes.
        assert len(rec.sent) == expected, (clock.now, len(rec.sent))
    await queue.close()


async def test_channels_do_not_share_a_budget() -> None:
    queue, rec = StatusEditQueue(rate=0.01, burst=1), Recorder()
    queue.tick(1, 10, rec.edit(10, "a"))
    queue.tick(2, 20, rec.edit(20, "b"))
    await rec.wait_for(lambda: len(rec.sent) == 2)
    await queue.close()


async def test_final_edit_skips_the_budget_and_is_never_overwritten() -> None:
    queue, rec = StatusEditQueue(rate=0.01, burst=1), Recorder()
    queue.tick(1, 10, rec.edit(10, "first"))
    await rec.wait_for(lambda: len(rec.sent) == 1)
    queue.tick(1, 11, rec.edit(11, "starved"))  # no budget left for this one for 100 s
    await queue.final(1, 11, rec.edit(11, "failed"))
    queue.tick(1, 11, rec.edit(11, "stale tick"))
    assert [text for _, text, _ in rec.sent] == ["first", "failed"]
    await queue.close()


async def test_final_edit_raises_what_the_edit_raised() -> None:
    queue = StatusEditQueue()
    with pytest.raises(LookupError):
        await queue.final(1, 10, Recorder().edit(10, "x", fail=LookupError("gone")))
    await queue.close()


async def test_tick_never_waits_for_discord() -> None:
    queue = StatusEditQueue()
    slow = asyncio.Event()

    async def hang() -> None:
        await slow.wait()

    queue.tick(1, 10, hang)  # returns at once even though the edit never finishes
    slow.set()
    await queue.close()


async def test_an_urgent_tick_goes_before_waiting_ticks() -> None:
    # A job that starts says so before the queue's many place-in-line edits are sent.
    queue, rec = StatusEditQueue(rate=50, burst=1), Recorder()
    for message_id in (1, 2, 3):
        queue.tick(5, message_id, rec.edit(message_id, "2nd in line"))
    queue.tick(5, 4, rec.edit(4, "generating"), urgent=True)
    await rec.wait_for(lambda: len(rec.sent) == 4)
    assert [message_id for message_id, _, _ in rec.sent] == [4, 1, 2, 3]
    await queue.close()


async def test_an_urgent_tick_never_goes_before_a_final() -> None:
    queue, rec = StatusEditQueue(rate=0.01, burst=1), Recorder()
    queue.tick(5, 1, rec.edit(1, "first"))
    await rec.wait_for(lambda: len(rec.sent) == 1)  # the budget is spent now
    final = asyncio.ensure_future(queue.final(5, 9, rec.edit(9, "failed")))
    await rec.wait_for(lambda: len(rec.sent) == 2)  # a final skips the budget
    await final
    queue.tick(5, 2, rec.edit(2, "2nd in line"))
    queue.tick(5, 3, rec.edit(3, "generating"), urgent=True)
    await queue.final(5, 8, rec.edit(8, "failed too"))
    assert [message_id for message_id, _, _ in rec.sent] == [1, 9, 8]
    await queue.close()
