"""Fixtures: the PixelDojo double, the Discord double, and the real bot between them.

What tests import (ids, settings, `Harness`, `BotProcess`) lives in tests/helpers.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.app import PixelDojoBot
from bot.config import Settings
from tests.doubles.discord_double import DiscordDouble, run_bot_against
from tests.doubles.pixeldojo import FakePixelDojo
from tests.helpers import BotProcess, Harness, make_guilds, settings_for


@pytest.fixture
async def api() -> AsyncIterator[FakePixelDojo]:
    async with FakePixelDojo(job_duration=0.05) as fake:
        yield fake


@pytest.fixture
async def double() -> AsyncIterator[DiscordDouble]:
    async with DiscordDouble(guilds=make_guilds()) as fake:
        yield fake


@pytest.fixture
def settings(double: DiscordDouble, api: FakePixelDojo, tmp_path: Path) -> Settings:
    return settings_for(double, api, tmp_path / "bot.sqlite3")


@pytest.fixture
async def harness(
    double: DiscordDouble, api: FakePixelDojo, settings: Settings
) -> AsyncIterator[Harness]:
    bot = PixelDojoBot(settings, guild_ready_timeout=0.1)
    async with run_bot_against(double, bot):
        await double.wait_for_commands()
        yield Harness(bot, double, api)


@pytest.fixture
def bot_factory(
    double: DiscordDouble, api: FakePixelDojo, settings: Settings
) -> Callable[..., Any]:
    """Start the bot in-process with changed settings: `async with bot_factory(job_timeout=1)`."""

    def start(**changes: Any) -> Any:
        bot = PixelDojoBot(replace(settings, **changes), guild_ready_timeout=0.1)
        return run_bot_against(double, bot)

    return start


@pytest.fixture
async def bot_process(settings: Settings, tmp_path: Path) -> AsyncIterator[BotProcess]:
    process = BotProcess(settings, tmp_path / "bot.log")
    yield process
    await asyncio.to_thread(process.stop)
