"""The sandbox: a PixelDojo-compatible HTTP server on loopback, so the bot rehearses for free.

With ``PIXELDOJO_SANDBOX=1`` the bot and the CLI start it and talk to it instead of PixelDojo,
spending no real credits. It implements the documented surface of the API (submit, poll, model
catalogue and schema), validating requests as strictly as the real one, plus a ``/files`` host
serving PNG placeholders, and forgets a job and its images ``job_ttl`` after submission so a
long-running sandbox does not grow. A job submitted with a ``webhook_url`` is POSTed its final
job-status body there when it ends, as PixelDojo does. It records nothing and injects no
faults: the test suite's double (``tests/doubles/pixeldojo.py``) subclasses it for that, through
the hooks below (the middleware chain, job creation, running status, output, status URL, file
response, drawing, webhooks).

Everything runs on the caller's event loop; it is not thread-safe.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any, Literal, Self
from urllib.parse import quote

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from PIL import Image, ImageDraw, ImageFont

from bot.pixeldojo.models import ASPECT_RATIOS, MODEL_ID

log = logging.getLogger(__name__)

JobOutcome = Literal["complete", "fail"]

MAX_OUTPUTS = 4
JOB_TTL = timedelta(hours=1)


@dataclass
class SandboxJob:
    """Server-side record of one submitted job. Times are ``time.monotonic()`` values."""

    job_id: str
    prompt: str
    aspect_ratio: str
    num_outputs: int
    seed: int | None
    created_at: float
    complete_at: float
    status: str = "pending"
    image_names: list[str] = field(default_factory=list)
    polls: int = 0
    # Monotonic time of the first poll that reported the job finished (completed or failed).
    completed_seen_at: float | None = None
    outcome: JobOutcome = "complete"
    error: str | None = None
    credit_cost: int = 0
    expires_at: datetime = field(default_factory=lambda: datetime.now(UTC) + JOB_TTL)
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """True once a poll has reported the job completed or failed."""
        return self.completed_seen_at is not None


def image_size(aspect_ratio: str, long_side: int) -> tuple[int, int]:
    """Largest ``(width, height)`` with exactly ``aspect_ratio`` and a long side <= long_side."""
    a, b = (int(part) for part in aspect_ratio.split(":"))
    scale = max(1, long_side // max(a, b))
    return a * scale, b * scale


def _colour(key: str, index: int) -> tuple[int, int, int]:
    digest = hashlib.sha256(f"{key}:{index}".encode()).digest()
    # Mid-tones only, so both black and white text stay readable.
    return (48 + digest[0] % 160, 48 + digest[1] % 160, 48 + digest[2] % 160)


def _load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType or older than 10.1
        return ImageFont.load_default()


def _wrap(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    width: float,
) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and draw.textlength(candidate, font=font) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def render_placeholder_png(
    aspect_ratio: str,
    *,
    long_side: int = 256,
    seed_key: str = "",
    index: int = 0,
    prompt: str | None = None,
) -> bytes:
    """Render a placeholder PNG with exactly ``aspect_ratio``.

    The colour is a pure function of ``seed_key`` and ``index``. With ``prompt`` the wrapped
    prompt and a "SANDBOX" label are drawn on it.
    """
    width, height = image_size(aspect_ratio, long_side)
    background = _colour(seed_key, index)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    inset = max(2, min(width, height) // 16)
    lighter = tuple(min(255, channel + 40) for channel in background)
    draw.rectangle((inset, inset, width - inset, height - inset), outline=lighter, width=2)
    if prompt is not None:
        _draw_label(image, prompt, background, index)
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _draw_label(image: Image.Image, prompt: str, background: Sequence[int], index: int) -> None:
    width, height = image.size
    draw = ImageDraw.Draw(image)
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    # Inside the frame drawn by render_placeholder_png.
    margin = max(2, min(width, height) // 16) + max(4, min(width, height) // 40)
    label_font = _load_font(max(10, min(width, height) // 10))
    draw.text((margin, margin), "SANDBOX", font=label_font, fill=ink)
    draw.text(
        (width - margin, height - margin), f"#{index + 1}", font=label_font, fill=ink, anchor="rd"
    )
    body_font = _load_font(max(8, min(width, height) // 18))
    line_height = max(9, min(width, height) // 18) + 3
    top = margin * 2 + max(10, min(width, height) // 10)
    max_lines = max(1, (height - top - margin * 2) // line_height)
    lines = _wrap(draw, prompt.translate(_ASCII_PUNCTUATION), body_font, width - 2 * margin)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], lines[max_lines - 1] + " ..."]
    for number, line in enumerate(lines):
        draw.text((margin, top + number * line_height), line, font=body_font, fill=ink)


# Pillow's built-in font covers ASCII only; map the typographic punctuation prompts often carry.
_ASCII_PUNCTUATION = str.maketrans(
    {
        "\u2014": "-",
        "\u2013": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2026": "...",
    }
)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """``data`` as a JSON response with exactly ``Content-Type: application/json``."""
    # aiohttp's json_response would append a charset.
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A documented PixelDojo error: ``{"error": {"code", "message"[, "details"]}}``."""
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return json_response(body, status, headers)


