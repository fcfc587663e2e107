"""What tests and benches share: the test guilds, settings for a bot between the doubles, the
`Harness` a test drives it with, `BotProcess` for `python -m bot`, and the pieces runner tests
build a runner from without Discord. Fixtures are in conftest.py, doubles in doubles/."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.app import PixelDojoBot
from bot.config import Settings
from bot.generation.models import GenerationRequest, JobState
from bot.generation.runner import RunnerSettings
from bot.storage import Database
from tests.doubles.discord_double import (
    ChannelSpec,
    DiscordDouble,
    GuildSpec,
    InteractionRecord,
    MemberSpec,
    MessageRecord,
    Perm,
    RoleSpec,
)
from tests.doubles.pixeldojo import FakePixelDojo

REPO_ROOT = Path(__file__).resolve().parent.parent

GUILD_ID = 1_200_000_000_000_000_001
CHANNEL_ID = 1_200_000_000_000_000_002
OTHER_CHANNEL_ID = 1_200_000_000_000_000_003
LOG_CHANNEL_ID = 1_200_000_000_000_000_004
OWNER_ID = 1_200_000_000_000_000_010
ALICE_ID = 1_200_000_000_000_000_011
BOB_ID = 1_200_000_000_000_000_012
CAROL_ID = 1_200_000_000_000_000_013
MOD_ID = 1_200_000_000_000_000_014
MOD_ROLE_ID = 1_200_000_000_000_000_020
ARTIST_ROLE_ID = 1_200_000_000_000_000_021
MEMBER_IDS = (ALICE_ID, BOB_ID, CAROL_ID)

OTHER_GUILD_ID = 1_200_000_000_000_000_101
OTHER_GUILD_CHANNEL_ID = 1_200_000_000_000_000_102
OTHER_GUILD_OWNER_ID = 1_200_000_000_000_000_103


def make_guilds() -> list[GuildSpec]:
    """Two guilds: the creative server the tests use, and another for isolation checks."""
    return [
        GuildSpec(
            id=GUILD_ID,
            name="Pixel Lab",
            owner_id=OWNER_ID,
            channels=[
                ChannelSpec(CHANNEL_ID, "creations"),
                ChannelSpec(OTHER_CHANNEL_ID, "chat"),
                ChannelSpec(LOG_CHANNEL_ID, "mod-log"),
            ],
            roles=[
                RoleSpec(MOD_ROLE_ID, "Moderator", Perm.MANAGE_GUILD | Perm.MANAGE_MESSAGES),
                RoleSpec(ARTIST_ROLE_ID, "Artist", 0),
            ],
            members=[
                MemberSpec(OWNER_ID, "owner"),
                MemberSpec(ALICE_ID, "alice"),
                MemberSpec(BOB_ID, "bob", roles=[ARTIST_ROLE_ID]),
                MemberSpec(CAROL_ID, "carol"),
                MemberSpec(MOD_ID, "mod", roles=[MOD_ROLE_ID]),
            ],
        ),
        GuildSpec(
            id=OTHER_GUILD_ID,
            name="Elsewhere",
            owner_id=OTHER_GUILD_OWNER_ID,
            channels=[ChannelSpec(OTHER_GUILD_CHANNEL_ID, "art")],
            roles=[],
            members=[
                MemberSpec(OTHER_GUILD_OWNER_ID, "elsewhere-owner"),
                MemberSpec(ALICE_ID, "alice"),
            ],
        ),
    ]


def settings_for(double: DiscordDouble, api: FakePixelDojo, database: Path) -> Settings:
    """Settings for a bot that talks to the doubles, with fast polling and status edits.

    (Not `test_settings`: pytest would collect that as a test in every module importing it.)"""
    return Settings(
        discord_token=double.token,
        pixeldojo_api_key=api.api_key or "test-key",
        pixeldojo_api_base=api.base_url,
        database_path=database,
        discord_api_base=double.api_base,
        discord_gateway_url=double.gateway_url,
        poll_initial_interval=0.05,
        poll_max_interval=0.2,
        job_timeout=20,
        status_edit_interval=0.1,
        # The doubles have no limit unless a test adds one (whose headers the budget follows):
        # the documented 60/min the bot assumes by default would only slow the suite down.
        pixeldojo_requests_per_minute=60_000.0,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as environment variables, for a `python -m bot` process."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DISCORD_", "PIXELDOJO_", "WEBHOOK_"))
    }
    env.update(
        DISCORD_TOKEN=settings.discord_token,
        PIXELDOJO_API_KEY=settings.pixeldojo_api_key,
        PIXELDOJO_API_BASE=settings.pixeldojo_api_base,
        DATABASE_PATH=str(settings.database_path),
        DISCORD_API_BASE=settings.discord_api_base or "",
        DISCORD_GATEWAY_URL=settings.discord_gateway_url or "",
        POLL_INITIAL_INTERVAL=str(settings.poll_initial_interval),
        POLL_MAX_INTERVAL=str(settings.poll_max_interval),
        JOB_TIMEOUT=str(settings.job_timeout),
        STATUS_EDIT_INTERVAL=str(settings.status_edit_interval),
        PIXELDOJO_REQUESTS_PER_MINUTE=str(settings.pixeldojo_requests_per_minute or ""),
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    if settings.pixeldojo_webhook_url:
        env.update(
            PIXELDOJO_WEBHOOK_URL=settings.pixeldojo_webhook_url,
            WEBHOOK_HOST=settings.webhook_host,
            WEBHOOK_PORT=str(settings.webhook_port),
            WEBHOOK_FALLBACK_POLL=str(settings.webhook_fallback_poll),
        )
    return env


@dataclass
class Harness:
    """The running bot and both doubles, with the steps a member takes."""

    bot: PixelDojoBot
    double: DiscordDouble
    api: FakePixelDojo

    async def imagine(
        self,
        prompt: str = "a lighthouse at dawn",
        *,
        user_id: int = ALICE_ID,
        channel_id: int = CHANNEL_ID,
        guild_id: int = GUILD_ID,
        **options: Any,
    ) -> InteractionRecord:
        """Run `/imagine` and wait for the bot's acknowledgement."""
        record = await self.double.slash(
            "imagine",
            {"prompt": prompt, **options},
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
        )
        await record.wait_for_response(timeout=5)
        return record

    async def command(
        self, name: str, options: dict[str, Any] | None = None, *, user_id: int, **kwargs: Any
    ) -> InteractionRecord:
        """Run any slash command (`"mod limit user"` style names) and wait for its reply."""
        kwargs.setdefault("guild_id", GUILD_ID)
        kwargs.setdefault("channel_id", CHANNEL_ID)
        record = await self.double.slash(name, options or {}, user_id=user_id, **kwargs)
        await record.wait_for_response(timeout=5)
        return record

    async def reply(self, record: InteractionRecord, timeout: float = 10) -> MessageRecord:
        """The bot's first answer with something in it: the response itself, or for a
        deferred one ("thinking…"), the first follow-up."""

        def answer() -> MessageRecord | None:
            if record.followups:
                return record.followups[0]
            original = record.original  # a component's own message when answered with an update
            if (
                original is not None
                and original.interaction_id == record.id
                and not original.loading
                and not original.deleted
            ):
                return original
            return None

        if answer() is None:
            await self.double.wait_for(lambda _event: answer() is not None, timeout)
        found = answer()
        assert found is not None
        return found

    async def result_for(self, job_id: int, timeout: float = 10) -> MessageRecord:
        """The result message of job `job_id` (images attached, footer names the job), once
        the bot has also recorded the job as finished."""
        message = await self.double.wait_for_message(
            lambda m: bool(m.attachments) and footer_has(m, f"Job #{job_id}"), timeout
        )
        await self.finished(job_id, timeout)
        return message

    async def failure_for(self, job_id: int, timeout: float = 10) -> MessageRecord:
        """The status message of job `job_id` once it shows a failure, and the bot has
        recorded the job as finished."""
        message = await self.double.wait_for_message(
            lambda m: footer_has(m, f"Job #{job_id}") and title_of(m).startswith("❌"), timeout
        )
        await self.finished(job_id, timeout)
        return message

    async def generating(self, job_id: int, timeout: float = 10) -> MessageRecord:
        """Job `job_id`'s message once it says the job is generating."""
        return await self.double.wait_for_message(
            lambda m: footer_has(m, f"Job #{job_id}") and title_of(m).startswith("🎨"), timeout
        )

    async def shown_with_images(self, prompt: str, timeout: float = 10) -> MessageRecord:
        """The first message carrying images for `prompt` (for a job whose number the member
        was never shown), once the bot has recorded that job as finished."""
        message = await self.double.wait_for_message(
            lambda m: bool(m.attachments) and m.embeds[0].get("description") == prompt, timeout
        )
        await self.finished(job_id_of(message), timeout)
        return message

    async def finished(self, job_id: int, timeout: float = 10) -> None:
        """Wait until the runner has recorded job `job_id` as posted or failed (and audited
        it). Discord sees a result before the database does: the bot records the post only
        once Discord has answered, so state read right after seeing a message may be stale."""
        await asyncio.wait_for(self.bot.services.runner.wait_finished(job_id), timeout)


