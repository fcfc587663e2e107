"""For operators: the health signal (heartbeat + `python -m bot --check`), the start-up log, and
the Docker files."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from bot.app import PixelDojoBot
from bot.config import ConfigError, Settings, heartbeat_file, load_settings
from bot.health import STALE_AFTER_BEATS, Beat, Heartbeat, Verdict, check, keep_beating
from tests.doubles.discord_double import DiscordDouble, run_bot_against
from tests.helpers import REPO_ROOT

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.abcdefghijklmnopqrstuvwxyz012345"
START = 1_750_000_000.0


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def beats_of(path: Path, interval: float = 20.0) -> tuple[Heartbeat, Clock]:
    clock = Clock()
    return Heartbeat(path, interval, clock=clock), clock


# -- the heartbeat and the check ---------------------------------------------------------------


def test_a_fresh_healthy_heartbeat_passes_and_a_stale_one_fails(tmp_path: Path) -> None:
    heartbeat, _ = beats_of(tmp_path / "bot.heartbeat")
    heartbeat.beat(None)
    assert check(heartbeat.path, now=START + 5) == Verdict(True, "ok: last heartbeat 5.0 s ago")
    verdict = check(heartbeat.path, now=START + 20 * STALE_AFTER_BEATS + 1)
    assert not verdict.healthy
    assert (
        verdict.line == "last heartbeat 61 s ago (expected every 20 s): the bot is stopped or stuck"
    )


def test_a_problem_fails_the_check_once_it_lasts_longer_than_three_beats(tmp_path: Path) -> None:
    heartbeat, clock = beats_of(tmp_path / "bot.heartbeat")
    heartbeat.beat(None)
    clock.now += 20
    heartbeat.beat("gateway shard(s) 1 disconnected")  # a reconnect: not yet a failure
    verdict = check(heartbeat.path, now=clock.now + 1)
    assert verdict.healthy and verdict.line == "ok, but for 21 s: gateway shard(s) 1 disconnected"
    for _ in range(3):
        clock.now += 20
        heartbeat.beat("gateway shard(s) 1 disconnected")
    verdict = check(heartbeat.path, now=clock.now + 1)
    assert not verdict.healthy
    assert verdict.line == "unhealthy for 81 s: gateway shard(s) 1 disconnected"
    clock.now += 20
    heartbeat.beat(None)
    assert check(heartbeat.path, now=clock.now).healthy


def test_never_healthy_since_start_fails_with_the_reason(tmp_path: Path) -> None:
    heartbeat, _ = beats_of(tmp_path / "bot.heartbeat")
    heartbeat.beat("not connected to Discord yet")
    verdict = check(heartbeat.path, now=START + 1)
    assert verdict == Verdict(False, "not healthy since it started: not connected to Discord yet")


def test_no_heartbeat_file_means_not_running(tmp_path: Path) -> None:
    verdict = check(tmp_path / "bot.heartbeat", now=START)
    assert not verdict.healthy
    assert (
        verdict.line == f"no heartbeat file at {tmp_path / 'bot.heartbeat'}: the bot is not running"
    )


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json",
        "[]",
        '{"at": "now", "interval": 20, "healthy_at": null, "problem": null, "pid": 1}',
        '{"at": NaN, "interval": 20, "healthy_at": null, "problem": null, "pid": 1}',
        '{"at": 1750000000, "interval": 0, "healthy_at": null, "problem": null, "pid": 1}',
        '{"at": 1750000000, "interval": true, "healthy_at": null, "problem": null, "pid": 1}',
        '{"at": 1750000000, "interval": 20, "healthy_at": null, "problem": 7, "pid": 1}',
        '{"at": 1750000000, "interval": 20, "healthy_at": null, "problem": null}',
    ],
)
def test_a_file_the_bot_did_not_write_is_not_a_heartbeat(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bot.heartbeat"
    path.write_text(content)
    verdict = check(path, now=START)
    assert verdict == Verdict(False, f"{path} is not a heartbeat file the bot wrote")


def test_a_problem_is_reported_on_one_line_whatever_was_written(tmp_path: Path) -> None:
    path = tmp_path / "bot.heartbeat"
    beat = {"at": START, "interval": 20, "healthy_at": None, "pid": 1}
    path.write_text(json.dumps({**beat, "problem": "line one\nline two" + "x" * 500}))
    line = check(path, now=START).line
    assert "\n" not in line and line.startswith("not healthy since it started: line one line two")
    assert len(line) < 260


def test_a_heartbeat_that_cannot_be_written_is_logged_once_and_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("")
    heartbeat, _ = beats_of(tmp_path / "a-file" / "bot.heartbeat")
    for _ in range(3):
        heartbeat.beat(None)
    warnings = [r for r in caplog.records if "cannot write the heartbeat" in r.getMessage()]
    assert len(warnings) == 1
    assert not check(heartbeat.path, now=START).healthy


async def test_keep_beating_writes_what_the_probe_says_every_interval(tmp_path: Path) -> None:
    heartbeat, clock = beats_of(tmp_path / "bot.heartbeat", interval=15)
    problems = iter([None, "the job loops have stopped", None])
    slept: list[float] = []
    written: list[Beat] = []
    heartbeat.on_beat = written.append

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise asyncio.CancelledError
        clock.now += seconds

    with pytest.raises(asyncio.CancelledError):
        await keep_beating(heartbeat, lambda: next(problems), sleep=sleep)
    assert slept == [15, 15, 15]
    assert [(b.at - START, b.problem) for b in written] == [
        (0, None),
        (15, "the job loops have stopped"),
        (30, None),
    ]
    assert [b.healthy_at for b in written] == [START, START, START + 30]
    assert json.loads(heartbeat.path.read_text())["healthy_at"] == START + 30


def test_heartbeat_path_defaults_next_to_the_database() -> None:
    good = {"DISCORD_TOKEN": TOKEN, "PIXELDOJO_API_KEY": "pd_live_secret_key_123"}
    settings = load_settings(good)
    assert settings.heartbeat_file == Path("data/pixeldojo-bot.heartbeat")
    assert settings.heartbeat_interval == 20.0
    moved = load_settings({**good, "DATABASE_PATH": "/data/bot.sqlite3"})
    assert moved.heartbeat_file == Path("/data/bot.heartbeat")
    chosen = load_settings({**good, "HEARTBEAT_PATH": "/run/bot/beat", "HEARTBEAT_INTERVAL": "5"})
    assert (chosen.heartbeat_file, chosen.heartbeat_interval) == (Path("/run/bot/beat"), 5.0)
    # The check finds the same file with neither secret set.
    assert heartbeat_file({"DATABASE_PATH": "/data/bot.sqlite3"}) == Path("/data/bot.heartbeat")
    assert heartbeat_file({"HEARTBEAT_PATH": "/run/bot/beat"}) == Path("/run/bot/beat")
    with pytest.raises(ConfigError, match="HEARTBEAT_INTERVAL must be greater than zero"):
        load_settings({**good, "HEARTBEAT_INTERVAL": "0"})


def run_check(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "--check"],
        cwd=cwd,  # no .env here
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_check_command_exits_0_when_fresh_and_1_with_one_line_otherwise(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bot.heartbeat"
    env = {"DATABASE_PATH": str(tmp_path / "bot.sqlite3")}  # no token, no API key
    missing = run_check(env, tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        f"pixeldojo-bot: no heartbeat file at {path}: the bot is not running"
    ]

    # Written with today's unix time and a long interval: fresh for the next hour at least.
    beat = {"interval": 3600, "problem": None, "pid": 1}
    path.write_text(json.dumps({**beat, "at": time.time(), "healthy_at": time.time()}))
    fresh = run_check(env, tmp_path)
    assert fresh.returncode == 0 and fresh.stderr == ""
    assert re.fullmatch(r"pixeldojo-bot: ok: last heartbeat \d+\.\d s ago\n", fresh.stdout)

    long_ago = time.time() - 24 * 3600
    path.write_text(json.dumps({**beat, "at": long_ago, "healthy_at": long_ago}))
    stale = run_check(env, tmp_path)
    assert stale.returncode == 1 and stale.stdout == ""
    [line] = stale.stderr.splitlines()
    assert line.endswith("(expected every 3600 s): the bot is stopped or stuck")


# -- the running bot -----------------------------------------------------------------------------


async def next_beat(beats: asyncio.Queue[Beat], wanted: Callable[[Beat], bool]) -> Beat:
    """The next beat that is `wanted` (earlier ones may still say something else)."""
    async with asyncio.timeout(10):
        while not wanted(beat := await beats.get()):
            pass
    return beat


async def test_the_running_bot_beats_healthy_reports_dead_job_loops_and_removes_the_file(
    double: DiscordDouble, settings: Settings
) -> None:
    bot = PixelDojoBot(replace(settings, heartbeat_interval=0.05), guild_ready_timeout=0.1)
    path = settings.database_path.with_suffix(".heartbeat")
    beats: asyncio.Queue[Beat] = asyncio.Queue()
    async with run_bot_against(double, bot):
        bot.heartbeat.on_beat = beats.put_nowait
        healthy = await next_beat(beats, lambda b: b.problem is None)
        assert bot.heartbeat.path == path
        assert check(path, now=healthy.at) == Verdict(True, "ok: last heartbeat 0.0 s ago")

        await bot.services.runner.stop()  # as if the job loops had died
        limit = STALE_AFTER_BEATS * 0.05
        stopped = await next_beat(
            beats,
            lambda b: b.problem is not None and b.at - (b.healthy_at or 0) > limit,
        )
        verdict = check(path, now=stopped.at)
        assert not verdict.healthy
        assert re.fullmatch(r"unhealthy for \d\.\d s: the job loops have stopped", verdict.line)
        await bot.services.runner.start()
        await next_beat(beats, lambda b: b.problem is None)
    assert not path.exists(), "a bot that shut down leaves no heartbeat behind"
    assert not check(path, now=time.time()).healthy


class Lines(logging.Handler):
    """Every log line, formatted without redaction; `wait_for` a line by what it contains."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.changed.set()

    async def wait_for(self, fragment: str) -> str:
        async with asyncio.timeout(10):
            while True:
                found = [line for line in self.lines if fragment in line]
                if found:
                    return found[0]
                self.changed.clear()
                await self.changed.wait()


