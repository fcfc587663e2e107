"""The `/mod report` chart: the spending series storage returns for the period, and the PNG
drawn from it (read back with Pillow: bars where credits were spent, as tall as they were)."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from bot.credits.periods import Period
from bot.credits.report import (
    DAY_SECONDS,
    HOUR_SECONDS,
    SpendSeries,
    UsageReport,
    UserUsage,
)
from bot.credits.usage_chart import (
    CHART_MEMBERS,
    HEIGHT_PX,
    MAX_CHART_BYTES,
    MEMBER_COLOUR,
    SPAN_COLOUR,
    WIDTH_PX,
    inert_name,
    member_bars,
    render_usage_chart,
)
from bot.storage import Database
from tests.helpers import REPO_ROOT
from tests.service_env import GUILD, OTHER_GUILD, Clock, ServiceEnv

NOW = datetime(2025, 3, 12, 15, 30, tzinfo=UTC).timestamp()  # a Wednesday
TODAY = datetime(2025, 3, 12, tzinfo=UTC).timestamp()
MONDAY_6AM = datetime(2025, 3, 10, 6, tzinfo=UTC).timestamp()
TOP = 1_300_000_000_000_000_100
"""The id of the top spender of `week_report`; the next one is TOP + 1, and so on."""


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[ServiceEnv]:
    db = Database(tmp_path / "chart.sqlite3")
    await db.connect()
    try:
        yield ServiceEnv(db, Clock(NOW))
    finally:
        await db.close()


# -- the series storage returns -------------------------------------------------------------


async def test_a_daily_period_is_charted_by_the_hour_and_adds_up_to_the_total(
    env: ServiceEnv,
) -> None:
    env.clock.now = TODAY - 600  # yesterday: not in today's chart
    await env.finish(await env.reserve(user=5, outputs=4))
    env.clock.now = TODAY + 9 * HOUR_SECONDS + 60
    await env.finish(await env.reserve(user=5, outputs=4), charged=3)
    env.clock.now = NOW
    await env.finish(await env.reserve(user=6, outputs=2))
    failed = await env.reserve(user=7, outputs=4)
    await env.store.mark_failed(failed.id, "rejected")  # refunded, nothing charged
    await env.reserve(user=8, outputs=1)  # still running: its credits are held
    await env.reserve(user=9, outputs=1, guild=OTHER_GUILD)

    report = await env.mod.usage_report(GUILD)
    series = report.spend_series
    assert (series.start, series.step, len(series.credits)) == (TODAY, HOUR_SECONDS, 24)
    expected = [0] * 24
    expected[9], expected[15] = 3, 2 + 1
    assert list(series.credits) == expected
    assert sum(series.credits) == report.total_credits
    assert series.starts[15] == TODAY + 15 * HOUR_SECONDS


async def test_a_weekly_period_is_charted_by_the_day_from_the_reset_hour(env: ServiceEnv) -> None:
    await env.settings(period="week", reset_hour=6)
    env.clock.now = MONDAY_6AM - 60  # the week before
    await env.finish(await env.reserve(outputs=4))
    env.clock.now = MONDAY_6AM + 60
    await env.finish(await env.reserve(outputs=1))
    # Reserved on Tuesday just before the day turns at 06:00, charged after it: the credits
    # count on Tuesday, where the reservation is, as they count in the reservation's period.
    env.clock.now = MONDAY_6AM + 2 * DAY_SECONDS - 60
    late = await env.reserve(outputs=4)
    env.clock.now = NOW
    await env.finish(late, charged=2)
    # Refunded to the member, but PixelDojo charged for it: the guild spent 1.
    refunded = await env.reserve(outputs=1)
    await env.store.mark_submitted(refunded.id, api_job_id="x", status_url="u", expires_at=None)
    await env.store.mark_completed(refunded.id, charged=1)
    await env.store.mark_failed(refunded.id, "could not deliver")

    report = await env.mod.usage_report(GUILD)
    series = report.spend_series
    assert (series.start, series.step) == (MONDAY_6AM, DAY_SECONDS)
    assert list(series.credits) == [1, 2, 1, 0, 0, 0, 0]
    assert sum(series.credits) == report.total_credits == 4

    previous = await env.mod.usage_report(GUILD, period_start=MONDAY_6AM - 60)
    assert previous.spend_series.start == MONDAY_6AM - 7 * DAY_SECONDS
    assert list(previous.spend_series.credits) == [0, 0, 0, 0, 0, 0, 4]


async def test_a_month_has_a_span_for_each_of_its_days(env: ServiceEnv) -> None:
    await env.settings(period="month")
    await env.finish(await env.reserve(outputs=2))
    series = (await env.mod.usage_report(GUILD)).spend_series
    assert series.start == datetime(2025, 3, 1, tzinfo=UTC).timestamp()
    assert len(series.credits) == 31
    assert series.credits[11] == 2 and sum(series.credits) == 2


async def test_credits_that_never_reset_are_charted_over_the_last_30_days(
    env: ServiceEnv,
) -> None:
    await env.settings(period="none")
    env.clock.now = NOW - 40 * DAY_SECONDS  # in the total, too old for the chart
    await env.finish(await env.reserve(outputs=4))
    env.clock.now = NOW - DAY_SECONDS
    await env.finish(await env.reserve(outputs=1))
    env.clock.now = NOW
    await env.finish(await env.reserve(outputs=2))

    report = await env.mod.usage_report(GUILD)
    series = report.spend_series
    assert (series.start, series.step) == (TODAY - 29 * DAY_SECONDS, DAY_SECONDS)
    assert list(series.credits) == [0] * 28 + [1, 2]
    assert report.total_credits == 7


async def test_a_period_without_usage_has_an_empty_series_and_no_chart(env: ServiceEnv) -> None:
    report = await env.mod.usage_report(GUILD)
    assert report.spend_series.credits == (0,) * 24
    assert render_usage_chart(report, {}) is None


# -- the picture ------------------------------------------------------------------------------


def week_report(credits: list[int], spenders: list[int]) -> UsageReport:
    """A weekly report with these credits per day and top members' spending."""
    return UsageReport(
        guild_id=GUILD,
        period=Period.WEEK,
        period_start=MONDAY_6AM,
        period_end=MONDAY_6AM + 7 * DAY_SECONDS,
        total_credits=sum(credits),
        refunded_credits=0,
        previous_period_start=MONDAY_6AM - 7 * DAY_SECONDS,
        previous_total_credits=0,
        top_users=tuple(
            UserUsage(user_id=TOP + rank, credits=spent, jobs=1)
            for rank, spent in enumerate(spenders)
        ),
        jobs_posted=len(spenders),
        jobs_failed=0,
        jobs_active=0,
        spend_cap=None,
        spend_series=SpendSeries(MONDAY_6AM, DAY_SECONDS, tuple(credits)),
    )


