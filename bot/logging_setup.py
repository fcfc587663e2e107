"""Logging for operators: one line per event, and secrets scrubbed from every line."""

from __future__ import annotations

import logging
from collections.abc import Iterable

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then replaces every configured secret (tracebacks included)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__(_FORMAT, "%Y-%m-%d %H:%M:%S")
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text


def setup_logging(level: str, secrets: Iterable[str]) -> None:
    """Log to stderr; discord.py and httpx stay at WARNING unless the level is DEBUG."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if level != "DEBUG":
        for noisy in ("discord", "httpx", "httpcore", "aiohttp.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