def footer_has(message: MessageRecord, text: str) -> bool:
    """Whether one of the message's footers has `text` as a whole " · "-separated part (so
    "Job #1" is not found in "Job #12 · …")."""
    return any(text in footer_parts(e) for e in message.embeds)


def footer_parts(embed: dict[str, Any]) -> list[str]:
    """An embed's footer split at " · " ("Job #3 · Flux Kontext Pro" has two parts)."""
    return ((embed.get("footer") or {}).get("text", "")).split(" · ")


def job_named_by(message: MessageRecord) -> int | None:
    """The job number a status or result message names in its footer, if any."""
    for embed in message.embeds:
        marker = footer_parts(embed)[0]
        if marker.startswith("Job #") and marker.removeprefix("Job #").isdigit():
            return int(marker.removeprefix("Job #"))
    return None


def field_of(message: MessageRecord, name: str) -> str | None:
    """The value of the first embed's field `name` ("Position", "Progress" …), if any."""
    fields = message.embeds[0].get("fields", []) if message.embeds else []
    return next((f["value"] for f in fields if f["name"] == name), None)


def title_of(message: MessageRecord) -> str:
    return message.embeds[0].get("title", "") if message.embeds else ""


def job_id_of(message: MessageRecord) -> int:
    """The job number a status or result message is about."""
    job_id = job_named_by(message)
    if job_id is None:
        raise AssertionError(f"message {message.id} names no job")
    return job_id


