"""`/mod report` attaches a PNG chart of the period's spending and its top members, through the
real discord.py client and the Discord double; the text report posts whatever the chart does."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest
from PIL import Image

from bot.credits import usage_chart
from bot.credits.report import HOUR_SECONDS, UsageReport
from tests.doubles.discord_double import MessageRecord
from tests.helpers import ALICE_ID, GUILD_ID, OWNER_ID, Harness, queued_job_id
from tests.test_usage_chart import member_bars_px, span_bars

Renders = list[tuple[UsageReport, dict[int, str]]]


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> Renders:
    """What the cog asked the chart to draw (and drew: the real renderer runs)."""
    calls: Renders = []
    real = usage_chart.render_usage_chart

    def spy(report: UsageReport, names: Any) -> bytes | None:
        calls.append((report, dict(names)))
        return real(report, names)

    monkeypatch.setattr(usage_chart, "render_usage_chart", spy)
    return calls


async def generate(harness: Harness, user_id: int = ALICE_ID) -> float:
    """One finished `/imagine`; pins the report's clock to its reservation, so the report is
    of the period the job is in even if that period ends meanwhile."""
    job_id = await queued_job_id(harness, await harness.imagine(user_id=user_id))
    await harness.result_for(job_id)
    job = await harness.bot.services.store.get(job_id)
    assert job is not None
    harness.bot.services.moderation.clock = lambda: job.created_at
    return job.created_at


async def report(harness: Harness) -> MessageRecord:
    reply = await harness.reply(await harness.command("mod report", user_id=OWNER_ID))
    assert reply.ephemeral
    assert reply.embeds[0]["title"].startswith("📊 Usage report")  # the text report
    return reply


async def test_the_report_attaches_a_chart_of_the_periods_spending(
    harness: Harness, renders: Renders
) -> None:
    alice = harness.double.guilds[GUILD_ID].member(ALICE_ID)
    assert alice is not None
    alice.nick = "Alice $x$ ✨"
    reserved = await generate(harness)

    reply = await report(harness)
    fields = {f["name"]: f["value"] for f in reply.embeds[0]["fields"]}
    assert fields["Top members"].startswith(f"1. <@{ALICE_ID}> · 1 credit")
    assert reply.allowed_mentions == {"parse": []}

    (attachment,) = reply.attachments
    assert attachment.filename == "usage.png"
    assert attachment.size <= usage_chart.MAX_CHART_BYTES
    image = Image.open(io.BytesIO(attachment.data))
    assert (image.format, image.size) == ("PNG", (800, 400))
    image = image.convert("RGB")
    assert len(span_bars(image)) == 1  # one hour of today with credits spent
    assert len(member_bars_px(image)) == 1

    # The chart drew the report's own figures, and named the member as the server shows her.
    ((drawn, names),) = renders
    series = drawn.spend_series
    assert (series.step, len(series.credits)) == (HOUR_SECONDS, 24)
    hour = int((reserved - series.start) // HOUR_SECONDS)
    assert series.credits[hour] == 1 == sum(series.credits) == drawn.total_credits
    assert names == {ALICE_ID: "Alice $x$ ✨"}


async def test_a_member_who_left_is_charted_by_id(harness: Harness, renders: Renders) -> None:
    await generate(harness)
    guild = harness.double.guilds[GUILD_ID]
    guild.members = [m for m in guild.members if m.id != ALICE_ID]

    (attachment,) = (await report(harness)).attachments
    assert Image.open(io.BytesIO(attachment.data)).size == (800, 400)
    ((drawn, names),) = renders
    assert names == {}
    assert usage_chart.member_bars(drawn, names)[0].label == f"1. member …{str(ALICE_ID)[-4:]}"


async def test_a_period_without_usage_answers_without_a_chart(
    harness: Harness, renders: Renders
) -> None:
    reply = await report(harness)
    assert reply.attachments == []
    fields = {f["name"]: f["value"] for f in reply.embeds[0]["fields"]}
    assert fields["Top members"] == "nobody yet"
    assert renders == []  # nothing to draw, so no members looked up and nothing drawn


async def test_a_chart_that_fails_to_draw_is_logged_and_the_report_still_posts(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await generate(harness)

    def broken(report: UsageReport, names: Any) -> bytes | None:
        raise RuntimeError("the renderer broke")

    monkeypatch.setattr(usage_chart, "render_usage_chart", broken)
    with caplog.at_level(logging.ERROR, logger="cogs.moderation"):
        reply = await report(harness)
    assert reply.attachments == []
    assert any("could not draw the usage chart" in r.getMessage() for r in caplog.records)


async def test_a_chart_over_the_upload_limit_is_left_out(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await generate(harness)
    harness.double.guilds[GUILD_ID].filesize_limit = 1024  # interactions report this limit

    with caplog.at_level(logging.WARNING, logger="cogs.moderation"):
        reply = await report(harness)
    assert reply.attachments == []
    assert any("over the upload limit" in r.getMessage() for r in caplog.records)
