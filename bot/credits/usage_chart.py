"""The `/mod report` chart: credits spent over the period, and its top members, as a PNG.

Drawn with matplotlib's Agg renderer, imported on first use so the bot starts without it. Call
`render_usage_chart` off the event loop (`asyncio.to_thread`): a render takes tens of
milliseconds, the first one in a process a second or so (matplotlib's import).

Member names are member text. In a picture nothing pings or links, but matplotlib reads
`$...$` as math and draws what the font lacks as boxes: names are drawn with math parsing off,
without control or formatting characters (bidi overrides, zero-width joiners), and shortened.
"""

from __future__ import annotations

import io
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING

from bot.credits.periods import Period
from bot.credits.report import HOUR_SECONDS, SpendSeries, UsageReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes

WIDTH_PX = 800
HEIGHT_PX = 400
DPI = 100
MAX_CHART_BYTES = 200 * 1024
"""No chart is larger (a flat 800×400 chart is ~20-40 KB); a bigger one is an error."""
CHART_MEMBERS = 8
"""How many of the report's top members the chart shows."""
NAME_MAX = 18
"""Characters of a member's name the chart shows (then "…")."""

SPAN_COLOUR = "#7c3aed"  # the embeds' brand colour
MEMBER_COLOUR = "#0d9488"
TEXT_COLOUR = "#1f2937"
GRID_COLOUR = "#e5e7eb"

# matplotlib is not documented as thread-safe: one render at a time.
_RENDER_LOCK = threading.Lock()


class ChartTooLarge(Exception):
    """The PNG came out larger than `MAX_CHART_BYTES`."""


@dataclass(frozen=True)
class MemberBar:
    """One bar of the top-members chart."""

    label: str
    credits: int


def has_usage(report: UsageReport) -> bool:
    """Whether the period has anything to draw (no chart otherwise)."""
    return any(report.spend_series.credits) or any(u.credits > 0 for u in report.top_users)


def member_bars(report: UsageReport, names: Mapping[int, str]) -> list[MemberBar]:
    """The top members who spent credits, best first, labelled "1. name" as the text report
    ranks them; `names` maps member ids to display names (raw member text), and a member
    without one is shown by the end of their id."""
    bars = []
    for rank, usage in enumerate(report.top_users[:CHART_MEMBERS], start=1):
        if usage.credits <= 0:
            continue
        name = inert_name(names.get(usage.user_id, "")) or f"member …{str(usage.user_id)[-4:]}"
        bars.append(MemberBar(f"{rank}. {name}", usage.credits))
    return bars


def inert_name(name: str) -> str:
    """`name` as the chart draws it: one line without control or formatting characters, each
    character the font lacks as "?", at most `NAME_MAX` characters. "" if nothing readable is
    left."""
    kept: list[str] = []
    marks = 0
    for char in unicodedata.normalize("NFC", name):
        if char.isspace():
            char = " "  # tabs, line breaks and wide spaces: one line
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue
        marks = marks + 1 if category.startswith("M") else 0
        if marks and (not kept or marks > 2 or not _font_has(char)):
            continue  # nothing to combine with, "Zalgo" stacks that overprint, or no glyph
        kept.append(char if char == " " or _font_has(char) else "?")
    text = " ".join("".join(kept).split())
    if not text.replace("?", "").strip():
        return ""  # nothing readable: the caller labels the member by id
    return text if len(text) <= NAME_MAX else text[: NAME_MAX - 1].rstrip() + "…"


@cache
def _font_codepoints() -> frozenset[int]:
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"))
    return frozenset(FT2Font(path).get_charmap())


def _font_has(char: str) -> bool:
    return ord(char) in _font_codepoints()


def series_title(report: UsageReport) -> str:
    """What the spans chart is headed with."""
    if report.period is Period.NONE:
        return f"Credits per day, last {len(report.spend_series.credits)} days"
    if report.spend_series.step == HOUR_SECONDS:
        return "Credits per hour (UTC)"
    return "Credits per day"


