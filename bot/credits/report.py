"""The moderators' usage report: who spent what in a period, from the ledger."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.credits.periods import Period, next_reset, period_start, previous_period_start
from bot.generation.models import ACTIVE_STATES, JobState
from bot.storage import SyncConnection, ledger
from bot.storage.guild_settings import GuildSettings


@dataclass(frozen=True)
class UserUsage:
    """One member's line in the report: credits spent and generations started."""

    user_id: int
    credits: int
    jobs: int


DAY_SECONDS = 86400
HOUR_SECONDS = 3600
ALL_TIME_DAYS = 30
"""How many days the series of a guild whose credits never reset covers (up to today)."""


@dataclass(frozen=True)
class SpendSeries:
    """Credits spent (as in `UsageReport.total_credits`) in consecutive spans of time: by
    the hour in a daily period, by the day in longer ones, and over the last
    `ALL_TIME_DAYS` days when credits never reset. Days begin at the guild's reset hour."""

    start: float
    """When the first span begins (epoch seconds)."""
    step: int
    """Each span's length in seconds: `HOUR_SECONDS` or `DAY_SECONDS`."""
    credits: tuple[int, ...] = ()

    @property
    def starts(self) -> tuple[float, ...]:
        """When each span begins."""
        return tuple(self.start + index * self.step for index in range(len(self.credits)))


@dataclass(frozen=True)
class UsageReport:
    """A guild's spending in one period. Credits are what was actually spent with PixelDojo
    (held by running jobs, charged for finished ones, including jobs PixelDojo charged but
    whose members were refunded); moderators' resets and grants don't change them."""

    guild_id: int
    period: Period
    period_start: float
    period_end: float | None
    """When the period ends (the next reset); None when the period is `none`."""
    total_credits: int
    refunded_credits: int
    """Of `total_credits`, what PixelDojo charged for jobs whose members were refunded."""
    previous_period_start: float | None
    previous_total_credits: int | None
    top_users: tuple[UserUsage, ...]
    jobs_posted: int
    jobs_failed: int
    jobs_active: int
    spend_cap: int | None
    spend_series: SpendSeries = field(default_factory=lambda: SpendSeries(0.0, DAY_SECONDS))
    """The period's spending over time, for the chart."""

    @property
    def cap_used(self) -> int:
        """Credits counted against the spend cap in this period."""
        return self.total_credits

    @property
    def cap_fraction(self) -> float | None:
        """How much of the cap is used (1.0 = all of it); None without a cap."""
        return None if self.spend_cap is None else self.total_credits / self.spend_cap


def _series_spans(
    period: Period, reset_hour: int, begin: float, end: float | None, now: float
) -> tuple[float, int, int]:
    """(first span's start, span length, how many spans) for a period's `SpendSeries`."""
    if end is None:
        today = period_start(Period.DAY, reset_hour, now)
        return today - (ALL_TIME_DAYS - 1) * DAY_SECONDS, DAY_SECONDS, ALL_TIME_DAYS
    step = HOUR_SECONDS if period is Period.DAY else DAY_SECONDS
    return begin, step, round((end - begin) / step)


def build_usage_report(
    conn: SyncConnection,
    settings: GuildSettings,
    *,
    now: float,
    start: float | None = None,
    top: int = 10,
) -> UsageReport:
    """The report for the period containing `start` (default: the current period)."""
    guild_id = settings.guild_id
    moment = now if start is None else start
    begin = period_start(settings.period, settings.reset_hour, moment)
    end = next_reset(settings.period, settings.reset_hour, moment)
    previous = previous_period_start(settings.period, settings.reset_hour, moment)
    rows = ledger.top_spenders(conn, guild_id, begin, end, limit=max(1, top))
    states = ledger.job_states(conn, guild_id, begin, end)
    origin, step, count = _series_spans(settings.period, settings.reset_hour, begin, end, now)
    series = ledger.spend_by_time(conn, guild_id, begin, end, origin=origin, step=step, count=count)
    return UsageReport(
        guild_id=guild_id,
        period=settings.period,
        period_start=begin,
        period_end=end,
        total_credits=ledger.guild_spend(conn, guild_id, begin, end),
        refunded_credits=ledger.refunded_spend(conn, guild_id, begin, end),
        previous_period_start=previous,
        previous_total_credits=(
            None if previous is None else ledger.guild_spend(conn, guild_id, previous, begin)
        ),
        top_users=tuple(UserUsage(*row) for row in rows),
        jobs_posted=states.get(JobState.POSTED.value, 0),
        jobs_failed=states.get(JobState.FAILED.value, 0),
        jobs_active=sum(states.get(state.value, 0) for state in ACTIVE_STATES),
        spend_cap=settings.spend_cap,
        spend_series=SpendSeries(origin, step, tuple(series)),
    )
