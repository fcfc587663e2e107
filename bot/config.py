"""Settings read from the environment (and a `.env` file), validated once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bot.generation.runner import RunnerSettings

DEFAULT_API_BASE = "https://pixeldojo.ai/api/v1"
DEFAULT_DATABASE_PATH = "data/pixeldojo-bot.sqlite3"
DEFAULT_HEARTBEAT_INTERVAL = 20.0
_RUNNER = RunnerSettings()
"""The runner's defaults, which are also the environment's (one place to change them)."""


class ConfigError(Exception):
    """A setting is missing or malformed. The message names the setting, never its value."""


@dataclass(frozen=True)
class Settings:
    """Everything the bot reads from its environment. Secrets are hidden from `repr`."""

    discord_token: str = field(repr=False)
    pixeldojo_api_key: str = field(repr=False)
    pixeldojo_api_base: str = DEFAULT_API_BASE
    database_path: Path = Path(DEFAULT_DATABASE_PATH)
    dev_guild_id: int | None = None
    operator_guild_id: int | None = None
    """The one guild whose moderators see the PixelDojo account's balance in `/mod report`."""
    discord_api_base: str | None = None
    discord_gateway_url: str | None = None
    sandbox: bool = False
    log_level: str = "INFO"
    poll_initial_interval: float = _RUNNER.poll_initial_interval
    poll_max_interval: float = _RUNNER.poll_max_interval
    job_timeout: float = _RUNNER.job_timeout
    status_edit_interval: float = 3.0
    max_concurrent_submits: int = _RUNNER.max_concurrent_submits
    max_concurrent_polls: int = _RUNNER.max_concurrent_polls
    pixeldojo_requests_per_minute: float | None = None
    pixeldojo_webhook_url: str | None = None
    """The public base URL PixelDojo calls back on (webhooks); None: webhooks off, poll only."""
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8080
    webhook_fallback_poll: float = 30.0
    heartbeat_path: Path | None = None
    """Where the health heartbeat is written; None: next to the database."""
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL

    @property
    def heartbeat_file(self) -> Path:
        """The heartbeat file: `heartbeat_path`, or the database's name with `.heartbeat`."""
        return self.heartbeat_path or default_heartbeat_path(self.database_path)


def default_heartbeat_path(database_path: Path) -> Path:
    """`data/pixeldojo-bot.sqlite3` -> `data/pixeldojo-bot.heartbeat`."""
    return database_path.with_suffix(".heartbeat")


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _require(env: Mapping[str, str], name: str) -> str:
    value = _get(env, name)
    if value is None:
        raise ConfigError(f"{name} is not set: add it to your environment or .env file")
    return value


def _url(
    env: Mapping[str, str], name: str, default: str | None, schemes: tuple[str, ...]
) -> str | None:
    value = _get(env, name) or default
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(
            f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}"
        )
    return value.rstrip("/")


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds") from None
    if not value > 0:
        raise ConfigError(f"{name} must be greater than zero")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number") from None
    if value <= 0:
        raise ConfigError(f"{name} must be greater than zero")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise ConfigError(f"{name} must be a port number from 0 to 65535")
    return int(raw)


def _webhook_base(env: Mapping[str, str]) -> str | None:
    """The public base URL callbacks are sent to; each job's path is appended to it."""
    value = _url(env, "PIXELDOJO_WEBHOOK_URL", None, ("https", "http"))
    if value is not None and (urlsplit(value).query or urlsplit(value).fragment):
        raise ConfigError("PIXELDOJO_WEBHOOK_URL must be a base URL, without ? or #")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (_get(env, name) or "0").lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be 1 or 0")


def _snowflake(env: Mapping[str, str], name: str) -> int | None:
    raw = _get(env, name)
    if raw is None:
        return None
    if not raw.isdigit() or not 15 <= len(raw) <= 20:
        raise ConfigError(f"{name} must be a Discord ID (a 17-20 digit number)")
    return int(raw)


_TOKEN_SHAPE_MIN_LENGTH = 20


def _environment() -> Mapping[str, str]:
    from dotenv import load_dotenv

    # The working directory's .env, not one found from this module's location (which is
    # site-packages after `pip install .`). Variables already set in the environment win.
    load_dotenv(Path.cwd() / ".env", override=False)
    return os.environ


