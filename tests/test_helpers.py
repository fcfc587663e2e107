"""The shared test helpers find exactly the job they are asked about (job 1 is not job 12)."""

from __future__ import annotations

from tests.doubles.discord_double import MessageRecord
from tests.helpers import footer_has, job_id_of, job_named_by


def message(footer: str | None) -> MessageRecord:
    embed = (
        {"title": "🎨 Done"} if footer is None else {"title": "🎨 Done", "footer": {"text": footer}}
    )
    return MessageRecord(id=1, channel_id=2, guild_id=3, author_id=4, content=None, embeds=[embed])


def test_a_job_number_is_matched_whole() -> None:
    twelve = message("Job #12 · Flux Kontext Pro")
    assert footer_has(twelve, "Job #12")
    assert not footer_has(twelve, "Job #1")
    assert footer_has(message("Job #1"), "Job #1")
    assert not footer_has(message("Job #1"), "Job #12")


def test_the_job_a_message_names() -> None:
    assert job_named_by(message("Job #12 · Flux Kontext Pro · re-encoded")) == 12
    assert job_id_of(message("Job #7")) == 7
    assert job_named_by(message("1 credit per image · refunded automatically")) is None
    assert job_named_by(message(None)) is None
