"""`/mod report` shows the PixelDojo account's balance only in the operator's own guild: the
account pays for every guild the bot serves, and its balance is the operator's business."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.config import ConfigError, Settings, load_settings
from tests.doubles.discord_double import DiscordDouble
from tests.doubles.pixeldojo import FakePixelDojo
from tests.helpers import (
    GUILD_ID,
    OTHER_GUILD_CHANNEL_ID,
    OTHER_GUILD_ID,
    OTHER_GUILD_OWNER_ID,
    OWNER_ID,
    Harness,
    queued_job_id,
    settings_for,
)

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.abcdefghijklmnopqrstuvwxyz012345"


@pytest.fixture
def settings(double: DiscordDouble, api: FakePixelDojo, tmp_path: Path) -> Settings:
    return replace(settings_for(double, api, tmp_path / "bot.sqlite3"), operator_guild_id=GUILD_ID)


async def report_fields(harness: Harness, user_id: int, **where: Any) -> dict[str, str]:
    reply = await harness.reply(await harness.command("mod report", user_id=user_id, **where))
    assert reply.ephemeral
    return {f["name"]: f["value"] for f in reply.embeds[0].get("fields", [])}


async def test_only_the_operators_guild_sees_the_account_balance(harness: Harness) -> None:
    assert (await report_fields(harness, OWNER_ID))["PixelDojo account"] == "unknown"
    await harness.result_for(await queued_job_id(harness, await harness.imagine()))
    remaining = harness.bot.services.pixeldojo.last_credits_remaining
    assert remaining == harness.api.credits

    operator = await report_fields(harness, OWNER_ID)
    assert operator["PixelDojo account"] == f"{remaining:,} credits left"
    elsewhere = await report_fields(
        harness, OTHER_GUILD_OWNER_ID, guild_id=OTHER_GUILD_ID, channel_id=OTHER_GUILD_CHANNEL_ID
    )
    assert "PixelDojo account" not in elsewhere
    assert not any(f"{remaining:,}" in value for value in elsewhere.values())


def test_operator_guild_setting() -> None:
    base = {"DISCORD_TOKEN": TOKEN, "PIXELDOJO_API_KEY": "key"}
    assert load_settings(base).operator_guild_id is None  # no guild sees the balance
    assert load_settings({**base, "OPERATOR_GUILD_ID": str(GUILD_ID)}).operator_guild_id == (
        GUILD_ID
    )
    with pytest.raises(ConfigError, match="OPERATOR_GUILD_ID must be a Discord ID"):
        load_settings({**base, "OPERATOR_GUILD_ID": "my server"})
