"""When each shard may IDENTIFY: Discord allows `max_concurrency` per 5 s, one per bucket.

A shard's bucket is `shard_id % max_concurrency`, and each bucket may identify once per 5 s
(Discord's gateway docs, "Max Concurrency"). discord.py's own hook sleeps 5 s before every shard
after the first whatever the bot's `max_concurrency`, so a bot Discord lets start 16 shards at
once would start them one every 5 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

IDENTIFY_WINDOW = 5.0


class IdentifyPacing:
    """Spaces IDENTIFYs per bucket; one instance per bot process."""

    def __init__(
        self,
        max_concurrency: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.max_concurrency = max(1, max_concurrency)
        self.clock = clock
        self.sleep = sleep
        self._last: dict[int, float] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def wait_turn(self, shard_id: int | None) -> None:
        """Return once `shard_id` may identify, and count it as identifying now."""
        bucket = (shard_id or 0) % self.max_concurrency
        async with self._locks.setdefault(bucket, asyncio.Lock()):  # a bucket: one at a time
            last = self._last.get(bucket)
            if last is not None:
                delay = last + IDENTIFY_WINDOW - self.clock()
                if delay > 0:
                    await self.sleep(delay)
            self._last[bucket] = self.clock()
