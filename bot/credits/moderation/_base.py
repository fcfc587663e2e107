"""What every moderator action shares: input checks, wording, and the audit entry it writes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bot.credits.admission import Limits
from bot.storage import SyncConnection, audit
from bot.storage.audit import AuditEntry
from bot.storage.database import Database
from bot.storage.guild_settings import GuildSettings

REASON_MAX_LENGTH = 200


class InvalidSetting(ValueError):
    """A moderator's input cannot be applied; the message says why and is shown as is."""


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def per_period(allowance: int | None, settings: GuildSettings) -> str:
    if allowance is None:
        return "unlimited"
    return f"{plural(allowance, 'credit')} {settings.period.per}"


def duration(seconds: int) -> str:
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            return plural(seconds // size, unit)
    return plural(seconds, "second")


def check_range(value: int, low: int, high: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidSetting(f"{what} must be a whole number from {low} to {high:,}.")


def check_id(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidSetting(f"That is not a valid {what}.")


def check_reason(reason: str | None) -> str | None:
    """A reason or note squeezed to one line; None when blank."""
    if reason is None or not reason.strip():
        return None
    reason = " ".join(reason.split())
    if len(reason) > REASON_MAX_LENGTH:
        raise InvalidSetting(f"Keep the reason under {REASON_MAX_LENGTH} characters.")
    return reason


class ModerationBase:
    """The services every group of actions uses, and the one way an action is audited."""

    def __init__(
        self, db: Database, limits: Limits, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.limits = limits
        self.clock = clock

    def _audit(
        self,
        conn: SyncConnection,
        guild_id: int,
        actor_id: int | None,
        action: str,
        target_id: int | None,
        details: dict[str, Any],
        summary: str,
    ) -> AuditEntry:
        """Write the action's audit entry inside the action's transaction."""
        return audit.write(
            conn,
            guild_id=guild_id,
            actor_id=actor_id,
            action=action,
            target_id=target_id,
            details=details,
            summary=summary,
            now=self.clock(),
        )
