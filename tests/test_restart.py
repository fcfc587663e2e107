"""Crashes and restarts lose nothing: unfinished jobs resume and post exactly once."""

from __future__ import annotations

import asyncio
import signal

from bot.app import PixelDojoBot
from bot.config import Settings
from bot.fake_pixeldojo import FakePixelDojo
from bot.jobs import JobState
from bot.storage import Database
from tests.conftest import ALICE_ID, CHANNEL_ID, GUILD_ID, BotProcess, footer_has, title_of
from tests.doubles.discord_double import DiscordDouble, run_bot_against


async def job_state(settings: Settings, job_id: int) -> tuple[JobState, int | None]:
    db = Database(settings.database_path)
    await db.connect()
    try:
        row = await db.fetchone("SELECT state, result_message_id FROM jobs WHERE id = ?", (job_id,))
    finally:
        await db.close()
    return JobState(row[0]), row[1]


def results_for(double: DiscordDouble, job_id: int) -> list[int]:
    return [
        m.id
        for m in double.messages.values()
        if m.attachments and not m.deleted and footer_has(m, f"Job #{job_id}")
    ]


async def test_killed_mid_job_resumes_and_posts_once(
    double: DiscordDouble, api: FakePixelDojo, settings: Settings, bot_process: BotProcess
) -> None:
    api.set_duration(2.0)
    bot_process.start()
    await double.wait_until_ready(timeout=20, min_identifies=1)
    await double.wait_for_commands(timeout=20)

    record = await double.slash(
        "imagine",
        {"prompt": "a comet over the sea"},
        user_id=ALICE_ID,
        guild_id=GUILD_ID,
        channel_id=CHANNEL_ID,
    )
    await record.wait_for_response(timeout=5)
    status = await double.wait_for_message(
        lambda m: title_of(m).startswith("🎨 Generating"), timeout=10
    )
    job_id = int(status.embeds[0]["footer"]["text"].split()[1].lstrip("#"))
    await asyncio.to_thread(bot_process.kill)  # SIGKILL while PixelDojo is still generating
    assert results_for(double, job_id) == []

    bot_process.start()
    await double.wait_until_ready(timeout=20, min_identifies=2)
    result = await double.wait_for_message(
        lambda m: bool(m.attachments) and footer_has(m, f"Job #{job_id}"), timeout=20
    )
    assert result.embeds[0]["description"] == "a comet over the sea"
    assert len(api.submissions) == 1, "the job was resumed, not submitted again"
    state, message_id = await job_state(settings, job_id)
    assert state is JobState.POSTED and message_id == result.id
    assert results_for(double, job_id) == [result.id]
    assert "resuming" in bot_process.log()


async def test_crash_after_posting_does_not_post_twice(
    double: DiscordDouble, api: FakePixelDojo, settings: Settings
) -> None:
    # First life: a normal job, posted.
    first = PixelDojoBot(settings, guild_ready_timeout=0.1)
    async with run_bot_against(double, first):
        record = await double.slash(
            "imagine",
            {"prompt": "posted once"},
            user_id=ALICE_ID,
            guild_id=GUILD_ID,
            channel_id=CHANNEL_ID,
        )
        await record.wait_for_response(timeout=5)
        result = await double.wait_for_message(lambda m: bool(m.attachments), timeout=10)
        job_id = int(result.embeds[0]["footer"]["text"].split()[1].lstrip("#"))
        job = await first.runner.wait_finished(job_id)
        assert job.state is JobState.POSTED
        # The process "died" after Discord accepted the post but before SQLite recorded it.
        async with first.db.transaction() as conn:
            await conn.execute(
                "UPDATE jobs SET state = 'completed', result_message_id = NULL WHERE id = ?",
                (job_id,),
            )

    posts_before = len(double.requests_to("POST", rf"/channels/{CHANNEL_ID}/messages"))
    second = PixelDojoBot(settings, guild_ready_timeout=0.1)
    async with run_bot_against(double, second):
        final = await asyncio.wait_for(second.runner.wait_finished(job_id), 10)
    assert final.state is JobState.POSTED and final.result_message_id == result.id
    assert results_for(double, job_id) == [result.id]
    assert len(api.submissions) == 1
    # Found in the channel history: not even a deduplicated re-send was attempted.
    assert len(double.requests_to("POST", rf"/channels/{CHANNEL_ID}/messages")) == posts_before


async def test_sigterm_shuts_down_cleanly(
    double: DiscordDouble, settings: Settings, bot_process: BotProcess
) -> None:
    bot_process.start()
    await double.wait_until_ready(timeout=20, min_identifies=1)
    assert bot_process.process is not None
    bot_process.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(bot_process.process.wait, 20)
    assert code == 0
    log = bot_process.log()
    assert "received SIGTERM: shutting down" in log and log.rstrip().endswith("bot: shut down")
    assert settings.discord_token not in log
