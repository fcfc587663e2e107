"""Admission: whether a member may start a generation now, and what it holds from their credits.

`Limits.admit` is the `AdmissionCheck` that `JobStore.create_admitted` runs inside its
`BEGIN IMMEDIATE` reservation transaction, so reading the limits and reserving against them is
one atomic step: concurrent requests can never over-spend an allowance or the server's spend
cap. Every rule lives in the database; the only thing kept in memory is a cache of compiled
blocked terms. The checks are plain functions: the whole transaction runs in one trip to the
database thread, with no await between its statements.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.credits.blocklist import TermMatcher
from bot.credits.periods import Period, discord_time, next_reset, period_start
from bot.errors import RequestRefused
from bot.generation.models import CREDITS_PER_OUTPUT, GenerationRequest
from bot.safe_text import escape_member_text
from bot.storage import SyncConnection, guild_settings, jobs, ledger, rules
from bot.storage.database import Database
from bot.storage.guild_settings import GuildSettings
from bot.storage.jobs import Admission
from bot.storage.ledger import Usage

CAP_WARNING_FRACTION = 0.8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Balance:
    """A member's credits in the current period, for `/credits`."""

    allowance: int | None
    """The period's allowance; None means unlimited."""
    granted: int
    used: int
    remaining: int | None
    """`allowance + granted - used`, never below 0; None means unlimited."""
    period: Period
    period_start: float
    resets_at: float | None
    """When the allowance starts over; None when the period is `none`."""
    active_jobs: int

    @property
    def unlimited(self) -> bool:
        return self.allowance is None


def credits_for(request: GenerationRequest) -> int:
    """The estimate a request holds until PixelDojo reports its `creditCost`."""
    return request.num_outputs * CREDITS_PER_OUTPUT


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _resets(resets_at: float | None) -> str:
    return "they don't reset" if resets_at is None else f"they reset {discord_time(resets_at)}"


def resolve_allowance(
    conn: SyncConnection,
    settings: GuildSettings,
    user_id: int,
    role_ids: Sequence[int],
) -> int | None:
    """The member's allowance per period (None = unlimited).

    A per-member override wins; otherwise the most generous of the member's roles that have one
    (an unlimited role beats any number); otherwise the guild default.
    """
    own = rules.user_allowance(conn, settings.guild_id, user_id)
    if own is not None:
        return own.credits
    values = rules.role_allowances_among(conn, settings.guild_id, role_ids)
    if values:
        return None if None in values else max(v for v in values if v is not None)
    return settings.default_allowance


