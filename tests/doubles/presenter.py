"""A `JobPresenter` for runner tests without Discord: records what a member would be shown."""

from __future__ import annotations

import asyncio

from bot.generation.models import Job
from bot.generation.runner import DeliveryError, Phase, QueuePosition, ResultImage


class RecordingPresenter:
    """Records what a member would have been shown and signals when a job ends."""

    def __init__(self) -> None:
        self.statuses: list[tuple[int, Phase]] = []
        self.failures: dict[int, str] = {}
        self.results: dict[int, list[ResultImage]] = {}
        self.posted_before: dict[int, int] = {}
        self.refuse_posts: DeliveryError | None = None
        self._ended: dict[int, asyncio.Event] = {}
        self.generating = asyncio.Event()

    def ended(self, job_id: int) -> asyncio.Event:
        return self._ended.setdefault(job_id, asyncio.Event())

    async def show_status(
        self, job: Job, phase: Phase, elapsed: float, queue: QueuePosition | None = None
    ) -> None:
        self.statuses.append((job.id, phase))
        if phase is Phase.GENERATING:
            self.generating.set()

    async def show_failure(self, job: Job, reason: str) -> None:
        self.failures[job.id] = reason
        self.ended(job.id).set()

    async def post_result(self, job: Job, images: list[ResultImage], elapsed: float) -> int:
        if self.refuse_posts is not None:
            raise self.refuse_posts
        self.results[job.id] = images
        self.ended(job.id).set()
        return 10_000 + job.id

    async def find_posted_result(self, job: Job) -> int | None:
        return self.posted_before.get(job.id)

    def forget(self, job_id: int) -> None:
        """Nothing is kept per job."""