class SandboxPixelDojo:
    """Loopback PixelDojo-compatible server. Start with ``await start()`` or ``async with``.

    Submissions are validated as strictly as the documented JSON Schema (unknown properties are
    refused). Credits are deducted on submit and not refunded for failed jobs.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        job_duration: float = 0.0,
        credit_cost_per_output: int = 1,
        credits: int = 10_000,
        image_base_size: int = 256,
        render_prompt: bool = False,
        job_ttl: timedelta = JOB_TTL,
        max_cached_renders: int = 64,
        clock: Callable[[], datetime] | None = None,
        middlewares: Sequence[Middleware] = (),
    ) -> None:
        """Configure the server; ``api_key=None`` accepts any bearer token.

        A job takes ``job_duration`` seconds to generate. A job and its images are forgotten
        ``job_ttl`` after submission (its ``expiresAt``, read from ``clock``, default the UTC
        wall clock); at most ``max_cached_renders`` rendered images are kept. With
        ``render_prompt`` the placeholders show the prompt. ``middlewares`` (aiohttp
        middlewares, e.g. a rate limit) run on every request, inside eviction and outside
        authentication.
        """
        self.api_key = api_key
        self.host = host
        self.port = port
        self.job_duration = job_duration
        self.credit_cost_per_output = credit_cost_per_output
        self.credits = credits
        self.image_base_size = image_base_size
        self.render_prompt = render_prompt
        self.job_ttl = job_ttl
        self.max_cached_renders = max_cached_renders
        self._now = clock or (lambda: datetime.now(UTC))
        self.middlewares: list[Middleware] = list(middlewares)
        self._by_expiry: deque[SandboxJob] = deque()  # submission order = expiry order

        self.jobs: dict[str, SandboxJob] = {}
        self._images: dict[str, tuple[str, int]] = {}
        self._renders: dict[str, asyncio.Future[bytes]] = {}
        self._runner: web.AppRunner | None = None
        self._webhook_session: aiohttp.ClientSession | None = None
        self._webhook_tasks: set[asyncio.Task[None]] = set()
        # Set (and replaced) whenever jobs' completion times move, so callbacks re-check.
        self._completion_moved = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving; ``port`` is updated when it was 0."""
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        app = web.Application(middlewares=self._middlewares())
        app.router.add_post("/api/v1/models/{model}/run", self._handle_submit, name="submit")
        app.router.add_get("/api/v1/jobs/{job_id}", self._handle_poll, name="poll")
        app.router.add_get("/api/v1/models", self._handle_models, name="models")
        app.router.add_get("/api/v1/models/{model}", self._handle_model, name="model")
        app.router.add_get("/api/v1/models/{model}/schema", self._handle_schema, name="schema")
        app.router.add_get("/files/{name}", self._handle_file, name="download")
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("PixelDojo sandbox listening on %s", self.base_url)

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        for task in self._webhook_tasks:
            task.cancel()
        await asyncio.gather(*self._webhook_tasks, return_exceptions=True)
        if self._webhook_session is not None:
            await self._webhook_session.close()
            self._webhook_session = None
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def origin(self) -> str:
        """``http://host:port`` of the running server."""
        if self._runner is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """API base URL to give the client, e.g. ``http://127.0.0.1:PORT/api/v1``."""
        return f"{self.origin}/api/v1"

    # -- schema ------------------------------------------------------------------------------

    def model_info(self) -> dict[str, Any]:
        """The catalogue entry of the served model."""
        return {
            "id": MODEL_ID,
            "name": "Flux Kontext Pro",
            "type": "image",
            "description": (
                "Advanced model with state-of-the-art performance for both generation and editing."
            ),
            "creditCost": self.credit_cost_per_output,
            "capabilities": ["Image Generation", "Img2Img", "Editing"],
            "aspectRatios": list(ASPECT_RATIOS),
            "endpoint": f"/api/v1/models/{MODEL_ID}/run",
        }

    def schema(self) -> dict[str, Any]:
        """The request JSON Schema the run endpoint enforces."""
        properties: dict[str, Any] = {
            "prompt": {"type": "string", "minLength": 1, "description": "Text prompt."},
            "model": {"type": "string", "description": "Model identifier (optional)."},
            "aspect_ratio": {
                "type": "string",
                "enum": list(ASPECT_RATIOS),
                "default": "1:1",
                "description": "Aspect ratio of the output image.",
            },
            "num_outputs": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_OUTPUTS,
                "default": 1,
                "description": "Number of images to generate.",
            },
            "seed": {"type": "integer", "minimum": 0, "description": "Random seed."},
            "webhook_url": {
                "type": "string",
                "format": "uri",
                "description": "URL notified when the job finishes.",
            },
        }
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Flux Kontext Pro input",
            "type": "object",
            "required": ["prompt"],
            "properties": properties,
            "additionalProperties": False,
        }

    def _validate(self, body: dict[str, Any]) -> list[dict[str, str]]:
        properties: dict[str, Any] = self.schema()["properties"]
        problems = [
            {"field": name, "message": "Unknown property."}
            for name in sorted(set(body) - set(properties))
        ]
        if problems:
            return problems

        def bad(name: str, message: str) -> None:
            problems.append({"field": name, "message": message})

        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            bad("prompt", "Required; must be a non-empty string.")
        if "model" in body and not isinstance(body["model"], str):
            bad("model", "Must be a string.")
        if "aspect_ratio" in body and body["aspect_ratio"] not in ASPECT_RATIOS:
            bad("aspect_ratio", f"Must be one of {', '.join(ASPECT_RATIOS)}.")
        if "num_outputs" in body and not _is_int_between(body["num_outputs"], 1, MAX_OUTPUTS):
            bad("num_outputs", f"Must be an integer from 1 to {MAX_OUTPUTS}.")
        if "seed" in body and not _is_int_between(body["seed"], 0, None):
            bad("seed", "Must be a non-negative integer.")
        for name, spec in properties.items():
            if spec.get("format") == "uri" and name in body and not _is_uri(body[name]):
                bad(name, "Must be an absolute http(s) or data: URI.")
        return problems

    # -- middlewares -------------------------------------------------------------------------

    def _middlewares(self) -> list[Middleware]:
        """The middleware chain, outermost first; read once, by ``start()``."""
        return [self._forget, *self.middlewares, self._authenticate]

    @web.middleware
    async def _forget(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Drop expired jobs, their images and renders, so a long-lived sandbox stays small."""
        now = self._now()
        while self._by_expiry and self._by_expiry[0].expires_at <= now:
            job = self._by_expiry.popleft()
            if self.jobs.get(job.job_id) is not job:
                continue  # its id was handed out again (a subclass's ids): the newer job stays
            del self.jobs[job.job_id]
            for name in job.image_names:
                self._images.pop(name, None)
                self._renders.pop(name, None)
        return await handler(request)

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return error_response(
                401, "unauthorized", "Missing API key. Send 'Authorization: Bearer'."
            )
        if self.api_key is not None and token.strip() != self.api_key:
            return error_response(401, "unauthorized", "Invalid API key.")
        return await handler(request)

    # -- hooks -------------------------------------------------------------------------------

    def _next_job_id(self) -> str:
        return f"job_{uuid.uuid4().hex[:24]}"

    def _next_duration(self) -> float:
        """Seconds the next accepted job takes to generate."""
        return self.job_duration

    def _new_job(self, body: dict[str, Any], cost: int) -> SandboxJob:
        """The record of an accepted (validated, paid for) submission."""
        now = time.monotonic()
        duration = self._next_duration()
        job_id = self._next_job_id()
        num_outputs = body.get("num_outputs", 1)
        return SandboxJob(
            job_id=job_id,
            prompt=body["prompt"],
            aspect_ratio=body.get("aspect_ratio", "1:1"),
            num_outputs=num_outputs,
            seed=body.get("seed"),
            created_at=now,
            complete_at=now + duration,
            image_names=[f"{job_id}-{index}.png" for index in range(num_outputs)],
            credit_cost=cost,
            expires_at=self._now() + self.job_ttl,
            inputs=dict(body),
        )

    def _status_url(self, job_id: str) -> str:
        return f"{self.base_url}/jobs/{quote(job_id, safe='')}"

    def _running_status(self, job: SandboxJob, now: float) -> str | None:
        """What a poll reports while ``job`` is still generating; None once it is done."""
        if now < job.complete_at and not job.finished:
            return "pending" if job.polls == 1 else "processing"
        return None

    def _image_urls(self, job: SandboxJob) -> list[str]:
        return [f"{self.origin}/files/{quote(name, safe='')}" for name in job.image_names]

    def _output(self, job: SandboxJob) -> dict[str, Any]:
        """The result fields of a completed job's poll."""
        return {"output": {"images": self._image_urls(job)}}

    async def _file_response(self, job: SandboxJob, name: str, index: int) -> web.Response:
        """The answer for result file ``name``, image ``index`` of a completed ``job``."""
        png = await self._render(name, job, index)
        return web.Response(
            body=png, content_type="image/png", headers={"Cache-Control": "max-age=3600"}
        )

    def _draw(self, job: SandboxJob, index: int) -> bytes:
        """Image ``index`` of ``job`` as PNG bytes; runs in a worker thread."""
        return render_placeholder_png(
            job.aspect_ratio,
            long_side=self.image_base_size,
            seed_key=str(job.seed) if job.seed is not None else job.job_id,
            index=index,
            prompt=job.prompt if self.render_prompt else None,
        )

    def completion_moved(self) -> None:
        """Call after changing jobs' ``complete_at``: their webhooks are then sent on time."""
        moved, self._completion_moved = self._completion_moved, asyncio.Event()
        moved.set()

    def _finished_body(self, job: SandboxJob) -> dict[str, Any]:
        """The job-status body of a job that has ended (what a poll then answers)."""
        body: dict[str, Any] = {"jobId": job.job_id}
        if job.outcome == "fail":
            body.update(status="failed", error=job.error)
        else:
            body["status"] = "completed"
            body.update(self._output(job))
        body.update(creditCost=job.credit_cost, expiresAt=_iso(job.expires_at))
        return body

    async def _call_back_when_done(self, job: SandboxJob, url: str) -> None:
        while (remaining := job.complete_at - time.monotonic()) > 0:
            moved = self._completion_moved
            try:
                await asyncio.wait_for(moved.wait(), timeout=remaining)
            except TimeoutError:
                pass
        await self._send_webhook(job, url)

    async def _send_webhook(self, job: SandboxJob, url: str) -> None:
        """Deliver one callback (a hook: the test double drops, repeats or records them)."""
        await self.post_webhook(url, self._finished_body(job))

    async def post_webhook(self, url: str, body: Any) -> int:
        """POST ``body`` (JSON, or raw bytes) to ``url``; the status, or 0 if unreachable."""
        if self._webhook_session is None:
            self._webhook_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            async with self._webhook_session.post(
                url, data=data, headers={"Content-Type": "application/json"}
            ) as response:
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("sandbox webhook for a job could not be delivered: %s", type(exc).__name__)
            return 0

    # -- handlers ----------------------------------------------------------------------------

    async def _handle_submit(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != MODEL_ID:
            return error_response(404, "model_not_found", "Unknown model.")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return error_response(400, "invalid_json", "Request body must be valid JSON.")
        if not isinstance(body, dict):
            return error_response(400, "invalid_body", "Request body must be a JSON object.")
        problems = self._validate(body)
        if problems:
            unknown = [p["field"] for p in problems if p["message"] == "Unknown property."]
            if unknown:
                message = f"Unknown properties: {', '.join(unknown)}."
            else:
                message = "Invalid request: " + "; ".join(
                    f"{p['field']}: {p['message']}" for p in problems
                )
            return error_response(422, "validation_error", message, details=problems)

        num_outputs = body.get("num_outputs", 1)
        cost = num_outputs * self.credit_cost_per_output
        if self.credits < cost:
            return error_response(
                402,
                "insufficient_credits",
                f"Insufficient credits: this request costs {cost}, {self.credits} remaining.",
            )
        self.credits -= cost

        job = self._new_job(body, cost)
        self.jobs[job.job_id] = job
        self._by_expiry.append(job)
        for index, name in enumerate(job.image_names):
            self._images[name] = (job.job_id, index)
        if isinstance(body.get("webhook_url"), str):
            task = asyncio.create_task(self._call_back_when_done(job, body["webhook_url"]))
            self._webhook_tasks.add(task)
            task.add_done_callback(self._webhook_tasks.discard)
        return json_response(
            {
                "jobId": job.job_id,
                "status": "pending",
                "statusUrl": self._status_url(job.job_id),
                "creditCost": cost,
                "creditsRemaining": self.credits,
                "expiresAt": _iso(job.expires_at),
            },
            status=202,
        )

    async def _handle_poll(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["job_id"])
        if job is None:
            return error_response(404, "job_not_found", "Job not found.")
        job.polls += 1
        now = time.monotonic()
        body: dict[str, Any] = {"jobId": job.job_id}
        running = self._running_status(job, now)
        if running is not None:
            job.status = running
            body["status"] = job.status
            body.update(creditCost=job.credit_cost, expiresAt=_iso(job.expires_at))
            return json_response(body)
        body = self._finished_body(job)
        job.status = body["status"]
        if job.completed_seen_at is None:
            job.completed_seen_at = now
        return json_response(body)

    async def _handle_models(self, request: web.Request) -> web.Response:
        return json_response({"models": [self.model_info()]})

    async def _handle_model(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != MODEL_ID:
            return error_response(404, "model_not_found", "Unknown model.")
        return json_response(self.model_info())

    async def _handle_schema(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != MODEL_ID:
            return error_response(404, "model_not_found", "Unknown model.")
        return json_response(self.schema())

    async def _handle_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        located = self._images.get(name)
        job = self.jobs.get(located[0]) if located else None
        if located is None or job is None or job.outcome != "complete":
            return error_response(404, "not_found", "File not found.")
        if time.monotonic() < job.complete_at:
            return error_response(404, "not_found", "File not found.")
        return await self._file_response(job, name, located[1])

    async def _render(self, name: str, job: SandboxJob, index: int) -> bytes:
        future = self._renders.pop(name, None)
        if future is None:
            # Pillow work is CPU-bound: keep it off the event loop.
            future = asyncio.ensure_future(asyncio.to_thread(self._draw, job, index))
        self._renders[name] = future  # most recently used last
        while len(self._renders) > self.max_cached_renders:
            del self._renders[next(iter(self._renders))]
        try:
            return await asyncio.shield(future)
        except Exception:
            self._renders.pop(name, None)
            raise


def _is_int_between(value: Any, low: int, high: int | None) -> bool:
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return value >= low and (high is None or value <= high)


def _is_uri(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://", "data:"))