def _heartbeat_path(env: Mapping[str, str]) -> Path | None:
    raw = _get(env, "HEARTBEAT_PATH")
    return Path(raw) if raw else None


def heartbeat_file(env: Mapping[str, str] | None = None) -> Path:
    """The heartbeat file the bot writes, from `HEARTBEAT_PATH` or `DATABASE_PATH` alone (for
    `python -m bot --check`, which needs no secret)."""
    env = _environment() if env is None else env
    return _heartbeat_path(env) or default_heartbeat_path(
        Path(_get(env, "DATABASE_PATH") or DEFAULT_DATABASE_PATH)
    )


def load_settings(
    env: Mapping[str, str] | None = None, *, require_discord: bool = True
) -> Settings:
    """Build `Settings` from `env` (default: `os.environ` after loading `./.env`).

    Raises `ConfigError` with a one-line message naming the first bad setting.
    `require_discord=False` is for the command-line generator, which needs no bot token.
    """
    env = _environment() if env is None else env
    sandbox = _flag(env, "PIXELDOJO_SANDBOX")
    token = (
        _require(env, "DISCORD_TOKEN") if require_discord else (_get(env, "DISCORD_TOKEN") or "")
    )
    if require_discord and (
        len(token) < _TOKEN_SHAPE_MIN_LENGTH or any(c.isspace() for c in token)
    ):
        raise ConfigError(
            "DISCORD_TOKEN does not look like a bot token (copy it from the Developer Portal)"
        )
    api_key = _get(env, "PIXELDOJO_API_KEY") or ("sandbox" if sandbox else None)
    if api_key is None:
        raise ConfigError(
            "PIXELDOJO_API_KEY is not set: add it to your environment or .env file "
            "(or set PIXELDOJO_SANDBOX=1 to try the bot without one)"
        )

    log_level = (_get(env, "LOG_LEVEL") or "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR")

    poll_initial = _positive_float(env, "POLL_INITIAL_INTERVAL", _RUNNER.poll_initial_interval)
    poll_max = _positive_float(env, "POLL_MAX_INTERVAL", _RUNNER.poll_max_interval)
    if poll_max < poll_initial:
        raise ConfigError("POLL_MAX_INTERVAL must be at least POLL_INITIAL_INTERVAL")

    return Settings(
        discord_token=token,
        pixeldojo_api_key=api_key,
        pixeldojo_api_base=_url(env, "PIXELDOJO_API_BASE", DEFAULT_API_BASE, ("https", "http"))
        or "",
        database_path=Path(_get(env, "DATABASE_PATH") or DEFAULT_DATABASE_PATH),
        dev_guild_id=_snowflake(env, "DEV_GUILD_ID"),
        operator_guild_id=_snowflake(env, "OPERATOR_GUILD_ID"),
        discord_api_base=_url(env, "DISCORD_API_BASE", None, ("https", "http")),
        discord_gateway_url=_url(env, "DISCORD_GATEWAY_URL", None, ("wss", "ws")),
        sandbox=sandbox,
        log_level=log_level,
        poll_initial_interval=poll_initial,
        poll_max_interval=poll_max,
        job_timeout=_positive_float(env, "JOB_TIMEOUT", _RUNNER.job_timeout),
        status_edit_interval=_positive_float(env, "STATUS_EDIT_INTERVAL", 3.0),
        max_concurrent_submits=_positive_int(
            env, "MAX_CONCURRENT_SUBMITS", _RUNNER.max_concurrent_submits
        ),
        max_concurrent_polls=_positive_int(
            env, "MAX_CONCURRENT_POLLS", _RUNNER.max_concurrent_polls
        ),
        pixeldojo_requests_per_minute=(
            _positive_float(env, "PIXELDOJO_REQUESTS_PER_MINUTE", 1.0)
            if _get(env, "PIXELDOJO_REQUESTS_PER_MINUTE")
            else None
        ),
        pixeldojo_webhook_url=_webhook_base(env),
        webhook_host=_get(env, "WEBHOOK_HOST") or "127.0.0.1",
        webhook_port=_port(env, "WEBHOOK_PORT", 8080),
        webhook_fallback_poll=_positive_float(env, "WEBHOOK_FALLBACK_POLL", 30.0),
        heartbeat_path=_heartbeat_path(env),
        heartbeat_interval=_positive_float(env, "HEARTBEAT_INTERVAL", DEFAULT_HEARTBEAT_INTERVAL),
    )
