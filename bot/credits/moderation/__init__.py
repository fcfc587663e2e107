"""Moderator actions on a guild's credit rules, and what moderators read back."""

from bot.credits.moderation.service import (
    ALLOWANCE_MAX,
    AUDIT_PAGE_MAX,
    BAN_MAX_SECONDS,
    BAN_MIN_SECONDS,
    COOLDOWN_MAX,
    GRANT_MAX,
    MAX_CONCURRENT_MAX,
    REASON_MAX_LENGTH,
    SPEND_CAP_MAX,
    AuditEntry,
    Ban,
    BlockedTerm,
    InvalidSetting,
    ModerationService,
    UsageReport,
)

__all__ = [
    "ALLOWANCE_MAX",
    "AUDIT_PAGE_MAX",
    "BAN_MAX_SECONDS",
    "BAN_MIN_SECONDS",
    "COOLDOWN_MAX",
    "GRANT_MAX",
    "MAX_CONCURRENT_MAX",
    "REASON_MAX_LENGTH",
    "SPEND_CAP_MAX",
    "AuditEntry",
    "Ban",
    "BlockedTerm",
    "InvalidSetting",
    "ModerationService",
    "UsageReport",
]
