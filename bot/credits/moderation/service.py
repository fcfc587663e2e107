"""Moderator actions on a guild's credit rules, each written with its audit entry atomically.

Every action takes the guild and the acting moderator, validates its input (raising
`InvalidSetting` with a message for the moderator), writes the change and one `audit_log` row in
one transaction, and returns the `AuditEntry` for the cog to post to the log channel. Nothing
here knows about Discord beyond mention markup (`<@id>`, `<@&id>`, `<#id>`) in summaries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from bot.credits.admission import Limits
from bot.credits.blocklist import (
    InvalidTerm,
    check_regex_budget,
    clean_plain_term,
    clean_regex_term,
    normalize,
)
from bot.credits.periods import Period, discord_time, period_start
from bot.credits.report import UsageReport, build_usage_report
from bot.generation.models import MAX_OUTPUTS
from bot.safe_text import escape_member_text
from bot.storage import Connection, audit, guild_settings, ledger, rules
from bot.storage.audit import AuditEntry
from bot.storage.database import Database
from bot.storage.guild_settings import GuildSettings
from bot.storage.ledger import LedgerKind
from bot.storage.rules import Ban, BlockedTerm

__all__ = [
    "AuditEntry",
    "Ban",
    "BlockedTerm",
    "InvalidSetting",
    "ModerationService",
    "UsageReport",
]

ALLOWANCE_MAX = 1_000_000
GRANT_MAX = 10_000
MAX_CONCURRENT_MAX = 10
COOLDOWN_MAX = 86_400
SPEND_CAP_MAX = 10_000_000
BAN_MIN_SECONDS = 60
BAN_MAX_SECONDS = 10 * 366 * 86_400
REASON_MAX_LENGTH = 200
AUDIT_PAGE_MAX = 100


class InvalidSetting(ValueError):
    """A moderator's input cannot be applied; the message says why and is shown as is."""


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _amount(allowance: int | None, settings: GuildSettings) -> str:
    if allowance is None:
        return "unlimited"
    return f"{_plural(allowance, 'credit')} {settings.period.per}"


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            return _plural(seconds // size, unit)
    return _plural(seconds, "second")


def _check_range(value: int, low: int, high: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidSetting(f"{what} must be a whole number from {low} to {high:,}.")


def _check_id(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidSetting(f"That is not a valid {what}.")


def _check_allowance(allowance: int | None) -> None:
    if allowance is not None:
        _check_range(allowance, 0, ALLOWANCE_MAX, "An allowance")


class ModerationService:
    """What moderators can change, and what they can read back."""

    def __init__(
        self, db: Database, limits: Limits, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.limits = limits
        self.clock = clock

    # -- reading -------------------------------------------------------------------------

    async def is_moderator(
        self, guild_id: int, role_ids: Sequence[int], has_manage_guild: bool
    ) -> bool:
        """Manage Server, or the guild's configured moderator role."""
        if has_manage_guild:
            return True
        settings = await self.get_settings(guild_id)
        return settings.moderator_role_id is not None and settings.moderator_role_id in role_ids

    async def get_settings(self, guild_id: int) -> GuildSettings:
        """The guild's rules (defaults when none were changed)."""
        return await self.limits.settings(guild_id)

    async def role_allowances(self, guild_id: int) -> dict[int, int | None]:
        """Role id → allowance per period (None = unlimited)."""
        async with self.db.read() as conn:
            return await rules.role_allowances(conn, guild_id)

    async def user_allowances(self, guild_id: int) -> dict[int, int | None]:
        """Member id → allowance override per period (None = unlimited)."""
        async with self.db.read() as conn:
            return await rules.user_allowances(conn, guild_id)

    async def allowed_channels(self, guild_id: int) -> list[int]:
        """Channels generation is limited to; empty means everywhere."""
        async with self.db.read() as conn:
            return await rules.allowed_channels(conn, guild_id)

    async def blocked_terms(self, guild_id: int) -> list[BlockedTerm]:
        """The guild's blocklist, oldest first."""
        async with self.db.read() as conn:
            return await rules.blocked_terms(conn, guild_id)

    async def bans(self, guild_id: int) -> list[Ban]:
        """Bans in force now (expired ones are left out)."""
        async with self.db.read() as conn:
            return await rules.bans_in_force(conn, guild_id, self.clock())

    async def audit_entries(
        self, guild_id: int, limit: int = 20, before_id: int | None = None
    ) -> list[AuditEntry]:
        """Newest first; pass the last entry's id as `before_id` for the next page."""
        limit = max(1, min(limit, AUDIT_PAGE_MAX))
        async with self.db.read() as conn:
            return await audit.entries(conn, guild_id, limit, before_id)

    async def usage_report(
        self, guild_id: int, period_start: float | None = None, top: int = 10
    ) -> UsageReport:
        """Who used what in a period (the current one unless `period_start` is given)."""
        async with self.db.read() as conn:
            settings = await guild_settings.load(conn, guild_id)
            return await build_usage_report(
                conn, settings, now=self.clock(), start=period_start, top=top
            )

    # -- the period and allowances -------------------------------------------------------

    async def set_period(
        self, *, guild_id: int, actor_id: int, period: str, reset_hour: int | None = None
    ) -> AuditEntry:
        """How often allowances reset, and at which hour (UTC); `reset_hour` None keeps it."""
        try:
            new_period = Period(period)
        except ValueError:
            choices = ", ".join(p.value for p in Period)
            raise InvalidSetting(f"The period must be one of: {choices}.") from None
        if reset_hour is not None:
            _check_range(reset_hour, 0, 23, "The reset hour (UTC)")
        async with self.db.transaction() as conn:
            settings = await guild_settings.load(conn, guild_id)
            hour = settings.reset_hour if reset_hour is None else reset_hour
            # Only what the moderator chose: an hour left out stays at its default.
            chosen = {} if reset_hour is None else {"reset_hour": reset_hour}
            await guild_settings.save(conn, guild_id, period=new_period, **chosen)
            if new_period is Period.NONE:
                summary = "set credits to never reset (one allowance in total)"
            else:
                summary = (
                    f"set the credit period to {new_period.per}, resetting at {hour:02d}:00 UTC"
                )
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                "settings.period",
                None,
                {
                    "period": new_period.value,
                    "reset_hour": hour,
                    "previous": {
                        "period": settings.period.value,
                        "reset_hour": settings.reset_hour,
                    },
                },
                summary,
            )

    async def set_default_allowance(
        self, *, guild_id: int, actor_id: int, allowance: int | None
    ) -> AuditEntry:
        """Credits per period for members without a role or member override (None = unlimited)."""
        _check_allowance(allowance)
        async with self.db.transaction() as conn:
            settings = await guild_settings.load(conn, guild_id)
            await guild_settings.save(conn, guild_id, default_allowance=allowance)
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                "settings.default_allowance",
                None,
                {"allowance": allowance, "previous": settings.default_allowance},
                f"set the default allowance to {_amount(allowance, settings)}",
            )

    async def set_role_allowance(
        self, *, guild_id: int, actor_id: int, role_id: int, allowance: int | None
    ) -> AuditEntry:
        """Allowance for members with this role (the most generous of a member's roles wins)."""
        _check_id(role_id, "role")
        _check_allowance(allowance)
        async with self.db.transaction() as conn:
            settings = await guild_settings.load(conn, guild_id)
            await rules.set_role_allowance(conn, guild_id, role_id, allowance)
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                "allowance.role.set",
                role_id,
                {"role_id": role_id, "allowance": allowance},
                f"set <@&{role_id}>'s allowance to {_amount(allowance, settings)}",
            )

    async def clear_role_allowance(
        self, *, guild_id: int, actor_id: int, role_id: int
    ) -> AuditEntry:
        """Remove a role's allowance; its members fall back to other roles or the default."""
        async with self.db.transaction() as conn:
            if not await rules.clear_role_allowance(conn, guild_id, role_id):
                raise InvalidSetting(f"<@&{role_id}> has no allowance of its own to clear.")
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                "allowance.role.clear",
                role_id,
                {"role_id": role_id},
                f"cleared <@&{role_id}>'s allowance",
            )

    async def set_user_allowance(
        self, *, guild_id: int, actor_id: int, user_id: int, allowance: int | None
    ) -> AuditEntry:
        """A member's own allowance, overriding their roles and the default."""
        _check_id(user_id, "member")
        _check_allowance(allowance)
        async with self.db.transaction() as conn:
            settings = await guild_settings.load(conn, guild_id)
            await rules.set_user_allowance(conn, guild_id, user_id, allowance)
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                "allowance.user.set",
                user_id,
                {"user_id": user_id, "allowance": allowance},
                f"set <@{user_id}>'s allowance to {_amount(allowance, settings)}",
            )

    async def clear_user_allowance(
        self, *, guild_id: int, actor_id: int, user_id: int
    ) -> AuditEntry:
        """Remove a member's override; their roles or the default apply again."""
        async with self.db.transaction() as conn:
            if not await rules.clear_user_allowance(conn, guild_id, user_id):
                raise InvalidSetting(f"<@{user_id}> has no allowance of their own to clear.")
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                "allowance.user.clear",
                user_id,
                {"user_id": user_id},
                f"removed <@{user_id}>'s own allowance",
            )

    # -- credits -------------------------------------------------------------------------

    async def grant_credits(
        self, *, guild_id: int, actor_id: int, user_id: int, amount: int, note: str | None = None
    ) -> AuditEntry:
        """Extra credits for a member in the current period, on top of their allowance."""
        _check_id(user_id, "member")
        _check_range(amount, 1, GRANT_MAX, "A grant")
        note = self._check_reason(note)
        async with self.db.transaction() as conn:
            settings = await guild_settings.load(conn, guild_id)
            now = self.clock()
            start = period_start(settings.period, settings.reset_hour, now)
            await ledger.append(
                conn,
                guild_id=guild_id,
                user_id=user_id,
                kind=LedgerKind.GRANT,
                amount=amount,
                period_start=start,
                now=now,
                actor_id=actor_id,
                note=note,
            )
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                "credits.grant",
                user_id,
                {"user_id": user_id, "amount": amount, "period_start": start, "note": note},
                f"granted <@{user_id}> {_plural(amount, 'extra credit')} {settings.period.phrase}",
            )

    async def reset_usage(self, *, guild_id: int, actor_id: int, user_id: int) -> AuditEntry:
        """Forgive what a member used this period.

        Credits still held by the member's running jobs are left in place, so when such a job
        is refunded the member gets back exactly what it held and no more.
        """
        _check_id(user_id, "member")
        async with self.db.transaction() as conn:
            settings = await guild_settings.load(conn, guild_id)
            now = self.clock()
            start = period_start(settings.period, settings.reset_hour, now)
            usage = await ledger.usage_between(conn, guild_id, user_id, start)
            held = await ledger.held_by_active_jobs(conn, guild_id, user_id, start)
            forgiven = usage.used - held
            if forgiven > 0:
                await ledger.append(
                    conn,
                    guild_id=guild_id,
                    user_id=user_id,
                    kind=LedgerKind.RESET,
                    amount=-forgiven,
                    period_start=start,
                    now=now,
                    actor_id=actor_id,
                )
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                "credits.reset",
                user_id,
                {"user_id": user_id, "forgiven": max(forgiven, 0), "period_start": start},
                f"reset <@{user_id}>'s usage {settings.period.phrase} "
                f"({_plural(max(forgiven, 0), 'credit')} given back)",
            )

    # -- bans ----------------------------------------------------------------------------

    async def ban(
        self,
        *,
        guild_id: int,
        actor_id: int,
        user_id: int,
        duration_seconds: int | None = None,
        reason: str | None = None,
    ) -> AuditEntry:
        """Bar a member from generating, for a while or (duration None) until unbanned."""
        _check_id(user_id, "member")
        if duration_seconds is not None:
            _check_range(
                duration_seconds, BAN_MIN_SECONDS, BAN_MAX_SECONDS, "A ban's length in seconds"
            )
        reason = self._check_reason(reason)
        async with self.db.transaction() as conn:
            now = self.clock()
            until = None if duration_seconds is None else now + duration_seconds
            await rules.put_ban(
                conn, guild_id, user_id, until=until, reason=reason, actor_id=actor_id, now=now
            )
            length = (
                "permanently"
                if duration_seconds is None
                else f"for {_duration(duration_seconds)} (until {discord_time(until or now, 'f')})"
            )
            because = f": {escape_member_text(reason)}" if reason else ""
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                "ban.add",
                user_id,
                {"user_id": user_id, "until": until, "reason": reason},
                f"banned <@{user_id}> from generating {length}{because}",
            )

    async def unban(self, *, guild_id: int, actor_id: int, user_id: int) -> AuditEntry:
        """Lift a member's generation ban."""
        async with self.db.transaction() as conn:
            if not await rules.lift_ban(conn, guild_id, user_id, self.clock()):
                raise InvalidSetting(f"<@{user_id}> isn't banned from generating.")
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                "ban.remove",
                user_id,
                {"user_id": user_id},
                f"lifted <@{user_id}>'s generation ban",
            )

    # -- channels ------------------------------------------------------------------------

    async def allow_channel(self, *, guild_id: int, actor_id: int, channel_id: int) -> AuditEntry:
        """Add a channel to those generation is limited to (the first one turns the limit on)."""
        _check_id(channel_id, "channel")
        async with self.db.transaction() as conn:
            if not await rules.allow_channel(conn, guild_id, channel_id):
                raise InvalidSetting(f"<#{channel_id}> is already an allowed channel.")
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                "channel.allow",
                channel_id,
                {"channel_id": channel_id},
                f"allowed generating images in <#{channel_id}>",
            )

    async def disallow_channel(
        self, *, guild_id: int, actor_id: int, channel_id: int
    ) -> AuditEntry:
        """Remove a channel from the allowed ones (none left means every channel is allowed)."""
        async with self.db.transaction() as conn:
            if not await rules.disallow_channel(conn, guild_id, channel_id):
                raise InvalidSetting(f"<#{channel_id}> isn't one of the allowed channels.")
            left = await rules.count_allowed_channels(conn, guild_id)
            tail = "" if left else "; images can now be generated in any channel"
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                "channel.disallow",
                channel_id,
                {"channel_id": channel_id, "remaining": left},
                f"removed <#{channel_id}> from the allowed channels{tail}",
            )

    async def clear_channel_rules(self, *, guild_id: int, actor_id: int) -> AuditEntry:
        """Allow generation in every channel again."""
        async with self.db.transaction() as conn:
            removed = await rules.clear_allowed_channels(conn, guild_id)
            if removed == 0:
                raise InvalidSetting("There are no channel rules; every channel is allowed.")
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                "channel.clear",
                None,
                {"removed": removed},
                "cleared the channel rules; images can be generated in any channel",
            )

    # -- blocked terms -------------------------------------------------------------------

    async def add_blocked_term(
        self, *, guild_id: int, actor_id: int, term: str, is_regex: bool = False
    ) -> AuditEntry:
        """Block a word or phrase (whole words, any case), or a validated regular expression."""
        try:
            pattern = clean_regex_term(term) if is_regex else clean_plain_term(term)
        except InvalidTerm as exc:
            raise InvalidSetting(str(exc)) from None
        kind = "pattern" if is_regex else "term"
        async with self.db.transaction() as conn:
            if is_regex:
                try:
                    check_regex_budget(pattern, await rules.blocked_regexes(conn, guild_id))
                except InvalidTerm as exc:
                    raise InvalidSetting(str(exc)) from None
            term_id = await rules.add_blocked_term(
                conn, guild_id, pattern, is_regex=is_regex, actor_id=actor_id, now=self.clock()
            )
            if term_id is None:
                raise InvalidSetting(f"That {kind} is already blocked.")
            self.limits.invalidate_terms(guild_id)
            # The summary goes to a channel: it names the entry, not the term itself.
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                "blocklist.add",
                term_id,
                {"term_id": term_id, "pattern": pattern, "is_regex": is_regex},
                f"added blocked {kind} #{term_id}",
            )

    async def remove_blocked_term(
        self, *, guild_id: int, actor_id: int, term: str | int
    ) -> AuditEntry:
        """Unblock a term given its id (int or "#12") or its text as it was added."""
        async with self.db.transaction() as conn:
            found = await self._find_term(conn, guild_id, term)
            if found is None:
                raise InvalidSetting("That term isn't on this server's blocklist.")
            await rules.remove_blocked_term(conn, guild_id, found.id)
            self.limits.invalidate_terms(guild_id)
            kind = "pattern" if found.is_regex else "term"
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                "blocklist.remove",
                found.id,
                {"term_id": found.id, "pattern": found.pattern, "is_regex": found.is_regex},
                f"removed blocked {kind} #{found.id}",
            )

    # -- per-member and server-wide limits -----------------------------------------------

    async def set_max_concurrent(self, *, guild_id: int, actor_id: int, value: int) -> AuditEntry:
        """How many generations one member may have running at once."""
        _check_range(value, 1, MAX_CONCURRENT_MAX, "The number of generations at once")
        return await self._set(
            guild_id,
            actor_id,
            "max_concurrent",
            value,
            f"set the limit to {_plural(value, 'generation')} at a time per member",
        )

    async def set_cooldown(self, *, guild_id: int, actor_id: int, seconds: int) -> AuditEntry:
        """Seconds a member waits between starting generations (0 = no cooldown)."""
        _check_range(seconds, 0, COOLDOWN_MAX, "The cooldown in seconds")
        summary = (
            "turned off the cooldown between generations"
            if seconds == 0
            else f"set the cooldown between a member's generations to {_duration(seconds)}"
        )
        return await self._set(guild_id, actor_id, "cooldown_seconds", seconds, summary)

    async def set_max_outputs(self, *, guild_id: int, actor_id: int, value: int) -> AuditEntry:
        """Most images one request may ask for (1-4)."""
        _check_range(value, 1, MAX_OUTPUTS, "The number of images per request")
        return await self._set(
            guild_id,
            actor_id,
            "max_outputs",
            value,
            f"set the most images per request to {value}",
        )

    async def set_spend_cap(self, *, guild_id: int, actor_id: int, cap: int | None) -> AuditEntry:
        """Credits the whole server may spend per period (None = no cap)."""
        if cap is not None:
            _check_range(cap, 1, SPEND_CAP_MAX, "The spend cap")
        settings = await self.limits.settings(guild_id)
        summary = (
            "removed the server spend cap"
            if cap is None
            else f"set the server spend cap to {_amount(cap, settings)}"
        )
        # A new cap deserves fresh 80% / 100% notices this period.
        return await self._set(
            guild_id,
            actor_id,
            "spend_cap",
            cap,
            summary,
            cap_warned_period=None,
            cap_paused_period=None,
        )

    async def set_moderator_role(
        self, *, guild_id: int, actor_id: int, role_id: int | None
    ) -> AuditEntry:
        """The role whose members may moderate, besides Manage Server (None = none)."""
        if role_id is not None:
            _check_id(role_id, "role")
        summary = (
            "removed the moderator role"
            if role_id is None
            else f"set the moderator role to <@&{role_id}>"
        )
        return await self._set(guild_id, actor_id, "moderator_role_id", role_id, summary)

    async def set_log_channel(
        self, *, guild_id: int, actor_id: int, channel_id: int | None
    ) -> AuditEntry:
        """Where the audit log and spend-cap notices are posted (None = nowhere)."""
        if channel_id is not None:
            _check_id(channel_id, "channel")
        summary = (
            "turned off the moderation log channel"
            if channel_id is None
            else f"set the moderation log channel to <#{channel_id}>"
        )
        return await self._set(guild_id, actor_id, "log_channel_id", channel_id, summary)

    # -- generations ---------------------------------------------------------------------

    async def record_generation(
        self, *, guild_id: int, user_id: int, job_id: int, outcome: str, credits: int
    ) -> AuditEntry:
        """Audit one generation's end (`outcome` e.g. "posted" or "failed")."""
        async with self.db.transaction() as conn:
            return await self._audit(
                conn,
                guild_id,
                user_id,
                f"generation.{outcome}",
                job_id,
                {"job_id": job_id, "user_id": user_id, "outcome": outcome, "credits": credits},
                f"ran generation #{job_id}: {outcome}, {_plural(credits, 'credit')}",
            )

    async def record_result_deletion(
        self, *, guild_id: int, actor_id: int, job_id: int, author_id: int
    ) -> AuditEntry:
        """Audit a moderator deleting another member's result."""
        async with self.db.transaction() as conn:
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                "result.deleted",
                job_id,
                {"job_id": job_id, "author_id": author_id},
                f"deleted <@{author_id}>'s result of generation #{job_id}",
            )

    # -- helpers -------------------------------------------------------------------------

    async def _set(
        self,
        guild_id: int,
        actor_id: int,
        column: str,
        value: Any,
        summary: str,
        **also: Any,
    ) -> AuditEntry:
        async with self.db.transaction() as conn:
            settings = await guild_settings.load(conn, guild_id)
            await guild_settings.save(conn, guild_id, **{column: value}, **also)
            return await self._audit(
                conn,
                guild_id,
                actor_id,
                f"settings.{column}",
                None,
                {column: value, "previous": getattr(settings, column)},
                summary,
            )

    async def _audit(
        self,
        conn: Connection,
        guild_id: int,
        actor_id: int | None,
        action: str,
        target_id: int | None,
        details: dict[str, Any],
        summary: str,
    ) -> AuditEntry:
        return await audit.write(
            conn,
            guild_id=guild_id,
            actor_id=actor_id,
            action=action,
            target_id=target_id,
            details=details,
            summary=summary,
            now=self.clock(),
        )

    @staticmethod
    def _check_reason(reason: str | None) -> str | None:
        if reason is None or not reason.strip():
            return None
        reason = " ".join(reason.split())
        if len(reason) > REASON_MAX_LENGTH:
            raise InvalidSetting(f"Keep the reason under {REASON_MAX_LENGTH} characters.")
        return reason

    @staticmethod
    async def _find_term(conn: Connection, guild_id: int, term: str | int) -> BlockedTerm | None:
        text = str(term).strip()
        if isinstance(term, int) or text.lstrip("#").isdigit():
            found = await rules.blocked_term_by_id(conn, guild_id, int(text.lstrip("#")))
            if found is not None or isinstance(term, int):
                return found
        return await rules.blocked_term_by_pattern(conn, guild_id, [text, normalize(text)])
