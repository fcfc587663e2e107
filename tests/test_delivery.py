"""Delivering a result when Discord misbehaves: network outages, a deleted channel."""

from __future__ import annotations

import asyncio

from bot.fake_pixeldojo import FakePixelDojo
from bot.jobs import JobState
from tests.conftest import CHANNEL_ID, Harness, footer_has, queued_job_id, title_of


def hold_jobs(api: FakePixelDojo) -> None:
    """New PixelDojo jobs stay running until `finish_jobs` (no race with the test's steps)."""
    api.set_duration(24 * 3600)


def finish_jobs(api: FakePixelDojo) -> None:
    for job in api.jobs.values():
        job.complete_at = 0.0


async def test_a_dropped_connection_while_posting_is_retried(harness: Harness) -> None:
    hold_jobs(harness.api)
    job_id = await queued_job_id(harness, await harness.imagine("a kite in the storm"))
    await harness.double.wait_for_message(
        lambda m: footer_has(m, f"Job #{job_id}") and title_of(m).startswith("🎨")
    )
    # The next post to the channel (the result) hits a broken connection.
    harness.double.drop_connections("POST", rf"/channels/{CHANNEL_ID}/messages")
    finish_jobs(harness.api)

    job = await asyncio.wait_for(harness.bot.runner.wait_finished(job_id), 10)
    assert job.state is JobState.POSTED, job.error
    assert job.credits_charged == 1
    result = await harness.result_for(job_id)
    assert job.result_message_id == result.id
    posts = harness.double.requests_to("POST", rf"/channels/{CHANNEL_ID}/messages")
    assert [r.status for r in posts[-2:]] == [0, 200]  # dropped (never answered), then posted
    assert [m.id for m in harness.double.channel_messages(CHANNEL_ID) if m.attachments] == [
        result.id
    ]
