"""What PixelDojo reports about money is checked before it moves a member's credits or the
server's spend: end to end, through the real discord.py client and both doubles."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bot.fake_pixeldojo import FakePixelDojo
from bot.pixeldojo import JobState
from tests.conftest import ALICE_ID, Harness, queued_job_id

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
    state = JobState.from_payload({"status": "completed", "creditCost": reported})
    assert state.credit_cost is None
    assert JobState.from_payload({"status": "completed", "creditCost": 3.0}).credit_cost == 3
