"""A PixelDojo that misbehaves, end to end: what the member sees and what they are charged."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.helpers import (
    ALICE_ID,
    BOB_ID,
    Harness,
    MessageRecord,
    footer_has,
    queued_job_id,
    title_of,
)


async def outcome_for(harness: Harness, job_id: int, timeout: float = 10) -> MessageRecord:
    """The result message of the job, or its status message once it shows a failure."""
    return await harness.double.wait_for_message(
        lambda m: (
            footer_has(m, f"Job #{job_id}")
            and (bool(m.attachments) or title_of(m).startswith("❌"))
        ),
        timeout,
    )


async def used_credits(harness: Harness, user_id: int) -> int:
    row = await harness.bot.services.db.fetchone(
        "SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE user_id = ? AND kind != 'grant'",
        (user_id,),
    )
    return row[0]


async def test_a_status_url_on_another_origin_never_picks_the_job_to_poll(
    harness: Harness,
) -> None:
    bob_job = await queued_job_id(harness, await harness.imagine("a red boat", user_id=BOB_ID))
    bob_result = await outcome_for(harness, bob_job)
    bob_record = await harness.bot.services.store.get(bob_job)
    assert bob_result.attachments and bob_record is not None and bob_record.api_job_id
    bob_polls = harness.api.jobs[bob_record.api_job_id].polls

    # PixelDojo (or whoever answers for it) now points every statusUrl at Bob's job.
    harness.api.status_url_format = f"https://status.elsewhere.example/jobs/{bob_record.api_job_id}"
    alice_job = await queued_job_id(harness, await harness.imagine("a blue kite"))
    alice_result = await outcome_for(harness, alice_job)

    alice_record = await harness.bot.services.store.get(alice_job)
    assert alice_record is not None and alice_record.api_job_id != bob_record.api_job_id
    assert alice_result.attachments, alice_result.embeds
    assert alice_result.attachments[0].data != bob_result.attachments[0].data
    assert harness.api.jobs[alice_record.api_job_id].polls >= 1
    assert harness.api.jobs[bob_record.api_job_id].polls == bob_polls
    assert await used_credits(harness, ALICE_ID) == 1


def attachments_for(harness: Harness, job_id: int) -> list[MessageRecord]:
    return [
        m
        for m in harness.double.messages.values()
        if m.attachments and footer_has(m, f"Job #{job_id}")
    ]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"Claim your free Nitro at https://evil.example/nitro", "image/png"),
        (b"<html><body>502 Bad Gateway</body></html>", "text/html"),
        (b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8, "image/png"),
    ],
)
async def test_a_file_that_is_not_an_image_is_never_posted(
    harness: Harness, body: bytes, content_type: str
) -> None:
    harness.api.replace_images(body, content_type)
    job_id = await queued_job_id(harness, await harness.imagine("a lighthouse", num_outputs=2))
    failure = await outcome_for(harness, job_id)
    assert title_of(failure).startswith("❌")
    assert "not a PNG, JPEG or WebP image" in failure.embeds[0]["description"]
    assert "2 credits were refunded" in failure.embeds[0]["description"]
    assert await used_credits(harness, ALICE_ID) == 0
    assert attachments_for(harness, job_id) == []


async def test_a_result_redirecting_to_a_private_host_is_refused(harness: Harness) -> None:
    # Another loopback origin: refused although the fake serves it. (Later hops are checked
    # the same way: tests/test_pixeldojo_client.py::test_downloads_never_reach_a_private_address.)
    api = harness.api
    api.fault_next(
        "redirect", route="download", location=f"http://localhost:{api.port}/files/final.png"
    )
    job_id = await queued_job_id(harness, await harness.imagine("a lighthouse"))
    failure = await outcome_for(harness, job_id)
    assert "private network address" in failure.embeds[0]["description"]
    assert await used_credits(harness, ALICE_ID) == 0
    assert attachments_for(harness, job_id) == []
    fetched = [path for method, path, *_ in api.request_log if path.startswith("/files/")]
    assert len(fetched) == 1


async def test_a_result_redirecting_to_the_api_is_refused(harness: Harness) -> None:
    # Followed, the hop would be an API request (key and all) that no request budget counted.
    api = harness.api
    api.fault_next("redirect", route="download", location=f"{api.base_url}/jobs/anything")
    job_id = await queued_job_id(harness, await harness.imagine("a lighthouse"))
    failure = await outcome_for(harness, job_id)
    assert "image link redirects somewhere unusable" in failure.embeds[0]["description"]
    assert "1 credit was refunded" in failure.embeds[0]["description"]
    assert await used_credits(harness, ALICE_ID) == 0
    assert attachments_for(harness, job_id) == []
    assert not any(path.endswith("/jobs/anything") for _, path, *_ in api.request_log)


async def test_a_job_listing_more_images_than_asked_posts_only_those_paid_for(
    harness: Harness,
) -> None:
    harness.api.list_extra_images(58)  # 60 links for a 2-image job
    job_id = await queued_job_id(harness, await harness.imagine("a lighthouse", num_outputs=2))
    result = await outcome_for(harness, job_id)
    assert len(result.attachments) == 2, result.embeds
    assert await used_credits(harness, ALICE_ID) == 2
    fetched = [path for _, path, *_ in harness.api.request_log if path.startswith("/files/")]
    assert len(fetched) == 2


def pixel_bomb() -> bytes:
    """A 13000×13000 PNG of 20 KiB: 169 megapixels, 676 MB once decoded as RGBA."""
    out = io.BytesIO()
    Image.new("1", (13_000, 13_000)).save(out, format="PNG")
    return out.getvalue()


async def test_an_image_with_absurdly_many_pixels_is_refused_undecoded(harness: Harness) -> None:
    harness.api.replace_images(pixel_bomb())
    job_id = await queued_job_id(harness, await harness.imagine("a lighthouse"))
    failure = await outcome_for(harness, job_id)
    assert title_of(failure).startswith("❌")
    assert "too large for the bot" in failure.embeds[0]["description"]
    assert await used_credits(harness, ALICE_ID) == 0
