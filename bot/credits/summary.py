"""A member's credits as `/credits` and `/mod credits check` show them."""

from __future__ import annotations

from collections.abc import Sequence

from bot.credits.admission import Balance, Limits
from bot.generation.models import Job
from bot.storage.jobs import JobStore

RECENT_JOBS = 5
"""How many of the member's latest jobs the summary lists."""


class CreditSummaries:
    """Reads a member's balance this period and their latest jobs."""

    def __init__(self, limits: Limits, store: JobStore) -> None:
        self.limits = limits
        self.store = store

    async def for_member(
        self, guild_id: int, user_id: int, role_ids: Sequence[int]
    ) -> tuple[Balance, list[Job]]:
        """The member's balance (their roles decide the allowance) and recent jobs."""
        balance = await self.limits.balance(guild_id, user_id, role_ids)
        recent = await self.store.recent_for_user(guild_id, user_id, limit=RECENT_JOBS)
        return balance, recent
