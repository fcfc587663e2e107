"""Credit periods: when a guild's allowances start over. Pure functions of UTC epoch seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum


class Period(StrEnum):
    """How often allowances reset. `NONE` means one allowance for all time."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    NONE = "none"

    @property
    def phrase(self) -> str:
        """How a sentence names the current period: "today", "this week", "in total"."""
        return {
            Period.DAY: "today",
            Period.WEEK: "this week",
            Period.MONTH: "this month",
            Period.NONE: "in total",
        }[self]

    @property
    def per(self) -> str:
        """How a rate names the period: "per day", "in total"."""
        return "in total" if self is Period.NONE else f"per {self.value}"


def _check_hour(reset_hour: int) -> None:
    if not 0 <= reset_hour <= 23:
        raise ValueError(f"reset_hour must be 0-23, got {reset_hour}")


def _month_start(year: int, month: int, reset_hour: int) -> datetime:
    return datetime(year, month, 1, reset_hour, tzinfo=UTC)


def _add_month(moment: datetime, months: int, reset_hour: int) -> datetime:
    index = moment.year * 12 + (moment.month - 1) + months
    return _month_start(index // 12, index % 12 + 1, reset_hour)


def _start(period: Period, reset_hour: int, now: float) -> datetime | None:
    _check_hour(reset_hour)
    moment = datetime.fromtimestamp(now, UTC)
    if period is Period.NONE:
        return None
    if period is Period.DAY:
        start = moment.replace(hour=reset_hour, minute=0, second=0, microsecond=0)
        return start if start <= moment else start - timedelta(days=1)
    if period is Period.WEEK:
        monday = moment - timedelta(days=moment.weekday())
        start = monday.replace(hour=reset_hour, minute=0, second=0, microsecond=0)
        return start if start <= moment else start - timedelta(days=7)
    start = _month_start(moment.year, moment.month, reset_hour)
    return start if start <= moment else _add_month(start, -1, reset_hour)


def period_start(period: Period | str, reset_hour: int, now: float) -> float:
    """Epoch seconds at which the period containing `now` began (0.0 for `none`)."""
    start = _start(Period(period), reset_hour, now)
    return 0.0 if start is None else start.timestamp()


def next_reset(period: Period | str, reset_hour: int, now: float) -> float | None:
    """Epoch seconds of the next reset after `now`, or None when the period never resets."""
    period = Period(period)
    start = _start(period, reset_hour, now)
    if start is None:
        return None
    if period is Period.DAY:
        return (start + timedelta(days=1)).timestamp()
    if period is Period.WEEK:
        return (start + timedelta(days=7)).timestamp()
    return _add_month(start, 1, reset_hour).timestamp()


def previous_period_start(period: Period | str, reset_hour: int, now: float) -> float | None:
    """Start of the period before the one containing `now`, or None for `none`."""
    period = Period(period)
    start = _start(period, reset_hour, now)
    if start is None:
        return None
    return period_start(period, reset_hour, start.timestamp() - 1)


def discord_time(epoch: float, style: str = "R") -> str:
    """Discord timestamp markup (`<t:1700000000:R>` renders as "in 3 hours")."""
    return f"<t:{int(epoch)}:{style}>"