async def outcome_text(harness: Harness, record: InteractionRecord) -> str:
    """After `/imagine`: "Job #N" when it started (its public status names it), else the
    member's private answer saying why not."""
    reply = await harness.reply(record)
    if not reply.ephemeral:
        return f"Job #{job_id_of(reply)}"
    return reply.content or ""


async def queued_job_id(harness: Harness, record: InteractionRecord) -> int:
    """The job `/imagine` (or Reroll, Vary) started: its public status is the interaction's own
    response, named by its footer."""
    reply = await harness.reply(record)
    assert not reply.ephemeral, f"refused: {reply.content}"
    return job_id_of(reply)


class BotProcess:
    """`python -m bot` as a real process against the doubles (for crash and restart tests)."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot"],
            # Not the checkout: a developer's .env there must not change the bot under test.
            cwd=self.log_path.parent,
            env={**settings_env(self.settings), "PYTHONPATH": str(REPO_ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as in a crash or a power cut."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def run_until_exit(settings: Settings, cwd: Path) -> tuple[int, str]:
    """`python -m bot` against the doubles until it exits by itself; its code and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=cwd,  # not the checkout, whose .env may exist
        env={**settings_env(settings), "PYTHONPATH": str(REPO_ROOT)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _out, err = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("the bot is still running: a supervisor never sees it fail") from None
    assert process.returncode is not None
    text = err.decode()
    assert "Traceback" not in text and "Unclosed" not in text, text
    return process.returncode, text


async def run_cli(env: dict[str, str], *args: str, cwd: Path) -> tuple[int, str, str]:
    """`python -m bot imagine ...` as a process, while this loop keeps serving the doubles."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "imagine",
        *args,
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


def read_job_state(path: Path, job_id: int) -> tuple[JobState, int | None]:
    """The job's state as another process sees it (read-only: never blocks the bot's writes)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT state, result_message_id FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
    finally:
        conn.close()
    return JobState(row[0]), row[1]


async def final_job_state(
    settings: Settings, job_id: int, timeout: float = 20
) -> tuple[JobState, int | None]:
    """Wait until the bot process has recorded the job as POSTED or FAILED.

    The bot records the post only after Discord answered it, so seeing the message in the
    double says nothing about the database yet. Another process offers no event to wait on,
    so this re-reads the state until it is final, or fails after `timeout`.
    """
    async with asyncio.timeout(timeout):
        while True:
            state, message_id = await asyncio.to_thread(
                read_job_state, settings.database_path, job_id
            )
            if state.is_final:
                return state, message_id
            await asyncio.sleep(0.05)


# -- the runner without Discord ---------------------------------------------------------------

FAST = RunnerSettings(poll_initial_interval=0.02, poll_max_interval=0.05, job_timeout=5)
"""Runner settings that poll the PixelDojo double quickly."""


def request(**overrides: object) -> GenerationRequest:
    """A valid generation request from user 3 in guild 1, with `overrides`."""
    fields: dict[str, object] = dict(
        guild_id=1, channel_id=2, user_id=3, prompt="a red fox", aspect_ratio="1:1", num_outputs=1
    )
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


async def credits_used(db: Database, user_id: int = 3) -> int:
    """What the ledger says `user_id` has used, in every guild and period."""
    row = await db.fetchone(
        "SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE user_id = ?", (user_id,)
    )
    return row[0]


class ManualTime:
    """A clock and a sleep the test moves: a sleeper wakes once `advance` passes its time.
    `waiting` is set by the first sleep; `cancelled` counts sleeps cancelled instead."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.waiting = asyncio.Event()
        self.cancelled = 0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        self.waiting.set()
        try:
            await future
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for when, future in self._sleepers:
            if when <= self.now and not future.done():
                future.set_result(None)
