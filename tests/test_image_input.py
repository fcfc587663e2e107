"""Input images for Kontext editing: schema discovery, attachment checks, and the submit body."""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path
from typing import Any

import pytest

from bot.errors import RequestRefused
from bot.generation.edit_input import (
    EDITING_UNAVAILABLE,
    encode_input_image,
    image_option_description,
    submission_extra,
    validate_input_image,
)
from bot.generation.models import GenerationRequest, JobState
from bot.generation.runner import JobRunner, RunnerSettings
from bot.generation.service import GenerationService
from bot.pixeldojo import schema as schema_module
from bot.pixeldojo.client import PixelDojoClient
from bot.pixeldojo.errors import ServerError
from bot.pixeldojo.schema import (
    DEFAULT_MAX_IMAGE_BYTES,
    CapabilityCache,
    ImageTransport,
    ModelCapabilities,
    discover_capabilities,
    parse_capabilities,
)
from bot.storage import Database
from bot.storage.jobs import JobStore
from tests.doubles.pixeldojo import FakePixelDojo
from tests.doubles.presenter import RecordingPresenter

FAST = RunnerSettings(poll_initial_interval=0.02, poll_max_interval=0.05, job_timeout=5)
ATTACHMENT_URL = "https://cdn.discordapp.com/attachments/1/2/cat.png?ex=66&is=65&hm=abc"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
URL_CAPS = ModelCapabilities(image_field="image_url", image_transport=ImageTransport.URL)
NO_IMAGE_CAPS = ModelCapabilities()


def client_for(fake: FakePixelDojo) -> PixelDojoClient:
    return PixelDojoClient(
        "test-key", fake.base_url, max_attempts=2, backoff_base=0.001, backoff_cap=0.002
    )


