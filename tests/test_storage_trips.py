"""Each credit transaction is one trip to the database thread, with every limit check on, and
still never over-spends when two connections (two processes) reserve at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bot.credits.periods import Period, period_start
from bot.errors import RequestRefused
from bot.generation.models import GenerationRequest, Job, JobState
from bot.storage import Database, ledger
from bot.storage.jobs import reserve
from tests.service_env import CHANNEL, GUILD, MEMBER, MOD, Clock, ServiceEnv

T = TypeVar("T")
NOW = 1_741_793_400.0  # a Wednesday afternoon (UTC)
ROLE = 77


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[ServiceEnv]:
    db = Database(tmp_path / "trips.sqlite3")
    await db.connect()
    try:
        yield ServiceEnv(db, Clock(NOW))
    finally:
        await db.close()


async def every_limit_on(env: ServiceEnv) -> None:
    """What a busy server sets: each admission check has something to read."""
    await env.settings(default_allowance=3, max_concurrent=5, cooldown_seconds=1, spend_cap=500)
    await env.settings(max_outputs=2)
    mod = env.mod
    await mod.ban(
        guild_id=GUILD, actor_id=MOD, user_id=MEMBER + 1, duration_seconds=3600, reason="spam"
    )
    await mod.allow_channel(guild_id=GUILD, actor_id=MOD, channel_id=CHANNEL)
    await mod.add_blocked_term(guild_id=GUILD, actor_id=MOD, term="dragon")
    await mod.add_blocked_term(guild_id=GUILD, actor_id=MOD, term=r"wy(rm|vern)s?", is_regex=True)
    await mod.set_role_allowance(guild_id=GUILD, actor_id=MOD, role_id=ROLE, allowance=4)
    await mod.set_user_allowance(guild_id=GUILD, actor_id=MOD, user_id=MEMBER, allowance=6)


async def trips(env: ServiceEnv, action: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """What `action` returns, and how many times it went to aiosqlite's worker thread."""
    conn = env.db.conn
    real = conn._execute
    count = 0

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal count
        count += 1
        return await real(fn, *args, **kwargs)

    conn._execute = counted  # type: ignore[method-assign]
    try:
        return await action(), count
    finally:
        del conn._execute


async def test_reservation_and_job_state_changes_take_one_trip_each(env: ServiceEnv) -> None:
    await every_limit_on(env)
    # Warm the blocklist cache the way a running bot has it.
    with pytest.raises(RequestRefused):
        await env.reserve("a DRAGON", roles=(ROLE,))

    job, count = await trips(env, lambda: env.reserve("a lighthouse", outputs=2, roles=(ROLE,)))
    assert count == 1
    assert (job.state, job.credits_reserved) == (JobState.QUEUED, 2)

    refusal, count = await trips(env, lambda: _refusal(env, "two wyverns", user=MEMBER + 2))
    assert count == 1
    assert "term this server doesn't allow" in refusal

    store = env.store
    sending, count = await trips(env, lambda: store.mark_sending(job.id))
    assert count == 1 and sending is not None and sending.state is JobState.RESERVED
    submitted, count = await trips(
        env, lambda: store.mark_submitted(job.id, api_job_id="a1", status_url="u", expires_at=None)
    )
    assert (count, submitted.state) == (1, JobState.SUBMITTED)
    completed, count = await trips(env, lambda: store.mark_completed(job.id, charged=1))
    assert (count, completed.state, completed.credits_charged) == (1, JobState.COMPLETED, 1)
    posted, count = await trips(env, lambda: store.mark_posted(job.id, result_message_id=9))
    assert (count, posted.state) == (1, JobState.POSTED)

    env.clock.advance(5)  # past the cooldown
    other = await env.reserve("a harbour", roles=(ROLE,))
    failed, count = await trips(env, lambda: store.mark_failed(other.id, "PixelDojo failed"))
    assert (count, failed.state) == (1, JobState.FAILED)
    env.clock.advance(5)
    queued = await env.reserve("a pier", roles=(ROLE,))
    cancelled, count = await trips(env, lambda: store.cancel_queued(queued.id, "cancelled"))
    assert count == 1 and cancelled is not None and cancelled.state is JobState.FAILED

    balance, count = await trips(env, lambda: env.limits.balance(GUILD, MEMBER, (ROLE,)))
    assert count == 1
    assert (balance.allowance, balance.used, balance.remaining) == (6, 1, 5)


async def _refusal(env: ServiceEnv, prompt: str, user: int) -> str:
    with pytest.raises(RequestRefused) as refused:
        await env.reserve(prompt, user=user)
    return str(refused.value)


async def test_two_connections_reserving_at_once_never_over_spend(tmp_path: Path) -> None:
    """Two bot processes on one database: only SQLite's write lock keeps them apart."""
    path = tmp_path / "shared.sqlite3"
    first, second = Database(path), Database(path)
    await first.connect()
    await second.connect()
    try:
        envs = [ServiceEnv(first, Clock(NOW)), ServiceEnv(second, Clock(NOW))]
        await envs[0].settings(default_allowance=7, max_concurrent=1000)
        results = await asyncio.gather(
            *(envs[i % 2].reserve(f"burst {i}") for i in range(200)), return_exceptions=True
        )
        admitted = [r for r in results if isinstance(r, Job)]
        refused = [r for r in results if isinstance(r, RequestRefused)]
        assert len(admitted) == 7
        assert {job.user_id for job in admitted} == {MEMBER}
        assert len(refused) == 193 and all("0 of 7 credits left" in str(r) for r in refused)
        balance = await envs[1].limits.balance(GUILD, MEMBER, ())
        assert (balance.used, balance.remaining) == (7, 0)
    finally:
        await first.close()
        await second.close()


