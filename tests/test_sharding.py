"""Discord's scale: the bot shards as Discord recommends, and serves every guild on its shard."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from bot.app import PixelDojoBot
from bot.discord_ui.identify_pacing import IdentifyPacing
from tests.doubles.discord_double import (
    ChannelSpec,
    DiscordDouble,
    GuildSpec,
    MemberSpec,
    MessageRecord,
    run_bot_against,
)
from tests.doubles.discord_gateway import GatewaySession
from tests.doubles.pixeldojo import FakePixelDojo
from tests.helpers import (
    ALICE_ID,
    CHANNEL_ID,
    GUILD_ID,
    OTHER_GUILD_OWNER_ID,
    Harness,
    make_guilds,
    settings_for,
)

INTENT_GUILDS = 1 << 0


def shard_of(guild_id: int, count: int) -> int:
    """Discord's rule for which shard a guild's events go to."""
    return (guild_id >> 22) % count


# GUILD_ID is on shard 1 of 2; one more in the id's timestamp part puts this one on shard 0.
SHARD_0_GUILD_ID = GUILD_ID + (1 << 22)
SHARD_0_CHANNEL_ID = SHARD_0_GUILD_ID + 1


def two_shard_guilds() -> list[GuildSpec]:
    """The test server (shard 1 of 2) and another server on shard 0."""
    return [
        make_guilds()[0],
        GuildSpec(
            id=SHARD_0_GUILD_ID,
            name="Shard Zero",
            owner_id=OTHER_GUILD_OWNER_ID,
            channels=[ChannelSpec(SHARD_0_CHANNEL_ID, "art")],
            roles=[],
            members=[MemberSpec(OTHER_GUILD_OWNER_ID, "owner"), MemberSpec(ALICE_ID, "alice")],
        ),
    ]


async def test_with_two_shards_imagine_posts_in_a_guild_on_each(
    api: FakePixelDojo, tmp_path: Path
) -> None:
    assert shard_of(GUILD_ID, 2) == 1 and shard_of(SHARD_0_GUILD_ID, 2) == 0
    async with DiscordDouble(guilds=two_shard_guilds(), shards=2) as double:
        double.max_concurrency = 2  # both may identify at once: no 5 s wait between them
        bot = PixelDojoBot(
            settings_for(double, api, tmp_path / "bot.sqlite3"), guild_ready_timeout=0.1
        )
        async with run_bot_against(double, bot):
            await double.wait_for_commands()
            harness = Harness(bot, double, api)
            # Discord's recommendation was followed: one IDENTIFY per shard, minimal intents.
            assert sorted(double.identified_shards) == [[0, 2], [1, 2]]  # type: ignore[type-var]
            for shard_id, guild_id in ((0, SHARD_0_GUILD_ID), (1, GUILD_ID)):
                ready = double.dispatched([shard_id, 2], "READY")
                assert [int(g["id"]) for g in ready[0]["guilds"]] == [guild_id]
                created = double.dispatched([shard_id, 2], "GUILD_CREATE")
                assert [int(g["id"]) for g in created] == [guild_id]
                guild = bot.get_guild(guild_id)
                assert guild is not None and guild.shard_id == shard_id

            records = {
                channel_id: await harness.imagine(
                    f"a lighthouse on shard {shard_of(guild_id, 2)}",
                    guild_id=guild_id,
                    channel_id=channel_id,
                )
                for guild_id, channel_id in (
                    (GUILD_ID, CHANNEL_ID),
                    (SHARD_0_GUILD_ID, SHARD_0_CHANNEL_ID),
                )
            }
            for channel_id in records:

                def posted(message: MessageRecord, channel_id: int = channel_id) -> bool:
                    return bool(message.attachments) and message.channel_id == channel_id

                result = await double.wait_for_message(posted, timeout=10)
                assert result.attachments[0].data.startswith(b"\x89PNG")
            # Each interaction reached the bot on its guild's shard, and only there.
            for shard_id, channel_id in ((0, SHARD_0_CHANNEL_ID), (1, CHANNEL_ID)):
                interactions = double.dispatched([shard_id, 2], "INTERACTION_CREATE")
                assert [int(i["id"]) for i in interactions] == [records[channel_id].id]


async def test_one_shard_is_the_default_and_needs_only_the_guilds_intent(
    harness: Harness,
) -> None:
    assert harness.double.identified_shards == [[0, 1]]
    assert harness.bot.shard_count == 1
    [ready] = harness.double.dispatched([0, 1], "READY")
    assert len(ready["guilds"]) == len(harness.double.guilds)
    assert harness.double.identified_intents == [INTENT_GUILDS]


def test_the_double_routes_guild_events_by_shard_and_dms_to_shard_zero() -> None:
    zero, one, unsharded = (
        GatewaySession(0, [0, 2]),
        GatewaySession(0, [1, 2]),
        GatewaySession(0, None),
    )
    assert zero.serves(SHARD_0_GUILD_ID) and not one.serves(SHARD_0_GUILD_ID)
    assert one.serves(GUILD_ID) and not zero.serves(GUILD_ID)
    assert zero.serves(None) and not one.serves(None)
    assert unsharded.serves(GUILD_ID) and unsharded.serves(None)


async def test_the_double_closes_an_identify_with_an_impossible_shard() -> None:
    async with (
        DiscordDouble(guilds=make_guilds(), shards=2) as double,
        aiohttp.ClientSession() as http,
        http.ws_connect(double.gateway_url) as ws,
    ):
        hello = await ws.receive_json(timeout=5)
        assert hello["op"] == 10
        identify = {"token": double.token, "intents": INTENT_GUILDS, "shard": [2, 2]}
        await ws.send_json({"op": 2, "d": identify})
        closed = await ws.receive(timeout=5)
        assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 4010
        assert double.identified_shards == []


async def test_shards_identify_as_fast_as_their_buckets_allow() -> None:
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacing = IdentifyPacing(2, clock=lambda: now[0], sleep=sleep)
    for shard_id in (0, 1):  # two buckets: both at once
        await pacing.wait_turn(shard_id)
    assert slept == []
    now[0] += 1.5
    await pacing.wait_turn(2)  # bucket 0 again: 5 s after shard 0
    await pacing.wait_turn(3)  # bucket 1: its 5 s are over by then
    assert slept == [3.5]
    one_at_a_time = IdentifyPacing(1, clock=lambda: now[0], sleep=sleep)
    await one_at_a_time.wait_turn(0)
    await one_at_a_time.wait_turn(1)
    assert slept == [3.5, 5.0]