def span_labels(series: SpendSeries) -> list[str]:
    """Each span's tick label: "14:00" for hours, "Mon 3" in a week, the day of the month
    otherwise (every day's is returned; the chart thins them out)."""
    moments = [datetime.fromtimestamp(start, UTC) for start in series.starts]
    if series.step == HOUR_SECONDS:
        return [f"{m:%H}:00" for m in moments]
    if len(moments) <= 7:
        return [f"{m:%a} {m.day}" for m in moments]
    return [
        f"{m.day}" if m.day != 1 and index else f"{m:%b} {m.day}" for index, m in enumerate(moments)
    ]


def render_usage_chart(report: UsageReport, names: Mapping[int, str]) -> bytes | None:
    """The report's chart as PNG bytes (`WIDTH_PX`×`HEIGHT_PX`), or None when the period has no
    usage. Blocking: run it in a thread. Raises `ChartTooLarge` past `MAX_CHART_BYTES`."""
    if not has_usage(report):
        return None
    with _RENDER_LOCK:
        png = _draw(report, member_bars(report, names))
    if len(png) > MAX_CHART_BYTES:
        raise ChartTooLarge(f"usage chart is {len(png)} bytes, over {MAX_CHART_BYTES}")
    return png


def _draw(report: UsageReport, bars: Sequence[MemberBar]) -> bytes:
    # Imported here: matplotlib costs ~0.5 s of start-up, and only /mod report needs it.
    # The Figure API with an explicit Agg canvas, not pyplot: no global state, no GUI backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    figure.set_facecolor("white")
    spans_axes, members_axes = figure.subplots(1, 2, width_ratios=(3, 2))
    _draw_spans(spans_axes, report)
    _draw_members(members_axes, bars)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _style(axes: Axes, title: str) -> None:
    axes.set_title(title, loc="left", fontsize=11, color=TEXT_COLOUR, parse_math=False)
    axes.tick_params(colors=TEXT_COLOUR, labelsize=8, length=0)
    for side in ("top", "right", "left"):
        axes.spines[side].set_visible(False)
    axes.spines["bottom"].set_color(GRID_COLOUR)
    axes.set_axisbelow(True)


def _draw_spans(axes: Axes, report: UsageReport) -> None:
    from matplotlib.ticker import MaxNLocator

    series = report.spend_series
    _style(axes, series_title(report))
    positions = list(range(len(series.credits)))
    axes.bar(positions, series.credits, width=0.8, color=SPAN_COLOUR, linewidth=0)
    labels = span_labels(series)
    every = max(1, -(-len(labels) // 8))  # at most 8 labels
    shown = positions[::every]
    axes.set_xticks(shown, [labels[i] for i in shown])
    axes.set_xlim(-0.6, len(positions) - 0.4)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
    axes.set_ylim(0, max(1, *series.credits) * 1.1)
    axes.grid(axis="y", color=GRID_COLOUR, linewidth=0.8)


def _draw_members(axes: Axes, bars: Sequence[MemberBar]) -> None:
    from matplotlib.ticker import MaxNLocator

    _style(axes, "Top members")
    if not bars:
        axes.set_yticks([])
        axes.set_xticks([])
        axes.text(
            0.5,
            0.5,
            "nobody yet",
            ha="center",
            va="center",
            color=TEXT_COLOUR,
            transform=axes.transAxes,
            parse_math=False,
        )
        return
    positions = list(range(len(bars)))
    credits = [bar.credits for bar in bars]
    axes.barh(positions, credits, height=0.7, color=MEMBER_COLOUR, linewidth=0)
    # Member text: no math parsing, whatever the name contains.
    axes.set_yticks(positions, [bar.label for bar in bars], parse_math=False)
    # Top to bottom, the biggest spender first; bars keep their thickness with fewer members.
    axes.set_ylim(CHART_MEMBERS - 0.5, -0.5)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    axes.set_xlim(0, max(credits) * 1.15)
    axes.grid(axis="x", color=GRID_COLOUR, linewidth=0.8)
    for position, value in zip(positions, credits, strict=True):
        axes.text(
            value,
            position,
            f" {value}",
            va="center",
            fontsize=8,
            color=TEXT_COLOUR,
            parse_math=False,
        )
