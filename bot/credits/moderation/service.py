"""Moderator actions on a guild's credit rules, each written with its audit entry atomically.

Every action takes the guild and the acting moderator, validates its input (raising
`InvalidSetting` with a message for the moderator), writes the change and one `audit_log` row in
one transaction, and returns the `AuditEntry` for the cog to post to the log channel. Nothing
here knows about Discord beyond mention markup (`<@id>`, `<@&id>`, `<#id>`) in summaries.
"""

from __future__ import annotations

from bot.credits.moderation.activity import ActivityRecords
from bot.credits.moderation.allowances import AllowanceActions
from bot.credits.moderation.bans import BanActions
from bot.credits.moderation.channels import ChannelActions
from bot.credits.moderation.settings import SettingActions
from bot.credits.moderation.terms import BlocklistActions


class ModerationService(
    AllowanceActions,
    BanActions,
    ChannelActions,
    BlocklistActions,
    SettingActions,
    ActivityRecords,
):
    """What moderators can change, and what they can read back.

    Each base holds one concern: allowances and credits, bans, channels, the blocklist, the
    single-value settings, the audit log and report. They share only `ModerationBase` (the
    database, the limits, the clock and how an action is audited).
    """
