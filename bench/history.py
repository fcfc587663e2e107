"""Give a benchmark's database the history of a bot that has been running."""

from __future__ import annotations

import time

from bot.storage import Database


async def seed_history(db: Database, history: list[float], *, guild_id: int) -> None:
    """Earlier finished jobs taking `history` seconds each, in `guild_id` (keep it apart from
    the measured guild so no figure counts them), so the runner's `start()` learns a typical
    generation time from them."""
    now = time.time()
    async with db.transaction() as conn:
        for seconds in history:
            await conn.execute(
                """
                INSERT INTO jobs (guild_id, channel_id, user_id, prompt, aspect_ratio,
                                  num_outputs, state, credits_reserved, created_at,
                                  submitted_at, completed_at, finished_at)
                VALUES (?, 1, 1, 'history', '1:1', 1, 'posted', 1, ?, ?, ?, ?)
                """,
                (guild_id, now - 600, now - 600, now - 600 + seconds, now - 590),
            )