def rgb(colour: str) -> tuple[int, int, int]:
    return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16))


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return image.convert("RGB")


def runs(counts: list[int]) -> list[tuple[int, int, int]]:
    """(first index, length, peak count) of each run of non-zero counts."""
    found: list[tuple[int, int, int]] = []
    start = None
    for index, count in enumerate([*counts, 0]):
        if count and start is None:
            start = index
        elif not count and start is not None:
            found.append((start, index - start, max(counts[start:index])))
            start = None
    return found


def span_bars(image: Image.Image) -> list[tuple[int, int, int]]:
    """(left edge, width, height) in px of each bar of the spans chart, left to right."""
    colour = rgb(SPAN_COLOUR)
    pixels = image.load()
    assert pixels is not None
    columns = [
        sum(1 for y in range(image.height) if pixels[x, y] == colour) for x in range(image.width)
    ]
    return runs(columns)


def member_bars_px(image: Image.Image) -> list[tuple[int, int, int]]:
    """(top edge, thickness, length) in px of each bar of the members chart, top to bottom."""
    colour = rgb(MEMBER_COLOUR)
    pixels = image.load()
    assert pixels is not None
    rows = [
        sum(1 for x in range(image.width) if pixels[x, y] == colour) for y in range(image.height)
    ]
    return runs(rows)


def test_the_chart_is_a_small_png_with_a_bar_where_credits_were_spent() -> None:
    png = render_usage_chart(week_report([0, 5, 0, 10, 0, 0, 0], [9, 6]), {TOP + 1: "alice"})
    assert png is not None and len(png) <= MAX_CHART_BYTES
    image = decode(png)
    assert image.size == (WIDTH_PX, HEIGHT_PX)

    # Two days with credits, two bars, the days without credits none: Tuesday's, then
    # Thursday's two day-slots to its right (a bar fills 0.8 of its slot), twice as tall.
    (tuesday_x, width, tuesday_h), (thursday_x, _, thursday_h) = span_bars(image)
    assert thursday_x - tuesday_x == pytest.approx(2 * width / 0.8, abs=3)
    assert tuesday_h > 50
    assert thursday_h == pytest.approx(2 * tuesday_h, abs=2)
    assert thursday_x < WIDTH_PX / 2  # the spans on the left, the members on the right

    # The top members, the biggest spender on top, bars as long as their credits.
    (first_y, _, first_w), (second_y, _, second_w) = member_bars_px(image)
    assert first_y < second_y
    assert second_w == pytest.approx(first_w * 6 / 9, abs=2)


