"""bench/channel_bench.py: it finds each job's result however the bot shows it, and runs."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from bench import channel_bench
from bench.bot_process import CHANNEL_ID, FIRST_MEMBER_ID, GUILD_ID, make_guild
from bench.job_messages import ResultWatch
from tests.doubles.discord_double import (
    DiscordDouble,
    InteractionRecord,
    MessageRecord,
    run_bot_against,
)


def buttons(*custom_ids: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for custom_id in custom_ids:
        view.add_item(discord.ui.Button(label=custom_id, custom_id=custom_id))
    return view


def images(count: int = 2) -> list[discord.File]:
    return [discord.File(io.BytesIO(b"\x89PNG %d" % i), f"{i}.png") for i in range(count)]


def result_view(job: int) -> discord.ui.View:
    return buttons(f"pdj:reroll:{job}", f"pdj:vary:{job}", f"pdj:info:{job}")


class Shows(commands.Cog):
    """The ways a bot may show a job: what the bench has to tell apart."""

    @app_commands.command(description="status as the response, result edited into it")
    async def one(self, interaction: discord.Interaction, job: int) -> None:
        await interaction.response.send_message("queued", view=buttons(f"pdj:cancel:{job}"))
        await interaction.edit_original_response(
            content="done", attachments=images(), view=result_view(job)
        )
        await interaction.edit_original_response(content="done, really")

    @app_commands.command(description="status and result as channel messages")
    async def two(self, interaction: discord.Interaction, job: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert isinstance(interaction.channel, discord.TextChannel)
        status = await interaction.channel.send("queued", view=buttons(f"pdj:cancel:{job}"))
        await interaction.channel.send("done", files=images(), view=result_view(job))
        await status.delete()
        await interaction.followup.send(f"Job #{job} is done", ephemeral=True)

    @app_commands.command(description="the result posted twice")
    async def twice(self, interaction: discord.Interaction, job: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert isinstance(interaction.channel, discord.TextChannel)
        for _ in range(2):
            await interaction.channel.send("done", files=images(), view=result_view(job))
        await interaction.followup.send("done", ephemeral=True)

    @app_commands.command(description="the result shown to the member alone")
    async def private(self, interaction: discord.Interaction, job: int) -> None:
        await interaction.response.send_message(
            "done", files=images(), view=result_view(job), ephemeral=True
        )


class ShowBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            guild_ready_timeout=0.1,
        )

    async def setup_hook(self) -> None:
        await self.add_cog(Shows())
        self.tree.copy_global_to(guild=discord.Object(GUILD_ID))
        self.tree.clear_commands(guild=None)


@pytest.fixture
async def double() -> AsyncIterator[DiscordDouble]:
    async with DiscordDouble(guilds=[make_guild(1)]) as server:
        bot = ShowBot()
        async with run_bot_against(server, bot):
            await bot.tree.sync(guild=discord.Object(GUILD_ID))
            yield server


async def show(double: DiscordDouble, name: str, job: int) -> InteractionRecord:
    record = await double.slash(
        name, {"job": job}, user_id=FIRST_MEMBER_ID, guild_id=GUILD_ID, channel_id=CHANNEL_ID
    )
    await record.wait_for_response()
    return record


def carrying(double: DiscordDouble, custom_id: str) -> MessageRecord:
    """The one message with a component `custom_id`."""
    (found,) = (
        m
        for m in double.messages.values()
        if any(c.get("custom_id") == custom_id for c in m.iter_components())
    )
    return found


def event_at(double: DiscordDouble, kind: str, message: MessageRecord) -> float:
    """When the double first reported `kind` for `message`."""
    return next(e.at for e in double.events if e.kind == kind and e.message is message)


async def test_result_watch_finds_each_result_whichever_way_it_is_shown(
    double: DiscordDouble,
) -> None:
    watch = ResultWatch(expected=4)
    watching = asyncio.ensure_future(double.wait_for(watch.observe, timeout=60))
    try:
        one = await show(double, "one", 1)
        await double.wait_until(lambda: one.original is not None and len(one.original.edits) == 2)
        two = await show(double, "two", 2)
        await double.wait_until(lambda: bool(two.followups))
        twice = await show(double, "twice", 3)
        await double.wait_until(lambda: bool(twice.followups))
        await show(double, "private", 4)  # its (only) message exists once it is answered
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching

    # One message per job: visible from the edit that put the images in, not from the status.
    assert one.original is not None
    assert watch.messages[1] == {one.original.id}
    assert watch.first_seen[1] == event_at(double, "message_update", one.original)
    # Status and result as channel messages: the result only; the deleted status is no result.
    status, result = (carrying(double, f"pdj:{action}:2") for action in ("cancel", "reroll"))
    assert status.deleted and watch.messages[2] == {result.id}
    assert watch.first_seen[2] == event_at(double, "message_create", result)
    assert len(watch.messages[3]) == 2  # a duplicate
    assert 4 not in watch.messages  # nobody else sees an ephemeral reply
    assert watch.images == {1: 2, 2: 2, 3: 2}


async def test_channel_bench_fast_mode_shows_every_result_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = await channel_bench.run(channel_bench.parse(["--fast"]))
    printed = dict(
        line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line
    )
    assert status == 0
    assert printed["jobs admitted"] == "15" and printed["jobs refused"] == "0"
    assert printed["result messages per job"] == "1 (15 jobs)"
    assert printed["interaction callbacks per /imagine"] == "1.000"
