"""The Discord test double, exercised with the real discord.py client over loopback."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import AsyncIterator, Awaitable

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.doubles.discord_double import (
    BotCrashed,
    ChannelSpec,
    DiscordDouble,
    GuildSpec,
    MemberSpec,
    MessageFlag,
    Perm,
    RoleSpec,
    run_bot_against,
)

GUILD_ID = 1_100_000_000_000_000_001
CHANNEL_ID = 1_100_000_000_000_000_002
OWNER_ID = 1_100_000_000_000_000_003
ALICE_ID = 1_100_000_000_000_000_004
MOD_ID = 1_100_000_000_000_000_005
MOD_ROLE_ID = 1_100_000_000_000_000_006
SECOND_CHANNEL_ID = 1_100_000_000_000_000_007


def make_guild() -> GuildSpec:
    return GuildSpec(
        id=GUILD_ID,
        name="Pixel Lab",
        owner_id=OWNER_ID,
        channels=[ChannelSpec(CHANNEL_ID, "general")],
        roles=[RoleSpec(MOD_ROLE_ID, "Moderator", Perm.MANAGE_GUILD)],
        members=[
            MemberSpec(OWNER_ID, "owner"),
            MemberSpec(ALICE_ID, "alice"),
            MemberSpec(MOD_ID, "mod", roles=[MOD_ROLE_ID]),
        ],
    )


# --------------------------------------------------------------------------------------------
# A tiny bot: every feature the double must support, defined here rather than in bot/ or cogs/.
# --------------------------------------------------------------------------------------------


class PanelView(discord.ui.View):
    """A persistent view: survives restarts because its custom_id is fixed."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Reroll", custom_id="panel:reroll", style=discord.ButtonStyle.primary)
    async def reroll(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(content=f"rerolled by {interaction.user.id}")

    @discord.ui.select(
        custom_id="panel:style",
        options=[discord.SelectOption(label=s, value=s) for s in ("anime", "film")],
    )
    async def style(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        await interaction.response.send_message(f"style {select.values[0]}", ephemeral=True)


class PromptModal(discord.ui.Modal):
    prompt: discord.ui.TextInput = discord.ui.TextInput(label="Prompt", custom_id="prompt")

    def __init__(self) -> None:
        super().__init__(title="New prompt", custom_id="prompt_modal")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"got {self.prompt.value}", ephemeral=True)


class DemoCog(commands.Cog):
    credits = app_commands.Group(name="credits", description="Credit management")

    def __init__(self, bot: DemoBot) -> None:
        self.bot = bot

    @credits.command(description="Grant credits to a member")
    async def grant(
        self,
        interaction: discord.Interaction,
        member: discord.Member,
        amount: app_commands.Range[int, 1, 100],
    ) -> None:
        await interaction.response.send_message(f"granted {amount} to {member.id}")

    @app_commands.command(description="Render a result into the channel")
    async def render(self, interaction: discord.Interaction, prompt: str) -> None:
        await interaction.response.defer(thinking=True)
        assert isinstance(interaction.channel, discord.TextChannel)
        message = await interaction.channel.send(
            f"Result for {prompt}",
            files=[
                discord.File(io.BytesIO(b"\x89PNG first"), "one.png"),
                discord.File(io.BytesIO(b"\x89PNG second"), "two.png"),
            ],
            embed=discord.Embed(title="Render", description=prompt),
            allowed_mentions=discord.AllowedMentions.none(),
        )
        await message.edit(content=f"Done: {prompt}")
        await interaction.followup.send("posted")

    @app_commands.command(description="A status message that moves")
    async def progress(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        await interaction.edit_original_response(content="50%")
        await interaction.edit_original_response(
            content="100%", attachments=[discord.File(io.BytesIO(b"img"), "result.png")]
        )
        await interaction.followup.send("details", ephemeral=True)

    @app_commands.command(description="Only you can see this")
    async def secret(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message("psst", ephemeral=True)

    @app_commands.command(description="Post a panel with a button")
    async def panel(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message("panel", view=PanelView())

    @app_commands.command(description="Ask for a prompt")
    async def ask(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(PromptModal())

    @app_commands.command(description="Inspect a file from a member")
    @app_commands.describe(ratio="Aspect ratio")
    @app_commands.choices(
        ratio=[app_commands.Choice(name=r, value=r) for r in ("1:1", "16:9")],
    )
    async def inspect(
        self,
        interaction: discord.Interaction,
        member: discord.Member,
        image: discord.Attachment,
        ratio: app_commands.Choice[str],
    ) -> None:
        data = await image.read()
        await interaction.response.send_message(
            f"{member.display_name} {image.filename} {len(data)} {ratio.value} "
            f"{interaction.filesize_limit}",
            file=discord.File(io.BytesIO(data[::-1]), "echo.png"),
        )

    @app_commands.command(description="Moderators only")
    @app_commands.default_permissions(manage_guild=True)
    async def limits(self, interaction: discord.Interaction) -> None:
        assert isinstance(interaction.user, discord.Member)
        allowed = interaction.user.guild_permissions.manage_guild
        await interaction.response.send_message(f"allowed={allowed}", ephemeral=True)

    @app_commands.command(description="Too slow to acknowledge")
    async def slow(self, interaction: discord.Interaction) -> None:
        await asyncio.sleep(0.3)  # simulated slow work before the first response
        try:
            await interaction.response.send_message("late")
        except discord.NotFound as exc:
            self.bot.errors.append(exc)
            self.bot.failed.set()

    @app_commands.command(description="Pick a style")
    async def style(self, interaction: discord.Interaction, name: str) -> None:
        await interaction.response.send_message(name)

    @style.autocomplete("name")
    async def style_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        styles = ["anime", "analog film", "watercolor"]
        return [app_commands.Choice(name=s, value=s) for s in styles if s.startswith(current)]


class DemoBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            guild_ready_timeout=0.1,
        )
        self.errors: list[Exception] = []
        self.failed = asyncio.Event()
        self.resumed = asyncio.Event()
        self.seen: list[discord.Message] = []

    async def setup_hook(self) -> None:
        await self.add_cog(DemoCog(self))
        self.add_view(PanelView())
        self.tree.copy_global_to(guild=discord.Object(GUILD_ID))
        self.tree.clear_commands(guild=None)

    async def on_resumed(self) -> None:
        self.resumed.set()

    async def on_message(self, message: discord.Message) -> None:
        self.seen.append(message)

    def text_channel(self) -> discord.TextChannel:
        channel = self.get_channel(CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel)
        return channel


@pytest.fixture
async def double() -> AsyncIterator[DiscordDouble]:
    async with DiscordDouble(guilds=[make_guild()]) as server:
        yield server
        assert server.unhandled == [], "the bot called routes the double does not implement"


@pytest.fixture
async def bot(double: DiscordDouble) -> AsyncIterator[DemoBot]:
    demo = DemoBot()
    async with run_bot_against(double, demo):
        await demo.tree.sync(guild=discord.Object(GUILD_ID))
        yield demo


def slash_kwargs(user_id: int = ALICE_ID) -> dict[str, int]:
    return {"user_id": user_id, "guild_id": GUILD_ID, "channel_id": CHANNEL_ID}


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


async def test_connect_ready_and_guild_sync(double: DiscordDouble, bot: DemoBot) -> None:
    commands_ = await double.wait_for_commands()
    assert {c["name"] for c in commands_} == {
        "render",
        "progress",
        "secret",
        "panel",
        "ask",
        "inspect",
        "limits",
        "slow",
        "style",
        "credits",
    }
    assert all(c["guild_id"] == str(GUILD_ID) and int(c["id"]) > 0 for c in commands_)
    assert double.registered_commands["limits"]["default_member_permissions"] == str(
        Perm.MANAGE_GUILD
    )
    guild = bot.get_guild(GUILD_ID)
    assert guild is not None and guild.name == "Pixel Lab"
    assert guild.filesize_limit == 10 * 1024 * 1024
    assert bot.user is not None and bot.user.id == double.bot_user_id
    assert guild.me.guild_permissions.attach_files
    assert [r.path for r in double.requests if r.api][:2] == [
        "/users/@me",
        "/oauth2/applications/@me",
    ]


async def test_defer_then_channel_message_with_files_embed_and_edit(
    double: DiscordDouble, bot: DemoBot
) -> None:
    record = await double.slash("render", {"prompt": "a <@&1> fox @everyone"}, **slash_kwargs())

    first = await record.wait_for_response()
    assert first["type"] == 5
    assert record.ack_latency is not None and record.ack_latency < 3
    done = await double.wait_for_message(lambda m: m.content == "Done: a <@&1> fox @everyone")

    assert [(a.filename, a.data, a.content_type) for a in done.attachments] == [
        ("one.png", b"\x89PNG first", "image/png"),
        ("two.png", b"\x89PNG second", "image/png"),
    ]
    assert done.embeds[0]["title"] == "Render"
    assert done.embeds[0]["description"] == "a <@&1> fox @everyone"
    assert done.allowed_mentions == {"parse": []}
    assert not done.mention_everyone and done.mentions == []
    assert [e["content"] for e in done.edits] == ["Done: a <@&1> fox @everyone"]
    assert done.edits[0].at >= done.created_at
    assert not done.webhook and done.interaction_id is None

    # The first follow-up after a defer fills the "thinking" message.
    await double.wait_until(lambda: bool(record.followups))
    followup = record.followups[0]
    assert followup.content == "posted"
    assert record.original is followup and record.followups == [followup]
    assert not followup.loading and followup.webhook


async def test_status_edits_of_the_original_response(double: DiscordDouble, bot: DemoBot) -> None:
    record = await double.slash("progress", **slash_kwargs())
    await double.wait_for_message(lambda m: m.content == "details")
    status = record.original
    assert status is not None and not status.loading and not status.ephemeral
    assert [e.get("content") for e in status.edits] == ["50%", "100%"]
    assert [e.source for e in status.edits] == ["webhook", "webhook"]
    assert [a.filename for a in status.attachments] == ["result.png"]
    assert status.type == 20 and status.webhook and status.interaction_id == record.id
    assert [m.content for m in record.followups] == ["details"]
    assert record.followups[0].ephemeral
    assert double.channel_messages(CHANNEL_ID) == [status]


async def test_ephemeral_reply(double: DiscordDouble, bot: DemoBot) -> None:
    record = await double.slash("secret", **slash_kwargs())
    response = await record.wait_for_response()
    assert response["type"] == 4
    assert response["data"]["flags"] & MessageFlag.EPHEMERAL
    assert record.ephemeral and record.original is not None
    assert record.original.content == "psst"
    assert double.channel_messages(CHANNEL_ID) == []
    assert double.channel_messages(CHANNEL_ID, include_ephemeral=True) == [record.original]


async def test_persistent_button_click_edits_the_message(
    double: DiscordDouble, bot: DemoBot
) -> None:
    posted = await double.slash("panel", **slash_kwargs())
    await posted.wait_for_response()
    assert posted.original is not None
    panel = posted.original
    custom_ids = [c.get("custom_id") for c in panel.iter_components()]
    assert custom_ids == [None, "panel:reroll", None, "panel:style"]

    click = await double.click(panel.id, "panel:reroll", user_id=MOD_ID)
    response = await click.wait_for_response()

    assert response["type"] == 7
    assert panel.content == f"rerolled by {MOD_ID}"
    assert panel.edits[-1].source == "component"


async def test_select_menu(double: DiscordDouble, bot: DemoBot) -> None:
    posted = await double.slash("panel", **slash_kwargs())
    await posted.wait_for_response()
    assert posted.original is not None
    with pytest.raises(ValueError, match="offers no"):
        await double.click(posted.original.id, "panel:style", user_id=ALICE_ID, values=["oil"])
    chosen = await double.click(
        posted.original.id, "panel:style", user_id=ALICE_ID, values=["film"]
    )
    await chosen.wait_for_response()
    assert chosen.original is not None and chosen.original.content == "style film"


async def test_modal_round_trip(double: DiscordDouble, bot: DemoBot) -> None:
    opener = await double.slash("ask", **slash_kwargs())
    assert (await opener.wait_for_response())["type"] == 9
    assert opener.modal is not None and opener.modal["title"] == "New prompt"

    submit = await double.submit_modal("prompt_modal", {"prompt": "neon city"}, **slash_kwargs())
    await submit.wait_for_response()

    assert submit.original is not None and submit.original.content == "got neon city"
    assert submit.ephemeral
    with pytest.raises(ValueError, match="required"):
        await double.submit_modal("prompt_modal", {}, **slash_kwargs())


async def test_options_are_resolved_and_attachments_served(
    double: DiscordDouble, bot: DemoBot
) -> None:
    record = await double.slash(
        "inspect",
        {"member": MOD_ID, "ratio": "16:9"},
        attachments={"image": ("ref.png", b"12345", "image/png")},
        **slash_kwargs(),
    )
    await record.wait_for_response()
    assert record.original is not None
    assert record.original.content == f"mod ref.png 5 16:9 {10 * 1024 * 1024}"
    assert [(a.filename, a.data) for a in record.original.attachments] == [("echo.png", b"54321")]
    with pytest.raises(ValueError, match="choices"):
        await double.slash(
            "inspect",
            {"member": MOD_ID, "ratio": "2:1", "image": ("a.png", b"", "image/png")},
            **slash_kwargs(),
        )


async def test_default_member_permissions_hide_commands(
    double: DiscordDouble, bot: DemoBot
) -> None:
    with pytest.raises(PermissionError):
        await double.slash("limits", **slash_kwargs(ALICE_ID))
    allowed = await double.slash("limits", **slash_kwargs(MOD_ID))
    await allowed.wait_for_response()
    assert allowed.original is not None and allowed.original.content == "allowed=True"
    # An admin may override command permissions: the bot must still check by itself.
    override = await double.slash("limits", enforce_permissions=False, **slash_kwargs(ALICE_ID))
    await override.wait_for_response()
    assert override.original is not None and override.original.content == "allowed=False"


async def test_subcommand_groups_and_ranges(double: DiscordDouble, bot: DemoBot) -> None:
    record = await double.slash(
        "credits grant", {"member": ALICE_ID, "amount": 5}, **slash_kwargs(MOD_ID)
    )
    await record.wait_for_response()
    assert record.original is not None
    assert record.original.content == f"granted 5 to {ALICE_ID}"
    options = record.payload["data"]["options"]
    assert options[0]["type"] == 1 and options[0]["name"] == "grant"
    with pytest.raises(ValueError, match="outside"):
        await double.slash(
            "credits", {"member": ALICE_ID, "amount": 0}, subcommand="grant", **slash_kwargs()
        )


async def test_autocomplete(double: DiscordDouble, bot: DemoBot) -> None:
    record = await double.autocomplete("style", {"name": "an"}, "name", **slash_kwargs())
    assert (await record.wait_for_response())["type"] == 8
    assert record.autocomplete_choices == [
        {"name": "anime", "value": "anime"},
        {"name": "analog film", "value": "analog film"},
    ]


async def test_nonce_deduplicates_channel_sends(double: DiscordDouble, bot: DemoBot) -> None:
    channel = bot.text_channel()
    first = await channel.send("only once", nonce=424242)
    second = await channel.send("only once", nonce=424242)
    assert first.id == second.id
    assert [m.content for m in double.channel_messages(CHANNEL_ID)] == ["only once"]


async def test_history_is_newest_first_and_paginates(double: DiscordDouble, bot: DemoBot) -> None:
    channel = bot.text_channel()
    sent = [await channel.send(f"m{i}") for i in range(5)]
    latest = [m.content async for m in channel.history(limit=3)]
    assert latest == ["m4", "m3", "m2"]
    older = [m.content async for m in channel.history(limit=10, before=sent[2])]
    assert older == ["m1", "m0"]
    after = [m.content async for m in channel.history(limit=10, after=sent[2])]
    assert after == ["m3", "m4"]
    deleted = sent[4]
    await deleted.delete()
    assert [m.content async for m in channel.history(limit=1)] == ["m3"]
    assert double.messages[deleted.id].deleted


async def test_edit_keeps_only_listed_attachments(double: DiscordDouble, bot: DemoBot) -> None:
    channel = bot.text_channel()
    files = [discord.File(io.BytesIO(bytes([i])), f"{i}.png") for i in range(3)]
    message = await channel.send("three", files=files)
    edited = await message.edit(
        attachments=[message.attachments[2], discord.File(io.BytesIO(b"new"), "new.png")]
    )
    assert [a.filename for a in edited.attachments] == ["2.png", "new.png"]
    record = double.messages[message.id]
    assert [(a.filename, a.data) for a in record.attachments] == [
        ("2.png", b"\x02"),
        ("new.png", b"new"),
    ]
    assert [a.filename for a in record.edits[0].files] == ["new.png"]
    assert await edited.attachments[1].read() == b"new"


async def test_direct_messages(double: DiscordDouble, bot: DemoBot) -> None:
    alice = await bot.fetch_user(ALICE_ID)
    sent = await alice.send("your render is ready")
    assert isinstance(sent.channel, discord.DMChannel)
    assert [m.content for m in double.channel_messages(sent.channel.id)] == ["your render is ready"]
    double.dms_closed.add(MOD_ID)
    mod = await bot.fetch_user(MOD_ID)
    with pytest.raises(discord.Forbidden) as closed:
        await mod.send("hello")
    assert closed.value.code == 50007


async def test_user_messages_reach_the_bot(double: DiscordDouble, bot: DemoBot) -> None:
    assert bot.user is not None
    waiting = asyncio.ensure_future(
        bot.wait_for("message", check=lambda m: m.author.id == ALICE_ID, timeout=5)
    )
    await double.user_message(CHANNEL_ID, ALICE_ID, "hello bot")
    plain = await waiting
    assert plain.content == ""  # no MESSAGE_CONTENT intent, bot not mentioned

    waiting = asyncio.ensure_future(
        bot.wait_for("message", check=lambda m: m.author.id == ALICE_ID, timeout=5)
    )
    await double.user_message(CHANNEL_ID, ALICE_ID, f"<@{bot.user.id}> hello")
    mentioned = await waiting
    assert mentioned.content == f"<@{bot.user.id}> hello" and bot.user in mentioned.mentions


async def test_limits_answer_like_discord(double: DiscordDouble, bot: DemoBot) -> None:
    channel = bot.text_channel()
    guild = channel.guild
    too_big = discord.File(io.BytesIO(b"x" * (guild.filesize_limit + 1)), "big.png")
    with pytest.raises(discord.HTTPException) as too_large:
        await channel.send(file=too_big)
    assert too_large.value.status == 413 and too_large.value.code == 40005

    with pytest.raises(discord.HTTPException) as too_long:
        await channel.send("x" * 2001)
    assert too_long.value.status == 400 and too_long.value.code == 50035
    assert "content" in too_long.value.text

    with pytest.raises(discord.HTTPException) as big_embed:
        await channel.send(embed=discord.Embed(description="d" * 4097))
    assert big_embed.value.code == 50035

    with pytest.raises(discord.HTTPException) as too_many_chars:
        await channel.send(embeds=[discord.Embed(description="d" * 4000) for _ in range(2)])
    assert "In embeds: Embed size exceeds maximum size of 6000" in too_many_chars.value.text
    assert double.channel_messages(CHANNEL_ID) == []


class SteppingClock:
    """Moves on ``step`` seconds each time it is read: the double reads it once per request a
    bucket matches, so requests are ``step`` apart in the bucket's eyes, however slow the
    machine."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 0.0

    def __call__(self) -> float:
        now = self.now
        self.now += self.step
        return now


async def test_rate_limit_is_retried_transparently(double: DiscordDouble, bot: DemoBot) -> None:
    # One send per 0.1 s, each request 0.06 s after the one before: every second send is
    # refused once (retry_after 0.04 s), and its retry, 0.12 s after the last accepted, passes.
    double.clock = SteppingClock(0.06)
    double.rate_limit("POST", r"/channels/\d+/messages", limit=1, per=0.1)
    channel = bot.text_channel()
    for i in range(3):
        await channel.send(f"burst {i}")
    assert [m.content for m in double.channel_messages(CHANNEL_ID)] == [
        "burst 0",
        "burst 1",
        "burst 2",
    ]
    statuses = [r.status for r in double.requests_to("POST", r"/channels/\d+/messages")]
    assert statuses == [200, 429, 200, 429, 200]
    assert double.rate_limited_count == 2


class SetClock:
    """A clock that says what the test last set."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def raw_request(
    double: DiscordDouble, method: str, path: str, body: dict[str, object]
) -> tuple[int, dict[str, object], dict[str, str]]:
    """One API request outside discord.py (which would wait instead of showing the 429)."""
    auth = {"Authorization": f"Bot {double.token}"}
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method, f"{double.api_base}{path}", json=body, headers=auth
        ) as response:
            return response.status, await response.json(), dict(response.headers)


async def test_keyed_buckets_give_each_channel_its_own(double: DiscordDouble, bot: DemoBot) -> None:
    double.clock = SetClock()  # the windows never end: only the keys decide
    double.guilds[GUILD_ID].channels.append(ChannelSpec(SECOND_CHANNEL_ID, "second"))
    double.rate_limit(
        "POST",
        r"/channels/(\d+)/messages",
        limit=3,
        per=60,
        send_headers=True,
        per_match=True,
        kind="channel create",
    )
    # Two sends per channel: had the channels shared a bucket, discord.py would have been
    # refused on the fourth and retried only a minute later. (It leaves the last request of a
    # bucket only once the bucket resets, so stay one under the limit.)
    for channel in (bot.text_channel(), bot.get_partial_messageable(SECOND_CHANNEL_ID)):
        for i in range(2):
            await asyncio.wait_for(channel.send(f"hello {i}"), 5)
    assert [len(double.channel_messages(c)) for c in (CHANNEL_ID, SECOND_CHANNEL_ID)] == [2, 2]
    assert double.rate_limited_count == 0

    path = f"/channels/{CHANNEL_ID}/messages"
    third = await raw_request(double, "POST", path, {"content": "third"})
    status, body, headers = await raw_request(double, "POST", path, {"content": "fourth"})
    assert third[0] == 200 and third[2]["X-RateLimit-Remaining"] == "0"
    assert status == 429
    assert body == {"message": "You are being rate limited.", "retry_after": 60.0, "global": False}
    assert headers["X-RateLimit-Scope"] == "user" and headers["X-RateLimit-Remaining"] == "0"
    assert [m.content for m in double.channel_messages(CHANNEL_ID)] == [
        "hello 0",
        "hello 1",
        "third",
    ]
    assert double.rate_limited_by_kind == {"channel create": 1}


async def test_keyed_buckets_give_each_webhook_token_its_own(
    double: DiscordDouble, bot: DemoBot
) -> None:
    double.clock = SetClock()
    first = await double.slash("secret", **slash_kwargs())
    second = await double.slash("secret", **slash_kwargs())
    for record in (first, second):
        await record.wait_for_response()
    double.rate_limit(
        "*",
        r"/webhooks/(\d+/[^/]+)(?:/.*)?",
        limit=1,
        per=2,
        send_headers=True,
        per_match=True,
        kind="interaction webhook",
    )

    def edit(token: str, content: str) -> Awaitable[tuple[int, dict[str, object], dict[str, str]]]:
        path = f"/webhooks/{double.application_id}/{token}/messages/@original"
        return raw_request(double, "PATCH", path, {"content": content})

    accepted, _, first_headers = await edit(first.token, "edited once")
    refused, body, refused_headers = await edit(first.token, "edited twice")
    other, _, other_headers = await edit(second.token, "edited once")
    assert (accepted, refused, other) == (200, 429, 200)
    assert body == {"message": "You are being rate limited.", "retry_after": 2.0, "global": False}
    assert first.original is not None and first.original.content == "edited once"
    assert second.original is not None and second.original.content == "edited once"
    # Discord's bucket hash names the route's limit; the token keeps the counts apart.
    assert first_headers["X-RateLimit-Bucket"] == other_headers["X-RateLimit-Bucket"]
    assert first_headers["X-RateLimit-Remaining"] == other_headers["X-RateLimit-Remaining"] == "0"
    assert refused_headers["X-RateLimit-Scope"] == "user"
    assert double.rate_limited_by_kind == {"interaction webhook": 1}


async def test_fixed_window_refills_when_it_resets(double: DiscordDouble, bot: DemoBot) -> None:
    clock = SetClock()
    double.clock = clock
    route = r"/channels/(\d+)/messages"
    double.rate_limit("POST", route, limit=2, per=1, send_headers=True, fixed_window=True)
    path = f"/channels/{CHANNEL_ID}/messages"
    statuses = []
    for at in (0.0, 0.5, 0.9):
        clock.now = at
        status, body, headers = await raw_request(double, "POST", path, {"content": f"{at}"})
        statuses.append(status)
    assert statuses == [200, 200, 429]
    assert body["retry_after"] == 0.1 and headers["X-RateLimit-Reset-After"] == "0.100"
    # The window opened at 0 closes at 1: the whole limit is back (a sliding window would
    # still count the request at 0.5), as the Reset-After header promised.
    clock.now = 1.0
    status, _, headers = await raw_request(double, "POST", path, {"content": "1.0"})
    assert status == 200
    assert headers["X-RateLimit-Remaining"] == "1" and headers["X-RateLimit-Reset-After"] == "1.000"
    assert double.rate_limited_by_kind == {f"POST {route}": 1}


async def test_fixed_window_headers_describe_the_window_the_request_counted_in(
    double: DiscordDouble, bot: DemoBot
) -> None:
    # Counted at 0, answered at 1.2: the window closed while the request was handled. The
    # headers still describe it (a fresh window would tell the client to send a whole
    # limit's worth before the window the next request opens has closed).
    double.clock = SteppingClock(1.2)
    double.rate_limit(
        "POST", r"/channels/(\d+)/messages", limit=2, per=1, send_headers=True, fixed_window=True
    )
    status, _, headers = await raw_request(
        double, "POST", f"/channels/{CHANNEL_ID}/messages", {"content": "slow"}
    )
    assert status == 200
    assert headers["X-RateLimit-Remaining"] == "1" and headers["X-RateLimit-Reset-After"] == "0.001"


async def test_interaction_not_acknowledged_in_time_is_unknown() -> None:
    async with DiscordDouble(guilds=[make_guild()], interaction_ack_timeout=0.15) as server:
        demo = DemoBot()
        async with run_bot_against(server, demo):
            await demo.tree.sync(guild=discord.Object(GUILD_ID))
            record = await server.slash("slow", **slash_kwargs())
            await asyncio.wait_for(demo.failed.wait(), 5)
        assert record.responses == [] and record.response_type is None
        assert [r["_error"]["code"] for r in record.rejected_callbacks] == [10062]
        assert [e.code for e in demo.errors if isinstance(e, discord.NotFound)] == [10062]


async def test_gateway_resume_after_drop(double: DiscordDouble, bot: DemoBot) -> None:
    await double.drop_gateway()
    await asyncio.wait_for(bot.resumed.wait(), 5)
    assert double.resume_count == 1 and double.identify_count == 1
    record = await double.slash("secret", **slash_kwargs())
    assert (await record.wait_for_response())["type"] == 4


async def test_a_new_client_gets_ready_after_the_first_closed(double: DiscordDouble) -> None:
    first = DemoBot()
    async with run_bot_against(double, first):
        await first.tree.sync(guild=discord.Object(GUILD_ID))
        posted = await double.slash("panel", **slash_kwargs())
        await posted.wait_for_response()
    assert first.is_closed() and not double.connected

    second = DemoBot()  # e.g. the bot process restarted
    async with run_bot_against(double, second):
        assert double.identify_count == 2
        assert second.get_guild(GUILD_ID) is not None
        # The persistent view still answers clicks on the old message.
        assert posted.original is not None
        click = await double.click(posted.original.id, "panel:reroll", user_id=ALICE_ID)
        assert (await click.wait_for_response())["type"] == 7


async def test_raw_http_contract(double: DiscordDouble) -> None:
    auth = {"Authorization": f"Bot {double.token}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{double.api_base}/users/@me", headers=auth) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/json"
            assert (await response.json())["id"] == str(double.bot_user_id)
        async with session.get(f"{double.api_base}/users/@me") as response:
            assert response.status == 401
        async with session.get(f"{double.api_base}/nope", headers=auth) as response:
            assert response.status == 404
            assert response.headers["Content-Type"] == "application/json"
    assert [r.path for r in double.unhandled] == ["/nope"]
    double.unhandled.clear()


BOT_PROCESS = """
import os

import discord
import discord.gateway
import discord.http
import yarl
from discord.ext import commands

discord.http.Route.BASE = os.environ["DISCORD_API_BASE"]
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ["DISCORD_GATEWAY_URL"])
bot = commands.Bot(
    command_prefix=commands.when_mentioned,
    intents=discord.Intents.default(),
    guild_ready_timeout=0.1,
)


@bot.tree.command(description="Which process answers")
async def whoami(interaction: discord.Interaction) -> None:
    await interaction.response.send_message(f"pid {os.getpid()}")


@bot.event
async def on_ready() -> None:
    await bot.tree.sync()


bot.run(os.environ["DISCORD_TOKEN"], log_handler=None)
"""


async def test_bot_in_a_separate_process_killed_and_restarted(double: DiscordDouble) -> None:
    env = {
        **os.environ,
        "DISCORD_API_BASE": double.api_base,
        "DISCORD_GATEWAY_URL": double.gateway_url,
        "DISCORD_TOKEN": double.token,
    }
    for generation in (1, 2):
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", BOT_PROCESS, env=env)
        try:
            await double.wait_until_ready(15, min_identifies=generation)
            await double.wait_for_commands(15)
            record = await double.slash("whoami", **slash_kwargs())
            response = await record.wait_for_response(10)
            assert response["data"]["content"] == f"pid {process.pid}"
        finally:
            process.kill()
            await process.wait()


async def test_bot_start_failure_surfaces(double: DiscordDouble) -> None:
    with pytest.raises(BotCrashed) as crashed:
        async with run_bot_against(double, DemoBot(), token="not-the-token"):
            pass
    assert isinstance(crashed.value.__cause__, discord.LoginFailure)
