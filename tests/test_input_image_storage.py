"""Input images are kept out of job rows: a job stores its attachment's URL, inline images are
read back from it at submit, and /history and /credits never read the image column."""

from __future__ import annotations

import asyncio
import base64
import io
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest
from PIL import Image

from bot.generation.edit_input import InputImageUnreadable, submission_extra
from bot.pixeldojo.schema import CapabilityCache
from tests.doubles.pixeldojo import FakePixelDojo
from tests.helpers import ALICE_ID, BOB_ID, CHANNEL_ID, GUILD_ID, Harness, queued_job_id


class InlineImagePixelDojo(FakePixelDojo):
    """The PixelDojo double with a schema whose image field takes a data URI, not a URL."""

    def schema(self) -> dict[str, Any]:
        schema = super().schema()
        if self.image_field:
            schema["properties"][self.image_field] = {
                "type": "string",
                "format": "data-url",
                "description": "Input image to edit, as a data URI.",
            }
        return schema


@pytest.fixture
async def api() -> AsyncIterator[FakePixelDojo]:
    async with InlineImagePixelDojo(job_duration=0.05, image_field="init_image") as fake:
        yield fake


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 120, 200)).save(out, format="PNG")
    return out.getvalue()


async def imagine_with_image(harness: Harness, data: bytes) -> int:
    record = await harness.double.slash(
        "imagine",
        {"prompt": "make it red", "image": ("photo.png", data, "image/png")},
        user_id=ALICE_ID,
        guild_id=GUILD_ID,
        channel_id=CHANNEL_ID,
    )
    return await queued_job_id(harness, record)


async def test_an_inline_image_is_sent_but_only_its_url_is_stored(
    harness: Harness, api: FakePixelDojo
) -> None:
    data = png()
    inline = "data:image/png;base64," + base64.b64encode(data).decode()
    job_id = await imagine_with_image(harness, data)
    result = await harness.result_for(job_id)
    assert api.submissions[-1]["init_image"] == inline

    row = await harness.bot.services.db.fetchone(
        "SELECT input_image_url FROM jobs WHERE id = ?", (job_id,)
    )
    assert row[0].startswith(harness.double.base_url) and "photo.png" in row[0]

    # A reroll reads the attachment again, so it sends the same image without storing it.
    click = await harness.double.click(result.id, f"pdj:reroll:{job_id}", user_id=BOB_ID)
    reroll_id = await queued_job_id(harness, click)
    await harness.result_for(reroll_id)
    assert api.submissions[-1]["init_image"] == inline
    rows = await harness.bot.services.db.fetchall("SELECT input_image_url FROM jobs")
    assert all(not value.startswith("data:") for (value,) in rows)


async def test_history_and_credits_never_read_the_image_column(harness: Harness) -> None:
    job_id = await imagine_with_image(harness, png())
    await asyncio.wait_for(harness.bot.services.runner.wait_finished(job_id), 10)
    # A row written before images were stored by URL: the whole image inline (kept as is).
    await harness.bot.services.db.fetchall(
        "UPDATE jobs SET input_image_url = ? WHERE id = ?",
        ("data:image/png;base64," + "A" * 1_000_000, job_id),
    )
    reads: list[str] = []

    def watch(action: int, table: str | None, column: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_READ and (table, column) == ("jobs", "input_image_url"):
            reads.append(column)
        return sqlite3.SQLITE_OK

    await harness.bot.services.db.conn.set_authorizer(watch)
    try:
        history = await harness.reply(await harness.command("history", user_id=ALICE_ID))
        credits = await harness.reply(await harness.command("credits", user_id=ALICE_ID))
    finally:
        await harness.bot.services.db.conn.set_authorizer(None)
    assert f"Job #{job_id}" in (history.embeds[0].get("description") or "")
    recent = next(f for f in credits.embeds[0]["fields"] if f["name"] == "Recent jobs")
    assert f"Job #{job_id}" in recent["value"]
    assert reads == []


class InlineSchema:
    """A schema source whose image field takes a data URI."""

    async def get_model_schema(self, model: str = "") -> dict[str, Any]:
        field = {"type": "string", "format": "data-url", "description": "Image to edit."}
        return {"properties": {"prompt": {"type": "string"}, "init_image": field}}


async def test_an_inline_image_that_cannot_be_read_back_fails_with_a_reason() -> None:
    async def gone(url: str) -> bytes:
        raise OSError("404 asset not found")

    async def not_an_image(url: str) -> bytes:
        return b"%PDF-1.4"

    url = "https://cdn.discordapp.com/attachments/1/2/photo.png?ex=1"
    with pytest.raises(InputImageUnreadable, match="could not be read back from Discord"):
        await submission_extra(CapabilityCache(InlineSchema(), fetch_image=gone), url)
    with pytest.raises(InputImageUnreadable, match="aren't a PNG, JPEG or WebP image"):
        await submission_extra(CapabilityCache(InlineSchema(), fetch_image=not_an_image), url)
    # A row from before images were stored by URL still holds the inline value: sent as is.
    legacy = "data:image/png;base64,iVBORw0KGgo="
    cache = CapabilityCache(InlineSchema(), fetch_image=gone)
    assert await submission_extra(cache, legacy) == {"init_image": legacy}