class Limits:
    """Decides admissions and reports balances from the rules stored per guild."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self._matchers: dict[int, tuple[tuple[int, int], TermMatcher]] = {}

    def invalidate_terms(self, guild_id: int) -> None:
        """Forget a guild's compiled blocked terms (call whenever they change)."""
        self._matchers.pop(guild_id, None)

    def admit(self, conn: SyncConnection, request: GenerationRequest, now: float) -> Admission:
        """Check every rule in order and return what to reserve, or raise `RequestRefused`."""
        settings = guild_settings.load(conn, request.guild_id)
        self._check_ban(conn, request, now)
        self._check_channel(conn, request)
        self._check_terms(conn, request)
        cost = credits_for(request)
        self._check_outputs(settings, request)
        self._check_queue(conn, settings, request)
        self._check_cooldown(conn, settings, request, now)
        start = period_start(settings.period, settings.reset_hour, now)
        resets_at = next_reset(settings.period, settings.reset_hour, now)
        cap_marks, notices = self._check_cap(conn, settings, cost, start, resets_at)
        self._check_allowance(conn, settings, request, cost, start, resets_at)
        if cap_marks:
            guild_settings.save(conn, request.guild_id, **cap_marks)
        return Admission(credits=cost, period_start=start, notices=notices)

    async def balance(self, guild_id: int, user_id: int, role_ids: Sequence[int]) -> Balance:
        """What the member has used and has left in the current period."""
        now = self.clock()

        def read(conn: SyncConnection) -> tuple[GuildSettings, int | None, float, Usage, int]:
            settings = guild_settings.load(conn, guild_id)
            allowance = resolve_allowance(conn, settings, user_id, role_ids)
            start = period_start(settings.period, settings.reset_hour, now)
            usage = ledger.usage_between(conn, guild_id, user_id, start)
            return settings, allowance, start, usage, jobs.count_active(conn, guild_id, user_id)

        settings, allowance, start, usage, active = await self.db.call(read)
        remaining = None if allowance is None else max(0, allowance + usage.granted - usage.used)
        return Balance(
            allowance=allowance,
            granted=usage.granted,
            used=usage.used,
            remaining=remaining,
            period=settings.period,
            period_start=start,
            resets_at=next_reset(settings.period, settings.reset_hour, now),
            active_jobs=active,
        )

    async def settings(self, guild_id: int) -> GuildSettings:
        """The guild's current settings (defaults when none were changed)."""
        return await self.db.call(lambda conn: guild_settings.load(conn, guild_id))

    def matcher(self, conn: SyncConnection, guild_id: int) -> TermMatcher:
        """The guild's compiled blocked terms, cached until they change.

        Besides `invalidate_terms`, each use compares the terms' (count, newest id) with the
        cached ones, so a change made by another process (the CLI) is picked up too.
        """
        signature = rules.blocked_terms_signature(conn, guild_id)
        cached = self._matchers.get(guild_id)
        if cached is not None and cached[0] == signature:
            return cached[1]
        terms = rules.blocked_terms(conn, guild_id)
        matcher = TermMatcher.build((term.pattern, term.is_regex) for term in terms)
        for skipped in matcher.skipped:
            log.warning(
                "Guild %s: blocked pattern #%s is not enforced: %s Remove it with "
                "/mod blocklist remove #%s and add it again in RE2 syntax.",
                guild_id,
                terms[skipped.index].id,
                skipped.reason,
                terms[skipped.index].id,
            )
        self._matchers[guild_id] = (signature, matcher)
        return matcher

    @staticmethod
    def _check_ban(conn: SyncConnection, request: GenerationRequest, now: float) -> None:
        ban = rules.ban_of(conn, request.guild_id, request.user_id)
        if ban is None or (ban.until is not None and ban.until <= now):
            return
        reason = f" (reason: {escape_member_text(ban.reason)})" if ban.reason else ""
        if ban.until is None:
            raise RequestRefused(
                f"You can't generate images in this server{reason}. "
                "Ask a moderator if you think this is a mistake."
            )
        until = ban.until
        raise RequestRefused(
            f"You can't generate images here until {discord_time(until, 'f')}, "
            f"{discord_time(until)}{reason}."
        )

    @staticmethod
    def _check_channel(conn: SyncConnection, request: GenerationRequest) -> None:
        channels = rules.allowed_channels(conn, request.guild_id)
        if channels and request.channel_id not in channels:
            mentions = ", ".join(f"<#{channel}>" for channel in channels)
            raise RequestRefused(f"Images can only be generated in {mentions}.")

    def _check_terms(self, conn: SyncConnection, request: GenerationRequest) -> None:
        matcher = self.matcher(conn, request.guild_id)
        # On the database thread, never the event loop's; RE2 keeps it linear in the prompt, and
        # the regex budget bounds how long the write lock is held for it.
        if matcher.matches(request.prompt):
            raise RequestRefused(
                "Your prompt contains a term this server doesn't allow. Please rephrase it."
            )

    @staticmethod
    def _check_outputs(settings: GuildSettings, request: GenerationRequest) -> None:
        if request.num_outputs > settings.max_outputs:
            if settings.max_outputs == 1:
                raise RequestRefused("This server allows only 1 image per request.")
            raise RequestRefused(
                f"This server allows up to {settings.max_outputs} images per request. "
                f"Ask for {settings.max_outputs} or fewer."
            )

    @staticmethod
    def _check_queue(
        conn: SyncConnection, settings: GuildSettings, request: GenerationRequest
    ) -> None:
        """The only queue refusal: too many prompts waiting. A member's jobs beyond the
        `max_concurrent` that may run are the ones waiting, whatever the dispatcher is doing
        at this instant, so the cap does not depend on how fast jobs start."""
        active = jobs.count_active(conn, request.guild_id, request.user_id)
        waiting = active - settings.max_concurrent
        if waiting >= settings.max_queued:
            raise RequestRefused(
                f"You already have {_plural(waiting, 'prompt')} waiting; this server allows "
                f"{settings.max_queued}. Cancel one or wait for one to start."
            )

    @staticmethod
    def _check_cooldown(
        conn: SyncConnection,
        settings: GuildSettings,
        request: GenerationRequest,
        now: float,
    ) -> None:
        if settings.cooldown_seconds <= 0:
            return
        last = jobs.last_created_at(conn, request.guild_id, request.user_id)
        if last is None:
            return
        ready_at = last + settings.cooldown_seconds
        if now < ready_at:
            raise RequestRefused(
                f"This server has a {settings.cooldown_seconds}-second cooldown between "
                f"generations. You can generate again {discord_time(ready_at)}."
            )

    @staticmethod
    def _check_cap(
        conn: SyncConnection,
        settings: GuildSettings,
        cost: int,
        start: float,
        resets_at: float | None,
    ) -> tuple[dict[str, float], tuple[str, ...]]:
        """Refuse past the server's spend cap; say (once per period) when it nears or hits it."""
        cap = settings.spend_cap
        if cap is None:
            return {}, ()
        spent = ledger.guild_spend(conn, settings.guild_id, start)
        phrase = settings.period.phrase
        resumes = (
            f"It resumes {discord_time(resets_at)}, or when a moderator raises the cap."
            if resets_at is not None
            else "It resumes when a moderator raises the cap."
        )
        if spent >= cap:
            raise RequestRefused(
                f"Image generation is paused: this server has used its spend cap of "
                f"{_plural(cap, 'credit')} {phrase}. {resumes}"
            )
        if spent + cost > cap:
            raise RequestRefused(
                f"This server has only {_plural(cap - spent, 'credit')} left under its spend cap "
                f"{phrase}, and this request needs {cost}. Ask for fewer images."
            )
        after = spent + cost
        if after >= cap and settings.cap_paused_period != start:
            notice = (
                f"Image generation is paused: this server has reached its spend cap of "
                f"{_plural(cap, 'credit')} {phrase}. {resumes}"
            )
            return {"cap_paused_period": start, "cap_warned_period": start}, (notice,)
        if after >= cap * CAP_WARNING_FRACTION and settings.cap_warned_period != start:
            notice = (
                f"Heads up: this server has used {after} of its {_plural(cap, 'credit')} "
                f"spend cap {phrase} ({after * 100 // cap}%). Generation pauses at the cap."
            )
            return {"cap_warned_period": start}, (notice,)
        return {}, ()

    @staticmethod
    def _check_allowance(
        conn: SyncConnection,
        settings: GuildSettings,
        request: GenerationRequest,
        cost: int,
        start: float,
        resets_at: float | None,
    ) -> None:
        allowance = resolve_allowance(conn, settings, request.user_id, request.role_ids)
        if allowance is None:
            return
        usage = ledger.usage_between(conn, request.guild_id, request.user_id, start)
        total = allowance + usage.granted
        remaining = max(0, total - usage.used)
        if cost <= remaining:
            return
        if total <= 0:
            raise RequestRefused(
                "This server doesn't give you any image credits. "
                "Ask a moderator if you'd like some."
            )
        phrase = settings.period.phrase
        resets = _resets(resets_at)
        if remaining == 0:
            raise RequestRefused(
                f"You have 0 of {_plural(total, 'credit')} left {phrase}; {resets}. "
                "A moderator can grant you more."
            )
        raise RequestRefused(
            f"This request needs {_plural(cost, 'credit')}, but you have {remaining} of "
            f"{total} left {phrase}; {resets}. Ask for fewer images."
        )
