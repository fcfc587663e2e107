"""One error path for slash commands, result buttons and the Vary form: an unexpected error is
answered privately, says only what actually happened to the member's credits, and is logged
once with what failed (never the interaction token)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from bot.discord_ui import embeds
from tests.doubles.discord_double import InteractionRecord, MessageRecord
from tests.helpers import (
    ALICE_ID,
    CHANNEL_ID,
    GUILD_ID,
    LOG_CHANNEL_ID,
    MOD_ID,
    OWNER_ID,
    Harness,
    job_id_of,
    queued_job_id,
)

APOLOGY = "Something went wrong on my side."


class Boom(RuntimeError):
    """The unexpected error the tests inject."""


async def boom(*_args: Any, **_kwargs: Any) -> Any:
    raise Boom("injected failure")


def sync_boom(*_args: Any, **_kwargs: Any) -> Any:
    raise Boom("injected failure")


def failures_logged(caplog: pytest.LogCaptureFixture, what: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info and r.exc_info[0] is Boom and what in r.message]


async def private_reply(harness: Harness, record: InteractionRecord) -> MessageRecord:
    reply = await harness.reply(record)
    assert reply.ephemeral and not reply.loading
    assert reply.allowed_mentions == {"parse": []}
    return reply


async def posted_result(harness: Harness) -> MessageRecord:
    job_id = await queued_job_id(harness, await harness.imagine("a paper boat", seed=5))
    return await harness.result_for(job_id)


async def remaining(harness: Harness, user_id: int = ALICE_ID) -> int | None:
    return (await harness.bot.services.limits.balance(GUILD_ID, user_id, ())).remaining


async def test_a_button_failing_after_its_defer_still_answers(
    harness: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = await posted_result(harness)
    before = await remaining(harness)
    monkeypatch.setattr(harness.bot.services.generation, "reserve", boom)
    custom_id = f"pdj:reroll:{job_id_of(result)}"
    click = await harness.double.click(result.id, custom_id, user_id=ALICE_ID)
    reply = await private_reply(harness, click)  # fills the "thinking…" message
    assert reply.content == f"{APOLOGY} Nothing was charged; please try again."
    assert await remaining(harness) == before
    assert len(failures_logged(caplog, f"button {custom_id!r} by user {ALICE_ID}")) == 1
    assert click.token not in caplog.text


async def test_a_failing_vary_submit_is_answered(
    harness: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = await posted_result(harness)
    job_id = job_id_of(result)
    click = await harness.double.click(result.id, f"pdj:vary:{job_id}", user_id=ALICE_ID)
    await click.wait_for_response()
    assert click.modal is not None
    [row] = click.modal["components"]
    text_input = row.get("component") or row["components"][0]
    monkeypatch.setattr(harness.bot.services.generation, "reserve", boom)
    submit = await harness.double.submit_modal(
        click.modal["custom_id"],
        {text_input["custom_id"]: "a paper boat at night"},
        user_id=ALICE_ID,
        guild_id=GUILD_ID,
        channel_id=CHANNEL_ID,
    )
    reply = await private_reply(harness, submit)
    assert reply.content == f"{APOLOGY} Nothing was charged; please try again."
    assert len(failures_logged(caplog, f"modal {click.modal['custom_id']!r}")) == 1
    assert len(harness.api.submissions) == 1


async def test_a_failing_mod_command_says_nothing_about_charges(
    harness: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness.bot.services.moderation, "audit_entries", boom)
    record = await harness.command("mod audit", user_id=OWNER_ID)
    reply = await private_reply(harness, record)
    assert reply.content == f"{APOLOGY} Please try again."
    assert len(failures_logged(caplog, f"/mod audit by user {OWNER_ID}")) == 1


async def test_an_error_after_the_job_started_says_it_runs(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    presenter, submit = harness.bot.presenter, harness.bot.services.pixeldojo.submit
    publish = presenter.publish
    answered = asyncio.Event()  # the job stays with the bot until the member has the reply

    async def publish_then_fail(*args: Any, **kwargs: Any) -> Any:
        await publish(*args, **kwargs)
        raise Boom("after the job was handed to the runner")

    async def submit_after_the_reply(*args: Any, **kwargs: Any) -> Any:
        await answered.wait()
        return await submit(*args, **kwargs)

    monkeypatch.setattr(presenter, "publish", publish_then_fail)
    monkeypatch.setattr(harness.bot.services.pixeldojo, "submit", submit_after_the_reply)
    record = await harness.imagine("a paper boat")
    await harness.double.wait_until(lambda: bool(record.followups))  # after the status
    reply = await private_reply(harness, record)
    answered.set()
    job = (await harness.bot.services.store.recent_for_user(GUILD_ID, ALICE_ID, limit=1))[0]
    assert reply.content == (
        f"{APOLOGY} Job #{job.id} is still running and its result will be posted in the channel; "
        "you are only charged if it posts images."
    )
    result = await harness.result_for(job.id)  # and it does run, once
    assert len(result.attachments) == 1 and len(harness.api.submissions) == 1


async def test_an_error_that_refunded_the_job_says_so(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await remaining(harness)
    monkeypatch.setattr(embeds, "status", sync_boom)  # the status message cannot be built
    reply = await private_reply(harness, await harness.imagine("a paper boat"))
    job = (await harness.bot.services.store.recent_for_user(GUILD_ID, ALICE_ID, limit=1))[0]
    assert reply.content == (
        f"{APOLOGY} Job #{job.id} did not run and its credits were returned; please try again."
    )
    assert await remaining(harness) == before
    assert harness.api.submissions == []


# -- after a committed action: notices are best-effort, and an error reply says what was saved --


async def grants(harness: Harness) -> list[int]:
    entries = await harness.bot.services.moderation.audit_entries(GUILD_ID, limit=50)
    return [e.target_id for e in entries if e.action == "credits.grant"]


async def log_channel_unreachable(harness: Harness, **settings: int) -> None:
    """Configure the log channel, then cut it off: posting there fails with an aiohttp
    connection error, not a Discord HTTP status."""
    await harness.reply(
        await harness.command(
            "mod settings", {"log_channel": LOG_CHANNEL_ID, **settings}, user_id=OWNER_ID
        )
    )
    harness.double.drop_connections("POST", rf"/channels/{LOG_CHANNEL_ID}/messages", count=99)


async def test_an_unreachable_log_channel_does_not_fail_a_moderator_action(
    harness: Harness,
) -> None:
    await log_channel_unreachable(harness)
    record = await harness.command(
        "mod credits grant", {"user": ALICE_ID, "amount": 5}, user_id=OWNER_ID
    )
    reply = await private_reply(harness, record)
    assert reply.content == f"✅ You granted <@{ALICE_ID}> 5 extra credits today."
    assert await grants(harness) == [ALICE_ID]
    logged = [m.content or "" for m in harness.double.channel_messages(LOG_CHANNEL_ID)]
    assert not any("granted" in text for text in logged)  # it really was cut off


async def test_an_error_after_a_moderator_action_says_it_was_saved(harness: Harness) -> None:
    # The first follow-up (the "✅" reply) hits a network outage; the error reply gets through.
    harness.double.drop_connections("POST", r"/webhooks/\d+/[^/]+", count=1)
    record = await harness.command(
        "mod credits grant", {"user": ALICE_ID, "amount": 5}, user_id=OWNER_ID
    )
    reply = await private_reply(harness, record)
    assert reply.content == (
        f"{APOLOGY} This was saved, though: you granted <@{ALICE_ID}> 5 extra credits today. "
        "It is in `/mod audit`; don't repeat it."
    )
    assert await grants(harness) == [ALICE_ID]


@pytest.mark.parametrize("failure", ["log channel unreachable", "notifier raises"])
async def test_a_spend_cap_notice_that_fails_does_not_fail_the_generation(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    await log_channel_unreachable(harness, spend_cap=5)
    if failure == "notifier raises":
        monkeypatch.setattr(harness.bot.services.generation, "notify_moderators", boom)
    before = await remaining(harness)
    job_id = await queued_job_id(harness, await harness.imagine("a paper boat", num_outputs=4))
    result = await harness.result_for(job_id)  # the 80% notice could not go out; the job ran
    assert len(result.attachments) == 4
    assert await remaining(harness) == before - 4  # type: ignore[operator]


async def test_an_error_after_a_moderator_deleted_a_result_says_it_is_gone(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = await posted_result(harness)
    monkeypatch.setattr(harness.bot.services.moderation, "record_result_deletion", boom)
    click = await harness.double.click(result.id, f"pdj:delete:{job_id_of(result)}", user_id=MOD_ID)
    reply = await private_reply(harness, click)
    assert reply.content == f"{APOLOGY} The result was deleted, though."
    assert result.deleted
