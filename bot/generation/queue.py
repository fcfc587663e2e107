"""The fair queue: one FIFO per member, served round-robin, so one member's ten prompts never
starve another member's one. Pure bookkeeping (no I/O, no clock): the runner decides when a
job may start and this decides which one.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(frozen=True)
class Slot(Generic[K, T]):
    """One waiting job: whose it is, its id and what the caller keeps with it."""

    member: K
    job_id: int
    item: T


class FairQueue(Generic[K, T]):
    """Waiting jobs by member. Members take turns in a rotation: the member just served goes to
    the back, a member who joins goes to the back, and each turn serves a member's oldest job."""

    def __init__(self) -> None:
        self._lanes: OrderedDict[K, deque[Slot[K, T]]] = OrderedDict()
        self._member_of: dict[int, K] = {}

    def __len__(self) -> int:
        return len(self._member_of)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._member_of

    def __iter__(self) -> Iterator[Slot[K, T]]:
        """Every waiting job in the order `order` projects."""
        return iter(self.order())

    def push(self, member: K, job_id: int, item: T) -> None:
        """Add a job at the back of its member's FIFO."""
        if job_id in self._member_of:
            raise ValueError(f"job {job_id} is already queued")
        self._lanes.setdefault(member, deque()).append(Slot(member, job_id, item))
        self._member_of[job_id] = member

    def push_front(self, member: K, job_id: int, item: T) -> None:
        """Put a job back at the front of its member's FIFO and the member at the front of the
        rotation: its turn came, and did not happen (PixelDojo was rate limiting)."""
        if job_id in self._member_of:
            raise ValueError(f"job {job_id} is already queued")
        self._lanes.setdefault(member, deque()).appendleft(Slot(member, job_id, item))
        self._lanes.move_to_end(member, last=False)
        self._member_of[job_id] = member

    def remove(self, job_id: int) -> Slot[K, T] | None:
        """Take a job out wherever it is (a cancel); None if it is not waiting."""
        member = self._member_of.pop(job_id, None)
        if member is None:
            return None
        lane = self._lanes[member]
        slot = next(s for s in lane if s.job_id == job_id)
        lane.remove(slot)
        if not lane:
            del self._lanes[member]
        return slot

    def pop(self, ready: Callable[[K], bool] = lambda member: True) -> Slot[K, T] | None:
        """The next job to start: the oldest job of the first member in the rotation for whom
        `ready(member)` holds (e.g. below their concurrency). None when no such member waits."""
        for member, lane in self._lanes.items():
            if ready(member):
                slot = lane.popleft()
                del self._member_of[slot.job_id]
                if lane:
                    self._lanes.move_to_end(member)
                else:
                    del self._lanes[member]
                return slot
        return None

    def order(self) -> list[Slot[K, T]]:
        """Every waiting job in the order it would start if every member were ready: round `r`
        serves each member's `r`-th job, members in rotation order."""
        lanes = list(self._lanes.values())
        depth = max((len(lane) for lane in lanes), default=0)
        return [lane[r] for r in range(depth) for lane in lanes if r < len(lane)]

    def members(self) -> list[K]:
        """Members with a job waiting, in rotation order."""
        return list(self._lanes)

    def lane(self, member: K) -> list[Slot[K, T]]:
        """A member's waiting jobs, oldest first."""
        return list(self._lanes.get(member, ()))


def seconds_until_start(
    *,
    position: int,
    ahead_of_own: int,
    own_running: int,
    own_limit: int,
    typical: float,
    starts_per_second: float | None,
) -> float:
    """When a waiting job should start, in seconds from now (an estimate).

    Two things hold it back: the member's own concurrency (the `ahead_of_own` of their jobs
    queued before it and the `own_running` ones must make room, `own_limit` at a time, each
    taking about `typical` seconds), and everyone ahead of it (`position` - 1 jobs) at the rate
    jobs are currently starting. The later of the two is the estimate.
    """
    own_limit = max(1, own_limit)
    must_finish = max(0, own_running + ahead_of_own + 1 - own_limit)
    own = math.ceil(must_finish / own_limit) * typical
    overall = (position - 1) / starts_per_second if starts_per_second else 0.0
    return max(own, overall)