async def test_start_up_logs_shards_guilds_and_limits_and_no_secret(
    double: DiscordDouble, settings: Settings
) -> None:
    lines = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(lines)
    root.setLevel(logging.DEBUG)
    try:
        bot = PixelDojoBot(replace(settings, job_timeout=120), guild_ready_timeout=0.1)
        async with run_bot_against(double, bot):
            connected = await lines.wait_for("logged in as")
            limits = await lines.wait_for("limits:")
    finally:
        root.removeHandler(lines)
        root.setLevel(level)
    assert "on 1 shard(s) [0] of 1, in 2 guild(s) (shard 0: 2)" in connected
    assert "PixelDojo requests at most 60000/min (PIXELDOJO_REQUESTS_PER_MINUTE)" in limits
    assert "per member 2 at once and 5 queued by default" in limits
    assert "webhooks off (polling)" in limits and "job timeout 120 s" in limits
    text = "\n".join(lines.lines)
    assert settings.discord_token not in text and settings.pixeldojo_api_key not in text


# -- Docker ----------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments left out."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    logical = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_the_dockerfile_runs_the_installed_bot_as_a_user_with_data_and_a_health_check() -> None:
    instructions = dockerfile_instructions()
    words = [word for word, _ in instructions]
    args = dict(reversed(instructions))  # the first of each instruction
    last = {word: rest for word, rest in instructions}
    assert re.fullmatch(r"python:3\.1[12]-slim", args["FROM"])
    assert any(w == "RUN" and "pip install ." in rest for w, rest in instructions)
    assert "DATABASE_PATH=/data/" in " ".join(r for w, r in instructions if w == "ENV")
    assert json.loads(last["VOLUME"]) == ["/data"]
    # A non-root user for everything after the installation, the bot itself included.
    user = last["USER"]
    assert user not in ("root", "0", "") and words.index("USER") > words.index("RUN")
    assert words.index("USER") < words.index("CMD")
    healthcheck = last["HEALTHCHECK"]
    assert re.search(r'CMD \["pixeldojo-bot", "--check"\]$', healthcheck), healthcheck
    assert json.loads(last["CMD"]) == ["pixeldojo-bot"]
    ignored = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored and "!.env" not in ignored  # secrets never enter the image


def test_compose_file_keeps_data_in_a_named_volume_and_restarts_unless_stopped() -> None:
    # No YAML parser is a dependency: check the structure by indentation.
    text = (REPO_ROOT / "compose.yaml").read_text()
    lines = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "\t" not in text
    top = [line for line in lines if not line.startswith(" ")]
    assert top == ["services:", "volumes:"]
    service = lines[lines.index("services:") + 1 : lines.index("volumes:")]
    assert service[0] == "  bot:"
    keys = {
        line.strip().split(":", 1)[0]: line.split(":", 1)[1].strip()
        for line in service
        if re.match(r"    \S", line)
    }
    assert keys["env_file"] == ".env"
    assert keys["restart"] == "unless-stopped"
    assert "      - bot-data:/data" in lines
    assert "DATABASE_PATH: /data/" in text
    volumes = lines[lines.index("volumes:") + 1 :]
    assert volumes == ["  bot-data:"]
