"""Tests for the loopback PixelDojo double, exercised over real HTTP with plain httpx."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.pixeldojo.models import ASPECT_RATIOS, MODEL_ID
from bot.pixeldojo.sandbox import image_size, render_placeholder_png
from tests.doubles.pixeldojo import FakePixelDojo
from tests.doubles.pixeldojo_rate_limit import RateLimiter

RUN = f"/models/{MODEL_ID}/run"


@pytest.fixture
async def fake() -> AsyncIterator[FakePixelDojo]:
    async with FakePixelDojo() as server:
        yield server


@pytest.fixture
async def http(fake: FakePixelDojo) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=fake.base_url, headers={"Authorization": "Bearer test-key"}, timeout=5
    ) as client:
        yield client


async def submit(http: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await http.post(RUN, json={"prompt": "a red fox", **body})


async def poll_until_done(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    for _ in range(100):
        data = (await http.get(f"/jobs/{job_id}")).json()
        if data["status"] in ("completed", "failed"):
            return data
    raise AssertionError("job never finished")


# -- images ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
async def test_generated_png_has_the_requested_aspect_ratio(
    fake: FakePixelDojo, http: httpx.AsyncClient, ratio: str
) -> None:
    response = await submit(http, aspect_ratio=ratio, seed=1)
    assert response.status_code == 202
    done = await poll_until_done(http, response.json()["jobId"])
    [url] = done["output"]["images"]
    image_response = await http.get(url)
    assert image_response.status_code == 200
    assert image_response.headers["Content-Type"] == "image/png"

    image = Image.open(BytesIO(image_response.content))
    assert image.format == "PNG"
    width, height = image.size
    a, b = (int(part) for part in ratio.split(":"))
    assert width * b == height * a
    assert fake.image_base_size - max(a, b) < max(width, height) <= fake.image_base_size


def test_image_size_examples() -> None:
    assert image_size("1:1", 256) == (256, 256)
    assert image_size("16:9", 256) == (256, 144)
    assert image_size("9:21", 256) == (108, 252)


def test_placeholder_colour_is_deterministic_and_prompt_is_drawn() -> None:
    plain = render_placeholder_png("1:1", seed_key="7", index=0)
    assert plain == render_placeholder_png("1:1", seed_key="7", index=0)
    assert plain != render_placeholder_png("1:1", seed_key="7", index=1)
    labelled = render_placeholder_png("1:1", seed_key="7", index=0, prompt="a cat — in a hat")
    assert labelled != plain
    assert Image.open(BytesIO(labelled)).size == (256, 256)


async def test_oversized_images_keep_ratio_and_reach_target(
    fake: FakePixelDojo, http: httpx.AsyncClient
) -> None:
    fake.oversize_images(400_000)
    response = await submit(http, aspect_ratio="16:9")
    done = await poll_until_done(http, response.json()["jobId"])
    body = (await http.get(done["output"]["images"][0])).content
    assert len(body) >= 400_000
    width, height = Image.open(BytesIO(body)).size
    assert width * 9 == height * 16


async def test_expired_and_ttl_images_answer_410() -> None:
    async with (
        FakePixelDojo(image_ttl=0.0) as fake,
        httpx.AsyncClient(
            base_url=fake.base_url, headers={"Authorization": "Bearer test-key"}
        ) as http,
    ):
        done = await poll_until_done(http, (await submit(http)).json()["jobId"])
        assert (await http.get(done["output"]["images"][0])).status_code == 410

    async with (
        FakePixelDojo() as fake,
        httpx.AsyncClient(
            base_url=fake.base_url, headers={"Authorization": "Bearer test-key"}
        ) as http,
    ):
        done = await poll_until_done(http, (await submit(http)).json()["jobId"])
        url = done["output"]["images"][0]
        assert (await http.get(url)).status_code == 200
        fake.expire_images()
        assert (await http.get(url)).status_code == 410


# -- submission validation ---------------------------------------------------------------------


async def test_accepted_submission_shape_and_credit_deduction(
    fake: FakePixelDojo, http: httpx.AsyncClient
) -> None:
    response = await submit(http, aspect_ratio="3:2", num_outputs=3, seed=0)
    assert response.status_code == 202
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {
        "jobId",
        "status",
        "statusUrl",
        "creditCost",
        "creditsRemaining",
        "expiresAt",
    }
    assert body["status"] == "pending"
    assert body["statusUrl"] == f"{fake.base_url}/jobs/{body['jobId']}"
    assert body["creditCost"] == 3
    assert body["creditsRemaining"] == fake.credits == 10_000 - 3
    expires = datetime.fromisoformat(body["expiresAt"])
    assert abs(expires - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(minutes=1)
    assert fake.submissions == [
        {"prompt": "a red fox", "aspect_ratio": "3:2", "num_outputs": 3, "seed": 0}
    ]


async def test_unknown_properties_are_rejected_with_422(
    fake: FakePixelDojo, http: httpx.AsyncClient
) -> None:
    response = await submit(http, negative_prompt="blurry", steps=30)
    assert response.status_code == 422
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert "negative_prompt" in error["message"] and "steps" in error["message"]
    assert [d["field"] for d in error["details"]] == ["negative_prompt", "steps"]
    assert fake.jobs == {} and fake.credits == 10_000
    assert len(fake.submissions) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"aspect_ratio": "1:1"}, "prompt"),
        ({"prompt": "x", "aspect_ratio": "4:3"}, "aspect_ratio"),
        ({"prompt": "x", "num_outputs": 0}, "num_outputs"),
        ({"prompt": "x", "num_outputs": 5}, "num_outputs"),
        ({"prompt": "x", "num_outputs": True}, "num_outputs"),
        ({"prompt": "x", "num_outputs": 1.5}, "num_outputs"),
        ({"prompt": "x", "seed": -1}, "seed"),
        ({"prompt": "x", "seed": "42"}, "seed"),
        ({"prompt": "x", "model": 3}, "model"),
    ],
)
async def test_invalid_fields_are_rejected_with_422(
    http: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await http.post(RUN, json=body)
    assert response.status_code == 422
    assert field in [d["field"] for d in response.json()["error"]["details"]]


async def test_non_json_body_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post(RUN, content=b"not json", headers={"Content-Type": "text/plain"})
    assert response.status_code == 400
    assert (await http.post(RUN, json=["a list"])).status_code == 400


async def test_insufficient_credits_is_402(fake: FakePixelDojo, http: httpx.AsyncClient) -> None:
    fake.credits = 2
    response = await submit(http, num_outputs=3)
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert fake.credits == 2 and fake.jobs == {}
    assert (await submit(http, num_outputs=2)).status_code == 202
    assert fake.credits == 0


async def test_authentication(fake: FakePixelDojo) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as anonymous:
        assert (await submit(anonymous)).status_code == 401
        wrong = await anonymous.get("/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "unauthorized"
        assert "nope" not in wrong.text

    async with (
        FakePixelDojo(api_key=None) as open_fake,
        httpx.AsyncClient(
            base_url=open_fake.base_url, headers={"Authorization": "Bearer anything"}
        ) as client,
    ):
        assert (await submit(client)).status_code == 202


async def test_image_field_is_added_to_schema_and_accepted() -> None:
    async with (
        FakePixelDojo(image_field="image_url") as fake,
        httpx.AsyncClient(
            base_url=fake.base_url, headers={"Authorization": "Bearer test-key"}
        ) as http,
    ):
        schema = (await http.get(f"/models/{MODEL_ID}/schema")).json()
        assert schema["properties"]["image_url"] == {
            "type": "string",
            "format": "uri",
            "description": "Input image to edit.",
        }
        ok = await submit(http, image_url="https://example.com/cat.png")
        assert ok.status_code == 202
        assert fake.jobs[ok.json()["jobId"]].inputs["image_url"] == "https://example.com/cat.png"
        assert (await submit(http, image_url="not a url")).status_code == 422


# -- catalogue ---------------------------------------------------------------------------------


async def test_schema_and_model_endpoints(http: httpx.AsyncClient) -> None:
    response = await http.get(f"/models/{MODEL_ID}/schema")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    schema = response.json()
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["prompt"]
    assert {"prompt", "model", "aspect_ratio", "num_outputs", "seed"} <= set(schema["properties"])
    assert "image_url" not in schema["properties"]
    assert schema["properties"]["aspect_ratio"]["enum"] == list(ASPECT_RATIOS)
    assert schema["properties"]["num_outputs"]["maximum"] == 4

    models = (await http.get("/models")).json()["models"]
    assert [m["id"] for m in models] == [MODEL_ID]
    assert models[0]["creditCost"] == 1
    assert (await http.get(f"/models/{MODEL_ID}")).json()["id"] == MODEL_ID
    assert (await http.get("/models/nope")).status_code == 404
    assert (await http.get("/models/nope/schema")).status_code == 404


# -- job lifecycle -----------------------------------------------------------------------------


async def test_job_reports_pending_then_processing_then_completed(
    fake: FakePixelDojo, http: httpx.AsyncClient
) -> None:
    fake.set_duration(60)
    job_id = (await submit(http, num_outputs=2)).json()["jobId"]
    statuses = [(await http.get(f"/jobs/{job_id}")).json()["status"] for _ in range(3)]
    assert statuses == ["pending", "processing", "processing"]
    job = fake.jobs[job_id]
    assert job.completed_seen_at is None
    # Files of an unfinished job do not exist yet.
    assert (await http.get(f"{fake.origin}/files/{job.image_names[0]}")).status_code == 404

    job.complete_at = time.monotonic()
    done = (await http.get(f"/jobs/{job_id}")).json()
    assert done["status"] == "completed"
    assert done["creditCost"] == 2
    assert len(done["output"]["images"]) == 2
    assert job.polls == 4 and job.completed_seen_at is not None


async def test_durations_queue_is_consumed_per_submission(
    fake: FakePixelDojo, http: httpx.AsyncClient
) -> None:
    fake.durations.extend([60.0, 0.0])
    slow = (await submit(http)).json()["jobId"]
    quick = (await submit(http)).json()["jobId"]
    assert (await http.get(f"/jobs/{slow}")).json()["status"] == "pending"
    assert (await http.get(f"/jobs/{quick}")).json()["status"] == "completed"
    assert not fake.durations


async def test_status_sequence_is_reported_before_completion(
    fake: FakePixelDojo, http: httpx.AsyncClient
) -> None:
    sequence = ["pending", "queued", "processing", "weird-unknown"]
    fake.set_status_sequence(sequence)
    job_id = (await submit(http)).json()["jobId"]
    seen = [(await http.get(f"/jobs/{job_id}")).json()["status"] for _ in range(5)]
    assert seen == [*sequence, "completed"]


@pytest.mark.parametrize(
    ("shape", "extract"),
    [
        ("images", lambda body: body["output"]["images"]),
        ("image", lambda body: [body["output"]["image"]]),
        ("assets", lambda body: [asset["url"] for asset in body["assets"]]),
    ],
)
async def test_output_shapes(shape: Any, extract: Any) -> None:
    async with (
        FakePixelDojo(output_shape=shape) as fake,
        httpx.AsyncClient(
            base_url=fake.base_url, headers={"Authorization": "Bearer test-key"}
        ) as http,
    ):
        done = await poll_until_done(http, (await submit(http)).json()["jobId"])
        [url] = extract(done)
        assert url.startswith(f"{fake.origin}/files/")
        assert (await http.get(url)).status_code == 200


async def test_fail_next_fails_jobs_then_recovers(
    fake: FakePixelDojo, http: httpx.AsyncClient
) -> None:
    fake.fail_next(1, error="NSFW content detected")
    failed = await poll_until_done(http, (await submit(http)).json()["jobId"])
    assert failed["status"] == "failed"
    assert failed["error"] == "NSFW content detected"
    assert "output" not in failed
    ok = await poll_until_done(http, (await submit(http)).json()["jobId"])
    assert ok["status"] == "completed"


async def test_unknown_job_is_404(http: httpx.AsyncClient) -> None:
    response = await http.get("/jobs/job_missing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "job_not_found"


async def test_public_base_url_is_used_for_status_url() -> None:
    async with FakePixelDojo(public_base_url="https://pixeldojo.example/api/v1/") as fake:
        async with httpx.AsyncClient(
            base_url=fake.base_url, headers={"Authorization": "Bearer test-key"}
        ) as http:
            body = (await submit(http)).json()
    assert body["statusUrl"] == f"https://pixeldojo.example/api/v1/jobs/{body['jobId']}"


# -- faults ------------------------------------------------------------------------------------


async def test_status_faults_apply_to_their_route_only(
    fake: FakePixelDojo, http: httpx.AsyncClient
) -> None:
    fake.fault_next("503", route="poll")
    fake.fault_next("429", route="submit", retry_after=2, error_shape="string")
    limited = await submit(http)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "2"
    assert limited.json() == {"error": "Too many requests. Please slow down."}
    job_id = (await submit(http)).json()["jobId"]
    assert (await http.get(f"/jobs/{job_id}")).status_code == 503
    assert (await http.get(f"/jobs/{job_id}")).status_code == 200
    assert [entry[2] for entry in fake.request_log] == [429, 202, 503, 200]
    assert len(fake.submissions) == 2 and len(fake.jobs) == 1


async def test_any_route_fault_and_message_shape(
    fake: FakePixelDojo, http: httpx.AsyncClient
) -> None:
    fake.fault_next("500", n=2, error_shape="message")
    first = await http.get("/models")
    assert first.status_code == 500
    assert first.json() == {"message": "Internal server error.", "code": "internal_error"}
    assert (await submit(http)).status_code == 500
    assert (await http.get("/models")).status_code == 200


async def test_malformed_fault_is_200_non_json(
    fake: FakePixelDojo, http: httpx.AsyncClient
) -> None:
    fake.fault_next("malformed", route="submit")
    response = await submit(http)
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


async def test_drop_fault_closes_the_connection(
    fake: FakePixelDojo, http: httpx.AsyncClient
) -> None:
    fake.fault_next("drop")
    with pytest.raises(httpx.RemoteProtocolError):
        await http.get("/models")
    assert fake.request_log[-1][2] == 0
    assert (await http.get("/models")).status_code == 200


async def test_timeout_fault_holds_then_answers(
    fake: FakePixelDojo, http: httpx.AsyncClient
) -> None:
    fake.fault_next("timeout", route="submit", delay=0.2)
    started = time.monotonic()
    response = await submit(http)
    assert time.monotonic() - started >= 0.2
    assert response.status_code == 202
    assert len(fake.jobs) == 1


async def test_stop_releases_held_requests() -> None:
    fake = FakePixelDojo()
    await fake.start()
    fake.fault_next("timeout", delay=3600)
    async with httpx.AsyncClient(timeout=0.1) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"{fake.base_url}/models", headers={"Authorization": "Bearer x"})
    # Far sooner than the hour the request was held for (the timeout only catches a hang).
    await asyncio.wait_for(fake.stop(), 30)


def test_fault_next_rejects_unknown_kinds() -> None:
    fake = FakePixelDojo()
    with pytest.raises(ValueError):
        fake.fault_next("418")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        fake.fault_next("500", route="everywhere")  # type: ignore[arg-type]


async def test_extra_middlewares_run_inside_the_recorders() -> None:
    limiter = RateLimiter(limit=1, clock=lambda: 1_800_000_000.0)
    async with (
        FakePixelDojo(middlewares=[limiter.middleware]) as fake,
        httpx.AsyncClient(
            base_url=fake.base_url, headers={"Authorization": "Bearer test-key"}
        ) as http,
    ):
        assert (await submit(http)).status_code == 202
        limited = await submit(http)
        assert limited.status_code == 429 and limited.headers["X-RateLimit-Remaining"] == "0"
    assert [entry[2] for entry in fake.request_log] == [202, 429]
    assert len(fake.submissions) == 2 and len(fake.jobs) == 1