def test_the_members_chart_shows_at_most_its_limit_and_only_spenders() -> None:
    spenders = [30 - rank for rank in range(12)] + [0]
    report = week_report([1, 0, 0, 0, 0, 0, 0], spenders)
    bars = member_bars(report, {TOP: "top spender"})
    assert len(bars) == CHART_MEMBERS
    assert bars[0].label == "1. top spender" and bars[1].label == "2. member …0101"
    png = render_usage_chart(report, {})
    assert png is not None
    assert len(member_bars_px(decode(png))) == CHART_MEMBERS
    # Failed jobs only: a member with nothing spent gets no bar.
    assert member_bars(week_report([1, 0, 0, 0, 0, 0, 0], [1, 0]), {}) == member_bars(
        week_report([1, 0, 0, 0, 0, 0, 0], [1]), {}
    )


HOSTILE_NAMES = {
    TOP: r"$\frac{1}$ broken math",
    TOP + 1: "$x^2$",
    TOP + 2: "Bob\u202eLIVE\u202c\u200b",
    TOP + 3: "line\nbreak\tand\x00nul",
    TOP + 4: "Z\u0351\u0352\u0353\u0354\u0355\u0356algo",
    TOP + 5: "田中",
    TOP + 6: "@everyone <@123> [link](https://x.test)",
    TOP + 7: "a" * 200,
}


def test_member_names_are_drawn_as_plain_short_text() -> None:
    assert inert_name("$x^2$") == "$x^2$"  # drawn literally: math parsing is off
    assert inert_name("Bob\u202eLIVE\u202c\u200b") == "BobLIVE"
    assert inert_name("line\nbreak\tand\x00nul") == "line break andnul"
    assert inert_name("田中") == ""  # nothing the font can draw: labelled by id instead
    assert inert_name("Zoë 田中") == "Zoë ??"
    assert len(inert_name("a" * 200)) == 18 and inert_name("a" * 200).endswith("…")
    assert inert_name("Z\u0351\u0352\u0353\u0354\u0355\u0356algo").count("algo") == 1
    assert len(inert_name("Z" + "\u0301" * 50)) <= 3
    assert member_bars(week_report([1] * 7, [8]), {TOP: "田中"})[0].label == "1. member …0100"


def test_hostile_names_neither_break_the_chart_nor_warn() -> None:
    report = week_report([3, 1, 4, 1, 5, 9, 2], [20, 18, 16, 14, 12, 10, 8, 6])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. matplotlib's "Glyph ... missing from font"
        png = render_usage_chart(report, HOSTILE_NAMES)
    assert png is not None and decode(png).size == (WIDTH_PX, HEIGHT_PX)
    assert len(member_bars_px(decode(png))) == 8


def test_spending_without_a_member_to_name_still_draws() -> None:
    png = render_usage_chart(week_report([2, 0, 0, 0, 0, 0, 0], []), {})
    assert png is not None
    image = decode(png)
    assert (len(span_bars(image)), member_bars_px(image)) == (1, [])


@pytest.mark.parametrize(
    ("period", "step", "days"),
    [
        (Period.DAY, HOUR_SECONDS, 24),
        (Period.MONTH, DAY_SECONDS, 31),
        (Period.NONE, DAY_SECONDS, 30),
    ],
)
def test_every_period_draws_one_slot_per_span_within_the_bounds(
    period: Period, step: int, days: int
) -> None:
    credits = [index % 4 + 1 for index in range(days)]
    report = replace(
        week_report(credits, [sum(credits)]),
        period=period,
        spend_series=SpendSeries(MONDAY_6AM, step, tuple(credits)),
    )
    png = render_usage_chart(report, {TOP: "x" * 40})
    assert png is not None and len(png) <= MAX_CHART_BYTES
    image = decode(png)
    assert image.size == (WIDTH_PX, HEIGHT_PX)
    assert len(span_bars(image)) == days


def test_the_bot_starts_without_importing_matplotlib() -> None:
    code = (
        "import sys, bot.app, bot.services, cogs.moderation, bot.credits.usage_chart; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'numpy')))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == "[]"
