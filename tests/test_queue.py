"""The fair queue on its own: one FIFO per member, members served round-robin."""

from __future__ import annotations

import pytest

from bot.generation.queue import FairQueue, seconds_until_start


def drain(queue: FairQueue[str, None], ready=lambda member: True) -> list[int]:
    served = []
    while (slot := queue.pop(ready)) is not None:
        served.append(slot.job_id)
    return served


def test_one_members_burst_does_not_starve_another() -> None:
    queue: FairQueue[str, None] = FairQueue()
    for job_id in range(1, 11):
        queue.push("alice", job_id, None)
    queue.push("bob", 11, None)
    assert [s.job_id for s in queue.order()][:3] == [1, 11, 2]
    assert drain(queue) == [1, 11, 2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_round_robin_across_three_members_keeps_each_fifo() -> None:
    queue: FairQueue[str, None] = FairQueue()
    for job_id, member in enumerate("aaabbc", start=1):
        queue.push(member, job_id, None)
    assert drain(queue) == [1, 4, 6, 2, 5, 3]


def test_a_member_who_may_not_start_is_skipped_not_blocking() -> None:
    queue: FairQueue[str, None] = FairQueue()
    queue.push("alice", 1, None)
    queue.push("bob", 2, None)
    slot = queue.pop(lambda member: member != "alice")
    assert slot is not None and (slot.member, slot.job_id) == ("bob", 2)
    assert queue.pop(lambda member: member != "alice") is None
    assert len(queue) == 1 and 1 in queue


def test_served_member_goes_to_the_back_and_newcomers_join_the_back() -> None:
    queue: FairQueue[str, None] = FairQueue()
    queue.push("alice", 1, None)
    queue.push("alice", 2, None)
    assert queue.pop().job_id == 1  # type: ignore[union-attr]
    queue.push("bob", 3, None)
    queue.push("carol", 4, None)
    assert drain(queue) == [2, 3, 4]


def test_push_front_puts_a_rate_limited_job_back_first() -> None:
    queue: FairQueue[str, None] = FairQueue()
    for job_id, member in enumerate("aab", start=1):
        queue.push(member, job_id, None)
    first = queue.pop()
    assert first is not None and first.job_id == 1
    queue.push_front(first.member, first.job_id, None)  # PixelDojo answered 429
    assert drain(queue) == [1, 3, 2]


def test_remove_cancels_from_anywhere() -> None:
    queue: FairQueue[str, None] = FairQueue()
    for job_id, member in enumerate("aab", start=1):
        queue.push(member, job_id, None)
    removed = queue.remove(2)
    assert removed is not None and removed.member == "a"
    assert queue.remove(2) is None
    assert queue.remove(3) is not None and queue.members() == ["a"]
    assert drain(queue) == [1]
    assert len(queue) == 0 and queue.order() == []


def test_a_job_is_queued_once() -> None:
    queue: FairQueue[str, None] = FairQueue()
    queue.push("a", 1, None)
    with pytest.raises(ValueError, match="already queued"):
        queue.push("b", 1, None)
    with pytest.raises(ValueError, match="already queued"):
        queue.push_front("a", 1, None)


def test_start_estimate_waits_for_the_members_own_jobs() -> None:
    # Two running, limit two, 8 s jobs: the 1st waiting starts when one finishes (8 s), the
    # 3rd after two rounds (16 s).
    estimate = dict(position=1, own_running=2, own_limit=2, typical=8.0, starts_per_second=None)
    assert seconds_until_start(ahead_of_own=0, **estimate) == 8.0
    assert seconds_until_start(ahead_of_own=1, **estimate) == 8.0
    assert seconds_until_start(ahead_of_own=2, **estimate) == 16.0
    # Nothing of theirs running: only the others ahead, at the current pace.
    assert (
        seconds_until_start(
            position=11,
            ahead_of_own=0,
            own_running=0,
            own_limit=2,
            typical=8.0,
            starts_per_second=0.5,
        )
        == 20.0
    )
    assert (
        seconds_until_start(
            position=1,
            ahead_of_own=0,
            own_running=0,
            own_limit=2,
            typical=8.0,
            starts_per_second=0.5,
        )
        == 0.0
    )
