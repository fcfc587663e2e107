"""Start-up settings: one clear line for a bad setting, secrets never printed."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from bot.logging_setup import RedactingFormatter
from tests.helpers import OWNER_ID, Harness

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.abcdefghijklmnopqrstuvwxyz012345"
GOOD = {"DISCORD_TOKEN": TOKEN, "PIXELDOJO_API_KEY": "pd_live_secret_key_123"}


def test_defaults() -> None:
    settings = load_settings(GOOD)
    assert settings.pixeldojo_api_base == "https://pixeldojo.ai/api/v1"
    assert settings.database_path == Path("data/pixeldojo-bot.sqlite3")
    assert settings.dev_guild_id is None and not settings.sandbox
    assert TOKEN not in repr(settings) and "pd_live_secret_key_123" not in repr(settings)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"DISCORD_TOKEN": ""}, "DISCORD_TOKEN is not set"),
        ({"DISCORD_TOKEN": "short"}, "DISCORD_TOKEN does not look like a bot token"),
        ({"PIXELDOJO_API_KEY": " "}, "PIXELDOJO_API_KEY is not set"),
        ({"PIXELDOJO_API_BASE": "ftp://x"}, "PIXELDOJO_API_BASE must be a URL"),
        ({"DEV_GUILD_ID": "abc"}, "DEV_GUILD_ID must be a Discord ID"),
        ({"POLL_INITIAL_INTERVAL": "fast"}, "POLL_INITIAL_INTERVAL must be a number"),
        ({"POLL_MAX_INTERVAL": "0.2"}, "POLL_MAX_INTERVAL must be at least"),
        ({"JOB_TIMEOUT": "-1"}, "JOB_TIMEOUT must be greater than zero"),
        ({"MAX_CONCURRENT_POLLS": "1.5"}, "MAX_CONCURRENT_POLLS must be a whole number"),
        ({"PIXELDOJO_SANDBOX": "maybe"}, "PIXELDOJO_SANDBOX must be 1 or 0"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of"),
        (
            {"DISCORD_GATEWAY_URL": "http://x"},
            "DISCORD_GATEWAY_URL must be a URL starting with wss://",
        ),
        ({"PIXELDOJO_WEBHOOK_URL": "bot.example.com"}, "PIXELDOJO_WEBHOOK_URL must be a URL"),
        ({"PIXELDOJO_WEBHOOK_URL": "https://x/?a=1"}, "PIXELDOJO_WEBHOOK_URL must be a base"),
        ({"WEBHOOK_PORT": "80000"}, "WEBHOOK_PORT must be a port number"),
        ({"WEBHOOK_FALLBACK_POLL": "0"}, "WEBHOOK_FALLBACK_POLL must be greater than zero"),
    ],
)
def test_bad_settings_name_the_setting(changes: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**GOOD, **changes})
    assert named in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_webhooks_are_off_unless_a_public_url_is_set() -> None:
    assert load_settings(GOOD).pixeldojo_webhook_url is None
    settings = load_settings(
        {**GOOD, "PIXELDOJO_WEBHOOK_URL": "https://bot.example.com/", "WEBHOOK_PORT": "9000"}
    )
    assert settings.pixeldojo_webhook_url == "https://bot.example.com"
    assert (settings.webhook_host, settings.webhook_port) == ("127.0.0.1", 9000)


def test_sandbox_needs_no_api_key() -> None:
    settings = load_settings({"DISCORD_TOKEN": TOKEN, "PIXELDOJO_SANDBOX": "1"})
    assert settings.sandbox


def test_process_exits_with_one_line_for_bad_config(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,  # no .env here
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(Path(__file__).parent.parent),
            "DISCORD_TOKEN": TOKEN,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "pixeldojo-bot: configuration error: PIXELDOJO_API_KEY is not set: add it to your "
        "environment or .env file (or set PIXELDOJO_SANDBOX=1 to try the bot without one)"
    ]


def test_dotenv_in_the_working_directory_is_read_and_the_environment_wins(
    tmp_path: Path,
) -> None:
    # The module is imported from the checkout, not from tmp_path, as after `pip install .`.
    (tmp_path / ".env").write_text(
        f"DISCORD_TOKEN={TOKEN}\n"
        "PIXELDOJO_API_KEY=pd_live_secret_key_123\n"
        "POLL_INITIAL_INTERVAL=2\n"
        "POLL_MAX_INTERVAL=10\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(Path(__file__).parent.parent),
            "POLL_MAX_INTERVAL": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Token and key came from the file; POLL_MAX_INTERVAL=1 from the environment beat its 10.
    assert done.stderr.strip().splitlines() == [
        "pixeldojo-bot: configuration error: "
        "POLL_MAX_INTERVAL must be at least POLL_INITIAL_INTERVAL"
    ]
    assert done.returncode == 2


def test_secrets_are_redacted_from_log_lines_and_tracebacks() -> None:
    formatter = RedactingFormatter([TOKEN, "pd_live_secret_key_123"])
    try:
        raise RuntimeError(f"auth failed for Bearer pd_live_secret_key_123 / {TOKEN}")
    except RuntimeError:
        record = logging.LogRecord(
            "bot", logging.ERROR, __file__, 1, "token was %s", (TOKEN,), sys.exc_info()
        )
    text = formatter.format(record)
    assert TOKEN not in text and "pd_live_secret_key_123" not in text
    assert "token was [redacted]" in text and "Bearer [redacted] / [redacted]" in text


INTERACTION_TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5OmFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6"


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        (f"https://discord.com/api/v10/webhooks/1180/{INTERACTION_TOKEN}", "/webhooks/1180/"),
        (
            f"https://discord.com/api/v10/webhooks/1180/{INTERACTION_TOKEN}/messages/@original",
            "/webhooks/1180/[redacted]/messages/@original",
        ),
        (
            f"https://discord.com/api/v10/interactions/99/{INTERACTION_TOKEN}/callback",
            "/interactions/99/[redacted]/callback",
        ),
        (f"https://discord.com/api/v10/webhooks/1180/{'x' * 68}", "/webhooks/1180/[redacted]"),
        (f"major parameters '1180+{INTERACTION_TOKEN}'", "major parameters '1180+[redacted]'"),
    ],
)
def test_interaction_and_webhook_tokens_are_redacted(url: str, kept: str) -> None:
    record = logging.LogRecord(
        "discord.webhook.async_", logging.DEBUG, __file__, 1, "POST %s -> %s", (url, 204), None
    )
    text = RedactingFormatter([]).format(record)
    assert INTERACTION_TOKEN not in text and "x" * 68 not in text
    assert kept in text


async def test_a_debug_log_of_discord_traffic_shows_no_interaction_token(
    harness: Harness,
) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(RedactingFormatter([harness.double.token]))
    discord_log = logging.getLogger("discord")
    level = discord_log.level
    discord_log.addHandler(handler)
    discord_log.setLevel(logging.DEBUG)
    try:
        record = await harness.command("mod audit", user_id=OWNER_ID)
        # The bot logs the deferral's callback URL before it sends the follow-up.
        await harness.reply(record)
    finally:
        discord_log.removeHandler(handler)
        discord_log.setLevel(level)
    text = out.getvalue()
    assert "INTERACTION_CREATE" in text  # the gateway payload, token field included
    assert f"/interactions/{record.id}/[redacted]/callback" in text
    assert record.token not in text and harness.double.token not in text


def test_request_budget_setting() -> None:
    assert load_settings(GOOD).pixeldojo_requests_per_minute is None
    settings = load_settings({**GOOD, "PIXELDOJO_REQUESTS_PER_MINUTE": "60"})
    assert settings.pixeldojo_requests_per_minute == 60.0
    with pytest.raises(ConfigError, match="PIXELDOJO_REQUESTS_PER_MINUTE must be a number"):
        load_settings({**GOOD, "PIXELDOJO_REQUESTS_PER_MINUTE": "lots"})