class SchemaStub:
    """A client whose schema endpoint answers from a list (a dict, or an exception to raise)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def get_model_schema(self, model: str = "flux-kontext-pro") -> dict[str, Any]:
        self.calls += 1
        answer = self.answers[min(self.calls, len(self.answers)) - 1]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def schema_with(**properties: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"prompt": {"type": "string"}}
    return {"type": "object", "properties": {**base, **properties}}


# Discovery against the fake ------------------------------------------------------------------


async def test_discovers_the_fakes_image_field_and_options() -> None:
    async with FakePixelDojo(image_field="image_url") as fake, client_for(fake) as client:
        caps = await discover_capabilities(client, clock=lambda: 123.0)
    assert caps.image_field == "image_url"
    assert caps.image_transport is ImageTransport.URL
    assert not caps.needs_image_bytes
    assert caps.supports_image_input and caps.error is None
    assert caps.accepted_mime_types == ("image/png", "image/jpeg", "image/webp")
    assert caps.image_size_limit == DEFAULT_MAX_IMAGE_BYTES
    assert caps.discovered_at == 123.0


async def test_schema_without_image_field_disables_editing(caplog) -> None:
    async with FakePixelDojo() as fake, client_for(fake) as client:
        with caplog.at_level(logging.WARNING, logger="bot.pixeldojo.schema"):
            caps = await discover_capabilities(client)
    # webhook_url is a "uri" string too, but it is not an image: no guessing.
    assert caps.image_field is None and not caps.supports_image_input
    assert caps.error is None
    assert "no input-image property" in caplog.text
    assert image_option_description(caps).startswith("Editing is unavailable")


@pytest.mark.parametrize("fault", ["500", "404", "malformed"])
async def test_schema_endpoint_failure_still_lets_the_bot_start(fault: str, caplog) -> None:
    async with FakePixelDojo(image_field="image_url") as fake, client_for(fake) as client:
        fake.fault_next(fault, n=5)  # every attempt of the client's retries
        with caplog.at_level(logging.WARNING, logger="bot.pixeldojo.schema"):
            caps = await discover_capabilities(client)
    assert caps.image_field is None and caps.error
    assert "image editing is unavailable" in caplog.text


async def test_unknown_model_is_a_404_and_no_image_field() -> None:
    async with FakePixelDojo(image_field="image_url") as fake, client_for(fake) as client:
        caps = await discover_capabilities(client, model="no-such-model")
    assert caps.image_field is None and caps.error


@pytest.mark.parametrize("schema", [{"type": "object"}, {"properties": ["prompt"]}, {}])
async def test_odd_schemas_disable_editing(schema: dict[str, Any]) -> None:
    caps = await discover_capabilities(SchemaStub(schema))
    assert caps.image_field is None and caps.error


async def test_unexpected_parse_error_is_contained(monkeypatch) -> None:
    def explode(*args: Any, **kwargs: Any) -> ModelCapabilities:
        raise TypeError("boom")

    monkeypatch.setattr(schema_module, "parse_capabilities", explode)
    caps = await discover_capabilities(SchemaStub(schema_with()))
    assert caps.image_field is None and "boom" in (caps.error or "")


# Schema parsing ------------------------------------------------------------------------------


def test_known_names_win_in_order() -> None:
    caps = parse_capabilities(
        schema_with(
            image={"type": "string", "format": "uri"},
            input_image={"type": "string", "format": "uri"},
        )
    )
    assert caps.image_field == "input_image"


def test_fallback_needs_an_image_that_is_an_input() -> None:
    caps = parse_capabilities(
        schema_with(
            negative_prompt={"type": "string", "description": "Things to keep out of the image."},
            output_format={"type": "string", "enum": ["png", "jpg"], "description": "Image type"},
            webhook_url={"type": "string", "format": "uri"},
            photo_to_edit={"type": "string", "format": "uri", "description": "Photo to edit."},
        )
    )
    assert caps.image_field == "photo_to_edit"
    assert parse_capabilities(schema_with(image_count={"type": "integer"})).image_field is None


@pytest.mark.parametrize(
    ("prop", "transport"),
    [
        ({"type": "string", "format": "uri"}, ImageTransport.URL),
        ({"type": "string", "description": "URL or base64 of the image"}, ImageTransport.URL),
        ({"type": "string", "contentEncoding": "base64"}, ImageTransport.BASE64),
        ({"type": "string", "description": "Base64-encoded image."}, ImageTransport.BASE64),
        ({"type": "string", "description": "Image as a data URI."}, ImageTransport.DATA_URI),
        (
            {"type": "string", "format": "uri", "description": "base64 image"},
            ImageTransport.DATA_URI,
        ),
        ({"anyOf": [{"type": "string", "format": "data-url"}, {"type": "null"}]}, "data_uri"),
    ],
)
def test_transport_is_read_from_format_encoding_and_description(
    prop: dict[str, Any], transport: str
) -> None:
    caps = parse_capabilities(schema_with(input_image=prop))
    assert caps.image_field == "input_image"
    assert caps.image_transport == transport


def test_stated_types_and_size_limit_are_used() -> None:
    caps = parse_capabilities(
        schema_with(
            image_url={
                "type": "string",
                "format": "uri",
                "description": "Image to edit: JPEG or PNG, maximum 5 MB.",
            },
        )
    )
    assert caps.image_mime_types == ("image/jpeg", "image/png")
    assert caps.accepted_mime_types == ("image/png", "image/jpeg")
    assert caps.max_image_bytes == caps.image_size_limit == 5_000_000
    explicit = parse_capabilities(
        schema_with(
            input_image={
                "type": "string",
                "contentEncoding": "base64",
                "contentMediaType": "image/*",
                "x-max-bytes": 2048,
            }
        )
    )
    assert explicit.image_mime_types is None and explicit.max_image_bytes == 2048


def test_no_usable_type_means_editing_unavailable() -> None:
    caps = parse_capabilities(
        schema_with(image_url={"type": "string", "contentMediaType": "image/gif"})
    )
    assert caps.image_field == "image_url" and not caps.supports_image_input


# Cache ---------------------------------------------------------------------------------------


async def test_cache_refreshes_when_stale_and_keeps_the_last_good_discovery() -> None:
    now = [1000.0]
    stub = SchemaStub(
        schema_with(image_url={"type": "string", "format": "uri"}),
        ServerError(),
        schema_with(),
    )
    cache = CapabilityCache(stub, max_age=60, retry_after=5, clock=lambda: now[0])
    assert cache.checked_at is None and not cache.capabilities.supports_image_input
    assert (await cache.get()).image_field == "image_url"
    assert (await cache.get()).image_field == "image_url" and stub.calls == 1  # cached
    now[0] += 61
    kept = await cache.get()  # the refresh fails: keep what worked
    assert stub.calls == 2 and kept.image_field == "image_url" and cache.checked_at == 1061
    assert kept.discovered_at == 1000.0
    assert (await cache.refresh()).image_field is None  # schema really changed
    assert stub.calls == 3 and cache.capabilities.image_field is None


async def test_failed_first_discovery_is_retried_sooner() -> None:
    now = [0.0]
    stub = SchemaStub(ServerError(), schema_with(image_url={"type": "string", "format": "uri"}))
    cache = CapabilityCache(stub, max_age=3600, retry_after=5, clock=lambda: now[0])
    assert (await cache.get()).error
    now[0] = 6
    assert (await cache.get()).image_field == "image_url"


async def test_concurrent_gets_discover_once() -> None:
    stub = SchemaStub(schema_with(image_url={"type": "string", "format": "uri"}))
    cache = CapabilityCache(stub)
    results = await asyncio.gather(*(cache.get() for _ in range(5)))
    assert stub.calls == 1 and all(r.image_field == "image_url" for r in results)


# Attachment validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("cat.png", "image/png"),
        ("CAT.JPG", "image/jpeg"),
        ("cat.jpeg", "image/jpg; charset=binary"),
        ("cat.webp", "image/webp"),
        ("cat.png", None),  # Discord may omit the content type
        ("pasted", "image/png"),  # or the name its extension
    ],
)
def test_accepts_png_jpeg_webp(filename: str, content_type: str | None) -> None:
    validate_input_image(
        filename=filename, content_type=content_type, size=1, capabilities=URL_CAPS
    )


def test_editing_unavailable_message() -> None:
    with pytest.raises(RequestRefused) as refused:
        validate_input_image(
            filename="cat.png", content_type="image/png", size=10, capabilities=NO_IMAGE_CAPS
        )
    assert str(refused.value) == EDITING_UNAVAILABLE


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("anim.gif", "image/gif"),
        ("cat.png", "image/gif"),  # content type says otherwise
        ("cat.gif", "image/png"),  # extension says otherwise
        ("clip.mp4", "video/mp4"),
        ("noext", None),
    ],
)
def test_refuses_other_types(filename: str, content_type: str | None) -> None:
    with pytest.raises(RequestRefused) as refused:
        validate_input_image(
            filename=filename, content_type=content_type, size=10, capabilities=URL_CAPS
        )
    message = str(refused.value)
    assert f"`{filename}`" in message
    assert "isn't a PNG, JPEG or WebP image" in message
    assert "Attach a PNG, JPEG or WebP file instead." in message


def test_refuses_empty_and_too_large() -> None:
    with pytest.raises(RequestRefused, match=r"`cat\.png` is empty"):
        validate_input_image(
            filename="cat.png", content_type="image/png", size=0, capabilities=URL_CAPS
        )
    validate_input_image(
        filename="cat.png",
        content_type="image/png",
        size=DEFAULT_MAX_IMAGE_BYTES,
        capabilities=URL_CAPS,
    )
    with pytest.raises(RequestRefused) as refused:
        validate_input_image(
            filename="cat.png",
            content_type="image/png",
            size=12 * 1024 * 1024 + 512 * 1024,
            capabilities=URL_CAPS,
        )
    assert str(refused.value) == (
        "`cat.png` is 12.5 MiB; images to edit can be at most 10 MiB. "
        "Attach a smaller or more compressed image."
    )


def test_schema_limits_narrow_what_is_accepted() -> None:
    caps = ModelCapabilities(
        image_field="image_url",
        image_transport=ImageTransport.URL,
        image_mime_types=("image/png",),
        max_image_bytes=1024,
    )
    with pytest.raises(RequestRefused, match="isn't a PNG image"):
        validate_input_image(
            filename="a.jpg", content_type="image/jpeg", size=10, capabilities=caps
        )
    with pytest.raises(RequestRefused, match="at most 1 KiB"):
        validate_input_image(
            filename="a.png", content_type="image/png", size=2000, capabilities=caps
        )
    assert image_option_description(caps) == "An image for Kontext to edit (PNG, up to 1 KiB)"
    assert len(image_option_description(URL_CAPS)) <= 100


# Field values --------------------------------------------------------------------------------


def test_url_field_value_passes_the_attachment_url() -> None:
    value = encode_input_image(URL_CAPS, url=ATTACHMENT_URL, data=None, content_type="image/png")
    assert value == ATTACHMENT_URL
    with pytest.raises(RequestRefused, match="editing is unavailable"):
        encode_input_image(NO_IMAGE_CAPS, url=ATTACHMENT_URL, data=None, content_type="image/png")


def test_inline_field_values_encode_the_bytes() -> None:
    data_caps = ModelCapabilities(
        image_field="input_image", image_transport=ImageTransport.DATA_URI
    )
    b64_caps = ModelCapabilities(image_field="image", image_transport=ImageTransport.BASE64)
    encoded = base64.b64encode(PNG).decode()
    # The bytes decide the type, not the declared content type.
    assert (
        encode_input_image(data_caps, url=ATTACHMENT_URL, data=PNG, content_type="image/jpeg")
        == f"data:image/png;base64,{encoded}"
    )
    assert (
        encode_input_image(b64_caps, url=ATTACHMENT_URL, data=PNG, content_type="image/png")
        == encoded
    )
    with pytest.raises(ValueError, match="bytes"):
        encode_input_image(data_caps, url=ATTACHMENT_URL, data=None, content_type="image/png")
    with pytest.raises(RequestRefused, match="aren't a PNG, JPEG or WebP image"):
        encode_input_image(
            data_caps, url=ATTACHMENT_URL, data=b"GIF89a...", content_type="image/png"
        )
    with pytest.raises(RequestRefused, match="at most"):
        encode_input_image(
            data_caps,
            url=ATTACHMENT_URL,
            data=PNG + bytes(DEFAULT_MAX_IMAGE_BYTES),
            content_type="image/png",
        )


async def test_submission_extra_is_empty_without_an_image() -> None:
    stub = SchemaStub(ServerError())
    assert await submission_extra(CapabilityCache(stub), None) == {}
    assert stub.calls == 0  # no schema request for plain generations


# End to end through the runner ---------------------------------------------------------------


@pytest.fixture
async def db(tmp_path: Path):
    database = Database(tmp_path / "bot.sqlite3")
    await database.connect()
    yield database
    await database.close()


async def run_through_runner(
    fake: FakePixelDojo, db: Database, **request_fields: Any
) -> tuple[RecordingPresenter, int]:
    presenter = RecordingPresenter()
    async with client_for(fake) as client:
        cache = CapabilityCache(client)
        caps = await cache.refresh()  # what the bot does at start-up
        image = request_fields.pop("image", None)
        if image is not None:
            validate_input_image(capabilities=caps, **image["attachment"])
            request_fields["input_image_url"] = encode_input_image(caps, **image["encode"])
        store = JobStore(db)
        runner = JobRunner(store, client, presenter, FAST, capabilities=cache)
        await runner.start()
        try:
            service = GenerationService(store, runner)
            job = await service.reserve(
                GenerationRequest(
                    guild_id=1,
                    channel_id=2,
                    user_id=3,
                    prompt="make it blue",
                    aspect_ratio="1:1",
                    **request_fields,
                )
            )
            await service.launch(job, status_message_id=99)
            await asyncio.wait_for(runner.wait_finished(job.id), 5)
        finally:
            await runner.stop()
    return presenter, job.id


CAT = {
    "attachment": {"filename": "cat.png", "content_type": "image/png", "size": 2048},
    "encode": {"url": ATTACHMENT_URL, "data": None, "content_type": "image/png"},
}


async def test_input_image_reaches_the_submission_body(db: Database) -> None:
    async with FakePixelDojo(image_field="image_url", job_duration=0.02) as fake:
        presenter, job_id = await run_through_runner(fake, db, image=CAT)
        stored = await JobStore(db).get(job_id)
    assert job_id in presenter.results
    assert stored is not None and stored.state is JobState.POSTED
    assert stored.input_image_url == ATTACHMENT_URL
    assert fake.submissions == [
        {
            "prompt": "make it blue",
            "aspect_ratio": "1:1",
            "num_outputs": 1,
            "seed": stored.seed,
            "image_url": ATTACHMENT_URL,
        }
    ]


async def test_inline_image_reaches_the_submission_body(db: Database) -> None:
    async with FakePixelDojo(image_field="init_image", job_duration=0.02) as fake:
        data_caps = ModelCapabilities(
            image_field="init_image", image_transport=ImageTransport.DATA_URI
        )
        value = encode_input_image(
            data_caps, url=ATTACHMENT_URL, data=PNG, content_type="image/png"
        )
        presenter, job_id = await run_through_runner(fake, db, input_image_url=value)
    assert job_id in presenter.results
    assert fake.submissions[0]["init_image"] == value
    assert value.startswith("data:image/png;base64,")


async def test_without_an_image_nothing_extra_is_sent(db: Database) -> None:
    async with FakePixelDojo(image_field="image_url", job_duration=0.02) as fake:
        presenter, job_id = await run_through_runner(fake, db)
        stored = await JobStore(db).get(job_id)
    assert job_id in presenter.results
    assert stored is not None and stored.input_image_url is None
    assert set(fake.submissions[0]) == {"prompt", "aspect_ratio", "num_outputs", "seed"}


async def test_image_job_is_refunded_when_the_field_disappears(db: Database) -> None:
    # The job was accepted with an image, but the schema no longer offers the field at submit.
    async with FakePixelDojo(job_duration=0.02) as fake:
        presenter, job_id = await run_through_runner(fake, db, input_image_url=ATTACHMENT_URL)
        stored = await JobStore(db).get(job_id)
    assert presenter.failures[job_id] == EDITING_UNAVAILABLE
    assert stored is not None and stored.state is JobState.FAILED
    assert fake.submissions == []
    row = await db.fetchone(
        "SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE job_id = ?", (job_id,)
    )
    assert row[0] == 0
