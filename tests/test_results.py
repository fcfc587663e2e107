"""Result buttons (Reroll, Vary, Prompt, Delete) and image input, end to end."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from tests.doubles.discord_double import DiscordDouble, InteractionRecord, MessageRecord
from tests.doubles.pixeldojo import FakePixelDojo
from tests.helpers import (
    ALICE_ID,
    BOB_ID,
    CHANNEL_ID,
    GUILD_ID,
    MOD_ID,
    Harness,
    job_id_of,
    queued_job_id,
)


async def posted_result(harness: Harness, prompt: str = "a paper boat", **options) -> MessageRecord:
    job_id = await queued_job_id(harness, await harness.imagine(prompt, **options))
    return await harness.result_for(job_id)


def button_ids(message: MessageRecord) -> list[str]:
    return [c["custom_id"] for c in message.iter_components() if "custom_id" in c]


async def test_result_has_the_four_buttons(harness: Harness) -> None:
    result = await posted_result(harness)
    job_id = job_id_of(result)
    assert button_ids(result) == [f"pdj:{a}:{job_id}" for a in ("reroll", "vary", "info", "delete")]


async def test_reroll_keeps_prompt_and_ratio_with_a_new_seed(harness: Harness) -> None:
    first = await posted_result(harness, "a paper boat", aspect_ratio="16:9", num_outputs=2)
    first_id = job_id_of(first)
    click = await harness.double.click(first.id, f"pdj:reroll:{first_id}", user_id=BOB_ID)
    second_id = await queued_job_id(harness, click)
    second = await harness.result_for(second_id)
    one = {f["name"]: f["value"] for f in first.embeds[0]["fields"]}
    two = {f["name"]: f["value"] for f in second.embeds[0]["fields"]}
    assert second.embeds[0]["description"] == "a paper boat"
    assert two["Aspect ratio"] == "16:9" and len(second.attachments) == 2
    assert two["Seed"] != one["Seed"]
    assert two["Requested by"] == f"<@{BOB_ID}>"  # whoever clicks pays
    assert harness.api.submissions[-1]["aspect_ratio"] == "16:9"


def modal_text_input(record: InteractionRecord) -> dict[str, Any]:
    """The (only) text input of the modal the bot answered `record` with."""
    assert record.modal is not None
    return next(
        c
        for row in record.modal["components"]
        for c in row.get("components", [row.get("component")])
        if c
    )


async def test_vary_opens_a_modal_and_keeps_the_seed(harness: Harness) -> None:
    first = await posted_result(harness, "a paper boat", seed=1234)
    first_id = job_id_of(first)
    click = await harness.double.click(first.id, f"pdj:vary:{first_id}", user_id=ALICE_ID)
    await click.wait_for_response()
    assert click.modal is not None
    text_input = modal_text_input(click)
    assert text_input["value"] == "a paper boat"
    submit = await harness.double.submit_modal(
        click.modal["custom_id"],
        {text_input["custom_id"]: "a paper boat at night"},
        user_id=ALICE_ID,
        guild_id=GUILD_ID,
        channel_id=CHANNEL_ID,
    )
    varied = await harness.result_for(await queued_job_id(harness, submit))
    assert varied.embeds[0]["description"] == "a paper boat at night"
    assert harness.api.submissions[-1]["seed"] == 1234
    # Answered once, with the new job's own public message, where its result landed.
    assert len(submit.responses) == 1 and submit.followups == []
    assert submit.original is not None and varied.id == submit.original.id


async def test_vary_form_opened_before_a_restart_still_works(
    double: DiscordDouble, api: FakePixelDojo, bot_factory
) -> None:
    async with bot_factory():
        record = await double.slash(
            "imagine",
            {"prompt": "a paper boat", "seed": 99},
            user_id=ALICE_ID,
            guild_id=GUILD_ID,
            channel_id=CHANNEL_ID,
        )
        await record.wait_for_response()
        result = await double.wait_for_message(lambda m: bool(m.attachments))
        job_id = job_id_of(result)
        click = await double.click(result.id, f"pdj:vary:{job_id}", user_id=ALICE_ID)
        await click.wait_for_response()
        assert click.modal is not None
    # The member is still typing while the bot restarts (or ten minutes pass): a new process
    # has nothing of the old one in memory.
    async with bot_factory():
        submit = await double.submit_modal(
            click.modal["custom_id"],
            {modal_text_input(click)["custom_id"]: "a paper boat in a storm"},
            user_id=ALICE_ID,
            guild_id=GUILD_ID,
            channel_id=CHANNEL_ID,
        )
        reply = await submit.wait_for_response()
        assert reply["type"] == 4  # answered with the new job's status, not dropped
        assert submit.original is not None and job_id_of(submit.original) != job_id
        varied = await double.wait_for_message(
            lambda m: (
                bool(m.attachments) and m.embeds[0]["description"] == "a paper boat in a storm"
            )
        )
    assert click.modal["custom_id"] == f"pdj:vary-modal:{job_id}"  # like the buttons'
    assert api.submissions[-1]["seed"] == 99
    fields = {f["name"]: f["value"] for f in varied.embeds[0]["fields"]}
    assert fields["Seed"] == "99"


async def test_buttons_and_the_vary_form_belong_to_the_bot_not_an_extension(
    harness: Harness,
) -> None:
    # With every extension but /imagine unloaded, a result still carries its buttons and they
    # still answer: nothing an operator (or a failed reload) unloads can strip them silently.
    for extension in [name for name in harness.bot.extensions if name != "cogs.imagine"]:
        await harness.bot.unload_extension(extension)
    first = await posted_result(harness, "a paper boat", seed=1234)
    first_id = job_id_of(first)
    assert button_ids(first) == [
        f"pdj:{action}:{first_id}" for action in ("reroll", "vary", "info", "delete")
    ]
    click = await harness.double.click(first.id, f"pdj:vary:{first_id}", user_id=ALICE_ID)
    await click.wait_for_response()
    text_input = modal_text_input(click)
    submit = await harness.double.submit_modal(
        click.modal["custom_id"],  # type: ignore[index]
        {text_input["custom_id"]: "a paper boat at night"},
        user_id=ALICE_ID,
        guild_id=GUILD_ID,
        channel_id=CHANNEL_ID,
    )
    varied = await harness.result_for(await queued_job_id(harness, submit))
    assert varied.embeds[0]["description"] == "a paper boat at night"
    assert len(button_ids(varied)) == 4


async def test_prompt_button_shows_details_privately(harness: Harness) -> None:
    result = await posted_result(harness, "a paper boat", seed=77)
    click = await harness.double.click(result.id, f"pdj:info:{job_id_of(result)}", user_id=BOB_ID)
    await click.wait_for_response()
    assert click.ephemeral
    embed = click.original.embeds[0]  # type: ignore[union-attr]
    assert "a paper boat" in embed["description"]
    assert {f["name"]: f["value"] for f in embed["fields"]}["Seed"] == "77"


async def test_only_the_author_or_a_moderator_can_delete(harness: Harness) -> None:
    result = await posted_result(harness)
    custom_id = f"pdj:delete:{job_id_of(result)}"
    refused = await harness.double.click(result.id, custom_id, user_id=BOB_ID)
    await refused.wait_for_response()
    assert refused.ephemeral and "Only the person" in (refused.original.content or "")  # type: ignore[union-attr]
    assert not result.deleted

    by_mod = await harness.double.click(result.id, custom_id, user_id=MOD_ID)
    await harness.reply(by_mod)
    assert result.deleted
    entries = await harness.bot.services.moderation.audit_entries(GUILD_ID, limit=5)
    deletion = next(e for e in entries if e.action == "result.deleted")
    assert deletion.actor_id == MOD_ID and deletion.target_id == job_id_of(result)


async def test_author_can_delete_and_buttons_survive_a_restart(
    double: DiscordDouble, api: FakePixelDojo, bot_factory
) -> None:
    async with bot_factory():
        record = await double.slash(
            "imagine",
            {"prompt": "kept"},
            user_id=ALICE_ID,
            guild_id=GUILD_ID,
            channel_id=CHANNEL_ID,
        )
        await record.wait_for_response()
        result = await double.wait_for_message(lambda m: bool(m.attachments))
    async with bot_factory():  # a new process: no view was registered for the old message
        click = await double.click(result.id, f"pdj:delete:{job_id_of(result)}", user_id=ALICE_ID)
        await click.wait_for_response()
        await double.wait_until(lambda: result.deleted)


async def test_reroll_goes_through_the_credit_limits(harness: Harness) -> None:
    result = await posted_result(harness, num_outputs=4)
    await harness.bot.services.moderation.set_default_allowance(
        guild_id=GUILD_ID, actor_id=MOD_ID, allowance=5
    )
    click = await harness.double.click(
        result.id, f"pdj:reroll:{job_id_of(result)}", user_id=ALICE_ID
    )
    reply = await harness.reply(click)
    assert "1 of 5" in (reply.content or "") and reply.ephemeral
    assert len(harness.api.submissions) == 1


def png(width: int = 64, height: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


async def test_image_attachment_is_sent_for_editing(
    double: DiscordDouble, api: FakePixelDojo, bot_factory
) -> None:
    api.image_field = "image_url"
    async with bot_factory():
        record = await double.slash(
            "imagine",
            {"prompt": "make it blue", "image": ("photo.png", png(), "image/png")},
            user_id=ALICE_ID,
            guild_id=GUILD_ID,
            channel_id=CHANNEL_ID,
        )
        await record.wait_for_response()
        await double.wait_for_message(lambda m: bool(m.attachments))
    sent = api.submissions[-1]
    assert sent["prompt"] == "make it blue"
    assert sent["image_url"].startswith(double.base_url) and "photo.png" in sent["image_url"]


async def test_image_attachment_refused_when_editing_is_unavailable(harness: Harness) -> None:
    option = next(
        o for o in harness.double.registered_commands["imagine"]["options"] if o["name"] == "image"
    )
    assert "unavailable" in option["description"]
    record = await harness.double.slash(
        "imagine",
        {"prompt": "make it blue", "image": ("photo.png", png(), "image/png")},
        user_id=ALICE_ID,
        guild_id=GUILD_ID,
        channel_id=CHANNEL_ID,
    )
    reply = await harness.reply(record)
    assert "editing is unavailable" in (reply.content or "")
    assert harness.api.submissions == []


async def test_image_attachment_of_the_wrong_type_is_refused(
    double: DiscordDouble, api: FakePixelDojo, bot_factory
) -> None:
    api.image_field = "image_url"
    async with bot_factory():
        record = await double.slash(
            "imagine",
            {"prompt": "edit", "image": ("notes.pdf", b"%PDF-1.4", "application/pdf")},
            user_id=ALICE_ID,
            guild_id=GUILD_ID,
            channel_id=CHANNEL_ID,
        )
        await record.wait_for_response()
    assert record.ephemeral and record.original is not None  # refused privately, at once
    assert "notes.pdf" in (record.original.content or "")
    assert api.submissions == []
