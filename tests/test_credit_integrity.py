"""What PixelDojo reports about money is checked before it moves a member's credits or the
server's spend: end to end, through the real discord.py client and both doubles."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.pixeldojo.models import JobStatus
from bot.storage import Database, ledger
from bot.storage.jobs import JobStore
from bot.storage.migrations import MIGRATIONS
from tests.doubles.pixeldojo import FakePixelDojo
from tests.helpers import ALICE_ID, BOB_ID, OWNER_ID, Harness, queued_job_id

UNSET = object()


class HostilePixelDojo(FakePixelDojo):
    """The PixelDojo double, but its finished jobs report `reported_cost` as their creditCost."""

    reported_cost: Any = UNSET

    async def _handle_poll(self, request: web.Request) -> web.Response:
        response = await super()._handle_poll(request)
        body = json.loads(response.body)  # type: ignore[arg-type]
        if body.get("status") != "completed" or self.reported_cost is UNSET:
            return response
        body["creditCost"] = self.reported_cost
        return web.json_response(body)  # json.dumps writes NaN as NaN, as a broken server might


@pytest.fixture
async def api() -> AsyncIterator[HostilePixelDojo]:
    async with HostilePixelDojo(job_duration=0.05) as fake:
        yield fake


def fields_of(embed: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed.get("fields", [])}


async def credits_left(harness: Harness, user_id: int = ALICE_ID) -> str:
    """The headline of the member's `/credits`."""
    reply = await harness.reply(await harness.command("credits", user_id=user_id))
    return reply.embeds[0]["description"]


@pytest.mark.parametrize(
    "reported",
    [-50, 10**20, 7, 1.5, True, "lots", math.nan],
    ids=["negative", "overflows-sqlite", "over-the-price", "fraction", "bool", "word", "nan"],
)
async def test_a_nonsense_creditcost_settles_at_the_estimate_and_still_delivers(
    harness: Harness, api: HostilePixelDojo, reported: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    api.reported_cost = reported
    job_id = await queued_job_id(harness, await harness.imagine("a red fox", num_outputs=2))
    result = await harness.result_for(job_id)
    assert len(result.attachments) == 2
    assert fields_of(result.embeds[0])["Credits"] == "2"
    assert await credits_left(harness) == "**8** of 10 credits left"
    assert "creditCost" in caplog.text or f"job {job_id}: PixelDojo reported" in caplog.text


async def test_a_cheaper_charge_is_honoured(harness: Harness, api: HostilePixelDojo) -> None:
    api.reported_cost = "1"
    job_id = await queued_job_id(harness, await harness.imagine("a red fox", num_outputs=2))
    result = await harness.result_for(job_id)
    assert fields_of(result.embeds[0])["Credits"] == "1"
    assert await credits_left(harness) == "**9** of 10 credits left"


@pytest.mark.parametrize("reported", [-1, 10**20, 2.5, True, math.nan, math.inf, "x", [3]])
def test_the_status_parser_drops_what_cannot_be_a_charge(reported: Any) -> None:
    state = JobStatus.from_payload({"status": "completed", "creditCost": reported})
    assert state.credit_cost is None
    assert JobStatus.from_payload({"status": "completed", "creditCost": 3.0}).credit_cost == 3


async def test_what_pixeldojo_charged_counts_against_the_cap_though_the_member_was_refunded(
    harness: Harness, api: HostilePixelDojo
) -> None:
    settings = await harness.command("mod settings", {"spend_cap": 2}, user_id=OWNER_ID)
    await harness.reply(settings)
    api.fault_next("404", n=10, route="download")  # PixelDojo finished and charged; no images
    job_id = await queued_job_id(harness, await harness.imagine("a red fox", num_outputs=2))
    failure = await harness.failure_for(job_id)
    assert "Your 2 credits were refunded." in failure.embeds[0]["description"]
    assert await credits_left(harness) == "**10** of 10 credits left"

    report = await harness.reply(await harness.command("mod report", user_id=OWNER_ID))
    fields = fields_of(report.embeds[0])
    assert fields["Credits spent"] == "2 (2 refunded to members)"
    assert fields["Spend cap"] == "2 of 2 (100%)"
    assert fields["Top members"] == f"1. <@{ALICE_ID}> · 2 credits · 1 job"
    refusal = await harness.reply(await harness.imagine("a blue fox", user_id=BOB_ID))
    assert (refusal.content or "").startswith(
        "Image generation is paused: this server has used its spend cap of 2 credits today."
    )


async def test_upgrade_recovers_the_charge_of_jobs_refunded_before_it(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, statements in enumerate(MIGRATIONS[:4], start=1):
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    # Job 1 was posted (charged 2); job 2 finished at PixelDojo (charged 3 of 4) but could not
    # be delivered and was refunded; job 3 failed at PixelDojo and cost nothing.
    for job_id, state, charged, completed, ledger_rows in [
        (1, "posted", 2, 10.0, [("reserve", 2)]),
        (2, "failed", 0, 10.0, [("reserve", 4), ("settle", -1), ("refund", -3)]),
        (3, "failed", 0, None, [("reserve", 1), ("refund", -1)]),
    ]:
        conn.execute(
            "INSERT INTO jobs (id, guild_id, channel_id, user_id, prompt, aspect_ratio, "
            "num_outputs, state, credits_reserved, credits_charged, created_at, completed_at) "
            "VALUES (?, 7, 8, 9, 'p', '1:1', 4, ?, 4, ?, 1.0, ?)",
            (job_id, state, charged, completed),
        )
        for kind, amount in ledger_rows:
            conn.execute(
                "INSERT INTO ledger (guild_id, user_id, job_id, kind, amount, period_start, "
                "created_at) VALUES (7, 9, ?, ?, ?, 0, 1.0)",
                (job_id, kind, amount),
            )
    conn.close()

    db = Database(path)
    await db.connect()
    try:
        jobs = [await JobStore(db).get(job_id) for job_id in (1, 2, 3)]
        assert [job.provider_charged for job in jobs if job is not None] == [2, 3, None]
        assert await db.call(lambda conn: ledger.guild_spend(conn, 7, 0.0)) == 2 + 3
        assert await db.call(lambda conn: ledger.refunded_spend(conn, 7, 0.0)) == 3
    finally:
        await db.close()