async def test_a_burst_shares_one_commit_and_each_caller_gets_its_own_answer(
    env: ServiceEnv,
) -> None:
    """Group commit: 200 requests at once are one trip (one fsync), yet each is admitted or
    refused on its own, against the reservations before it."""
    await env.settings(default_allowance=7, max_concurrent=1000)
    results, count = await trips(
        env,
        lambda: asyncio.gather(
            *(env.reserve(f"burst {i}") for i in range(200)), return_exceptions=True
        ),
    )
    assert count <= 2
    assert sum(isinstance(r, Job) for r in results) == 7
    assert all(isinstance(r, Job | RequestRefused) for r in results)
    assert (await env.limits.balance(GUILD, MEMBER, ())).used == 7


async def test_one_failing_transaction_in_a_group_rolls_back_alone(env: ServiceEnv) -> None:
    def put(key: str, fail: bool = False) -> Callable[[Any], str]:
        def write(conn: Any) -> str:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, 'v')", (key,))
            if fail:
                raise LookupError(key)
            return key

        return write

    results = await asyncio.gather(
        env.db.run(put("a")),
        env.db.run(put("b", fail=True)),
        env.db.run(put("c")),
        return_exceptions=True,
    )
    assert results[0] == "a" and results[2] == "c"
    assert isinstance(results[1], LookupError)
    rows = await env.db.fetchall("SELECT key FROM meta WHERE key IN ('a', 'b', 'c') ORDER BY key")
    assert [row[0] for row in rows] == ["a", "c"]


async def test_a_grouped_reservation_rolled_back_frees_its_share_of_the_spend_cap(
    env: ServiceEnv,
) -> None:
    """In one group, a reservation undone after the cap was summed must not count for the
    reservations after it (the group remembers the sum between them)."""
    await env.settings(default_allowance=None, max_concurrent=10, spend_cap=10, max_outputs=4)

    def request(user: int) -> GenerationRequest:
        return GenerationRequest(GUILD, CHANNEL, user, "a lighthouse", "1:1", 4)

    def undone(conn: Any) -> None:
        reserve(conn, request(2), env.limits.admit, NOW)  # 8 of 10 with the first
        # Summed as admission sums it, after this reservation's own row.
        assert ledger.guild_spend(conn, GUILD, period_start(Period.DAY, 0, NOW)) == 8
        raise LookupError("undone after reading the cap")

    def reserving(user: int) -> Callable[[Any], Job]:
        return lambda conn: reserve(conn, request(user), env.limits.admit, NOW)[0]

    first, second, third, fourth = await asyncio.gather(
        env.db.run(reserving(1)),
        env.db.run(undone),
        env.db.run(reserving(3)),
        env.db.run(reserving(4)),
        return_exceptions=True,
    )
    assert isinstance(first, Job) and isinstance(third, Job)
    assert isinstance(second, LookupError)
    assert isinstance(fourth, RequestRefused) and "only 2 credits left" in str(fourth)
    assert await env.db.call(lambda conn: ledger.guild_spend(conn, GUILD, 0.0)) == 8


async def test_moderator_actions_and_generation_audits_take_one_trip_each(
    env: ServiceEnv,
) -> None:
    mod = env.mod
    entry, count = await trips(
        env, lambda: mod.grant_credits(guild_id=GUILD, actor_id=MOD, user_id=MEMBER, amount=5)
    )
    assert count == 1 and entry.action == "credits.grant"
    entry, count = await trips(
        env,
        lambda: mod.add_blocked_term(guild_id=GUILD, actor_id=MOD, term=r"wyrms?", is_regex=True),
    )
    assert count == 1 and entry.action == "blocklist.add"
    entry, count = await trips(
        env, lambda: mod.reset_usage(guild_id=GUILD, actor_id=MOD, user_id=MEMBER)
    )
    assert count == 1 and entry.action == "credits.reset"
    entry, count = await trips(
        env,
        lambda: mod.record_generation(
            guild_id=GUILD, user_id=MEMBER, job_id=1, outcome="posted", credits=2
        ),
    )
    assert count == 1 and entry.action == "generation.posted"
    balance = await env.limits.balance(GUILD, MEMBER, ())
    assert (balance.granted, balance.remaining) == (5, 15)


async def test_a_call_cancelled_before_its_trip_writes_nothing(env: ServiceEnv) -> None:
    def put(key: str) -> Callable[[Any], None]:
        return lambda conn: conn.execute("INSERT INTO meta (key, value) VALUES (?, 'v')", (key,))

    kept = asyncio.ensure_future(env.db.run(put("kept")))
    dropped = asyncio.ensure_future(env.db.run(put("dropped")))
    await asyncio.sleep(0)  # both are waiting for the trip; not a wait for time
    dropped.cancel()
    await kept
    with pytest.raises(asyncio.CancelledError):
        await dropped
    rows = await env.db.fetchall("SELECT key FROM meta WHERE key IN ('kept', 'dropped')")
    assert [row[0] for row in rows] == ["kept"]


async def test_a_read_never_overtakes_a_write_asked_for_before_it(env: ServiceEnv) -> None:
    """A moderator bans, then lists the bans before the ban's reply: the list has the ban."""
    ban = asyncio.ensure_future(
        env.mod.ban(guild_id=GUILD, actor_id=MOD, user_id=MEMBER, reason="spam")
    )
    listed = asyncio.ensure_future(env.mod.bans(GUILD))
    fetched = asyncio.ensure_future(env.db.fetchall("SELECT user_id FROM bans"))
    await ban
    assert [b.user_id for b in await listed] == [MEMBER]
    assert [row[0] for row in await fetched] == [MEMBER]
