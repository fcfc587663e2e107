"""Crashes and restarts lose nothing: unfinished jobs resume and post exactly once."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from bot.app import PixelDojoBot
from bot.config import Settings
from bot.generation.models import JobState
from bot.storage.migrations import MIGRATIONS
from tests.doubles.discord_double import DiscordDouble, run_bot_against
from tests.doubles.pixeldojo import FakePixelDojo
from tests.helpers import (
    ALICE_ID,
    CHANNEL_ID,
    GUILD_ID,
    BotProcess,
    final_job_state,
    footer_has,
    run_until_exit,
    title_of,
)


def results_for(double: DiscordDouble, job_id: int) -> list[int]:
    return [
        m.id
        for m in double.messages.values()
        if m.attachments and not m.deleted and footer_has(m, f"Job #{job_id}")
    ]


async def test_killed_mid_job_resumes_and_posts_once(
    double: DiscordDouble, api: FakePixelDojo, settings: Settings, bot_process: BotProcess
) -> None:
    api.set_duration(3600)  # still generating whatever the machine's load: finished below
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
    api.finish_jobs()  # PixelDojo finishes while the bot is down

    bot_process.start()
    await double.wait_until_ready(timeout=20, min_identifies=2)
    result = await double.wait_for_message(
        lambda m: bool(m.attachments) and footer_has(m, f"Job #{job_id}"), timeout=20
    )
    assert result.embeds[0]["description"] == "a comet over the sea"
    assert len(api.submissions) == 1, "the job was resumed, not submitted again"
    state, message_id = await final_job_state(settings, job_id)
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
        job = await first.services.runner.wait_finished(job_id)
        assert job.state is JobState.POSTED
        # The process "died" after Discord accepted the post but before SQLite recorded it.
        async with first.services.db.transaction() as conn:
            await conn.execute(
                "UPDATE jobs SET state = 'completed', result_message_id = NULL WHERE id = ?",
                (job_id,),
            )

    posts_before = len(double.requests_to("POST", rf"/channels/{CHANNEL_ID}/messages"))
    second = PixelDojoBot(settings, guild_ready_timeout=0.1)
    async with run_bot_against(double, second):
        final = await asyncio.wait_for(second.services.runner.wait_finished(job_id), 10)
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
    # Logged before the gateway connects: the limits in force, and never a secret.
    assert "limits: PixelDojo requests" in log and "job timeout" in log
    assert settings.discord_token not in log and settings.pixeldojo_api_key not in log


def _garbage(path: Path) -> Path:
    (path / "bot.sqlite3").write_bytes(b"this is not an SQLite database, just bytes. " * 100)
    return path / "bot.sqlite3"


def _under_a_file(path: Path) -> Path:
    (path / "plain-file").write_text("")
    return path / "plain-file" / "bot.sqlite3"


def _a_directory(path: Path) -> Path:
    (path / "bot.sqlite3").mkdir()
    return path / "bot.sqlite3"


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (_garbage, "file is not a database"),
        (_under_a_file, "cannot create the folder {path.parent} (File exists)"),
        (_a_directory, "unable to open database file"),
    ],
    ids=["garbage", "folder-not-creatable", "directory"],
)
async def test_unusable_database_exits_with_one_line(
    double: DiscordDouble, settings: Settings, tmp_path: Path, make, cause: str
) -> None:
    path = make(tmp_path)
    code, err = await run_until_exit(replace(settings, database_path=path), tmp_path)
    assert code == 2
    problems = [line for line in err.splitlines() if line.startswith("pixeldojo-bot:")]
    cause = cause.format(path=path)
    assert problems == [f"pixeldojo-bot: cannot open DATABASE_PATH={path}: {cause}"], err


async def test_database_from_a_newer_version_is_refused(
    double: DiscordDouble, settings: Settings, tmp_path: Path
) -> None:
    newer = len(MIGRATIONS) + 1
    with sqlite3.connect(settings.database_path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (newer,))
    conn.close()
    code, err = await run_until_exit(settings, tmp_path)
    assert code == 2
    problems = [line for line in err.splitlines() if line.startswith("pixeldojo-bot:")]
    assert problems == [
        f"pixeldojo-bot: cannot open DATABASE_PATH={settings.database_path}: it has schema "
        f"version {newer} but this version of the bot knows only up to {len(MIGRATIONS)} "
        "(upgrade the bot, or restore a backup made by this version)"
    ], err
    with sqlite3.connect(settings.database_path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert tables == {"schema_version"}, "nothing was migrated into the newer database"
