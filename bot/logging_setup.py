"""Logging for operators: one line per event, and secrets scrubbed from every line."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# Interaction tokens are per-interaction secrets (anyone holding one may answer, edit or delete
# as the bot for 15 minutes), so no fixed list can name them. discord.py logs them inside URLs
# (/webhooks/{app}/{token}, /interactions/{id}/{token}/callback) at DEBUG, and in 429
# warnings; Discord's tokens also start with base64 "interaction:" wherever they appear.
_TOKEN_IN_PATH = re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/?#\s'\"]+")
_INTERACTION_TOKEN = re.compile(r"aW50ZXJhY3Rpb246[A-Za-z0-9_\-.=]+")


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then replaces every configured secret and every interaction or
    webhook token (tracebacks included)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__(_FORMAT, "%Y-%m-%d %H:%M:%S")
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        text = _TOKEN_IN_PATH.sub(r"\1[redacted]", text)
        return _INTERACTION_TOKEN.sub("[redacted]", text)


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
