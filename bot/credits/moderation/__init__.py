"""Moderator actions on a guild's credit rules, and what moderators read back."""

from bot.credits.moderation._base import REASON_MAX_LENGTH, InvalidSetting
from bot.credits.moderation.activity import AUDIT_PAGE_MAX
from bot.credits.moderation.allowances import ALLOWANCE_MAX, GRANT_MAX
from bot.credits.moderation.bans import BAN_MAX_SECONDS, BAN_MIN_SECONDS
from bot.credits.moderation.service import ModerationService
from bot.credits.moderation.settings import (
    COOLDOWN_MAX,
    MAX_CONCURRENT_MAX,
    MAX_QUEUED_MAX,
    SPEND_CAP_MAX,
)
from bot.credits.report import UsageReport
from bot.storage.audit import AuditEntry
from bot.storage.rules import Ban, BlockedTerm

__all__ = [
    "ALLOWANCE_MAX",
    "AUDIT_PAGE_MAX",
    "BAN_MAX_SECONDS",
    "BAN_MIN_SECONDS",
    "COOLDOWN_MAX",
    "GRANT_MAX",
    "MAX_CONCURRENT_MAX",
    "MAX_QUEUED_MAX",
    "REASON_MAX_LENGTH",
    "SPEND_CAP_MAX",
    "AuditEntry",
    "Ban",
    "BlockedTerm",
    "InvalidSetting",
    "ModerationService",
    "UsageReport",
]
