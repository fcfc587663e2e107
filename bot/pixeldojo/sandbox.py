"""A PixelDojo-compatible HTTP server on loopback.

Used by the test suite, by benchmarks and by the bot's sandbox mode, where the bot rehearses
against it without spending real credits. It implements the documented surface of the API
(submit, poll, model catalogue and schema) plus a ``/files`` host serving real PNG placeholders,
and offers programmatic fault injection (rate limits, server errors, malformed bodies, hung or
dropped connections, failed jobs, expired images, oversized images).

Everything runs on the caller's event loop; the controls are not thread-safe.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any, Literal, Self
from urllib.parse import quote

from aiohttp import web
from PIL import Image, ImageDraw, ImageFont

from bot.pixeldojo.client import ASPECT_RATIOS, MODEL_ID

log = logging.getLogger(__name__)

FaultKind = Literal[
    "429",
    "500",
    "503",
    "malformed",
    "401",
    "402",
    "403",
    "404",
    "422",
    "timeout",
    "drop",
    "trickle",
    "redirect",
]
FaultRoute = Literal["submit", "poll", "download", "any"]
OutputShape = Literal["images", "image", "assets"]
ErrorShape = Literal["object", "string", "message"]
JobOutcome = Literal["complete", "fail"]

FAULT_KINDS: tuple[str, ...] = (
    "429",
    "500",
    "503",
    "malformed",
    "401",
    "402",
    "403",
    "404",
    "422",
    "timeout",
    "drop",
    "trickle",
    "redirect",
)
MAX_OUTPUTS = 4
JOB_TTL = timedelta(hours=1)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_FAULT_ERRORS: dict[str, tuple[int, str, str]] = {
    "401": (401, "unauthorized", "Invalid or missing API key."),
    "402": (402, "insufficient_credits", "Insufficient credits."),
    "403": (403, "insufficient_credits", "Insufficient credits to run this model."),
    "404": (404, "not_found", "Not found."),
    "422": (422, "validation_error", "Request validation failed."),
    "429": (429, "rate_limited", "Too many requests. Please slow down."),
    "500": (500, "internal_error", "Internal server error."),
    "503": (503, "service_unavailable", "Service temporarily unavailable."),
}


@dataclass
class FakeJob:
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
    status_sequence: tuple[str, ...] = ()
    min_image_bytes: int | None = None
    images_expired: bool = False
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """True once a poll has reported the job completed or failed."""
        return self.completed_seen_at is not None


class _DroppedResponse(web.Response):
    """Placeholder returned after aborting the transport; it is never written."""


@dataclass
class _Fault:
    kind: str
    route: str
    remaining: int
    delay: float
    retry_after: float
    error_shape: ErrorShape
    location: str = ""


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
    min_bytes: int | None = None,
) -> bytes:
    """Render a placeholder PNG with exactly ``aspect_ratio``.

    The colour is a pure function of ``seed_key`` and ``index``. With ``prompt`` the wrapped
    prompt and a "SANDBOX" label are drawn on it. With ``min_bytes`` the image is enlarged and
    filled with deterministic noise until the PNG is at least that many bytes (noise does not
    compress, so the file is about 3 bytes per pixel).
    """
    width, height = image_size(aspect_ratio, long_side)
    background = _colour(seed_key, index)
    if min_bytes:
        a, b = (int(part) for part in aspect_ratio.split(":"))
        scale = max(width // a, math.ceil(math.sqrt(min_bytes / (3 * a * b))) + 1)
        width, height = a * scale, b * scale
        rng = random.Random(f"{seed_key}:{index}")
        image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    else:
        image = Image.new("RGB", (width, height), background)
        draw = ImageDraw.Draw(image)
        inset = max(2, min(width, height) // 16)
        lighter = tuple(min(255, channel + 40) for channel in background)
        draw.rectangle((inset, inset, width - inset, height - inset), outline=lighter, width=2)
    if prompt is not None:
        _draw_label(image, prompt, background, index)
    buffer = BytesIO()
    image.save(buffer, format="PNG", compress_level=1 if min_bytes else 6)
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


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Exactly "application/json": aiohttp's json_response would append a charset.
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error(
    status: int,
    code: str,
    message: str,
    *,
    shape: ErrorShape = "object",
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any]
    if shape == "string":
        body = {"error": message}
    elif shape == "message":
        body = {"message": message, "code": code}
    else:
        body = {"error": {"code": code, "message": message}}
        if details is not None:
            body["error"]["details"] = details
    return _json(body, status, headers)


class FakePixelDojo:
    """Loopback PixelDojo double. Start with ``await start()`` or ``async with``.

    Submissions are validated as strictly as the documented JSON Schema (unknown properties are
    refused). Credits are deducted on submit and not refunded for failed jobs. Every request to
    the run endpoint is appended to ``submissions`` as received, including refused or faulted
    ones; ``request_log`` holds ``(method, path, status, monotonic_time)`` for every request
    (status 0 for a dropped connection).
    """

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        host: str = "127.0.0.1",
        port: int = 0,
        job_duration: float = 0.0,
        credit_cost_per_output: int = 1,
        credits: int = 10_000,
        image_base_size: int = 256,
        render_prompt: bool = False,
        output_shape: OutputShape = "images",
        public_base_url: str | None = None,
        image_field: str | None = None,
        image_ttl: float | None = None,
        job_ttl: timedelta = JOB_TTL,
        max_cached_renders: int = 64,
        keep_history: bool = True,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Configure the server; ``api_key=None`` accepts any bearer token.

        ``public_base_url`` replaces the API base advertised in ``statusUrl``; ``image_field``
        adds an input-image property (e.g. ``"image_url"``) to the schema and accepted body;
        ``image_ttl`` makes result images return 410 that many seconds after completion.
        A job and its images are forgotten ``job_ttl`` after submission (its ``expiresAt``,
        read from ``clock``, default the UTC wall clock); at most ``max_cached_renders``
        rendered images are kept. ``keep_history=False`` (the sandbox) records nothing in
        ``submissions`` and ``request_log``, which otherwise grow with every request.
        """
        if output_shape not in ("images", "image", "assets"):
            raise ValueError(f"unknown output_shape {output_shape!r}")
        self.api_key = api_key
        self.host = host
        self.port = port
        self.job_duration = job_duration
        self.credit_cost_per_output = credit_cost_per_output
        self.credits = credits
        self.image_base_size = image_base_size
        self.render_prompt = render_prompt
        self.output_shape: OutputShape = output_shape
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.image_field = image_field
        self.image_ttl = image_ttl
        # A hostile or changed API: ``statusUrl`` as this format (``{base}``, ``{job_id}``).
        self.status_url_format: str | None = None
        self.job_ttl = job_ttl
        self.max_cached_renders = max_cached_renders
        self.keep_history = keep_history
        self._now = clock or (lambda: datetime.now(UTC))
        self._by_expiry: deque[FakeJob] = deque()  # submission order = expiry order

        self.jobs: dict[str, FakeJob] = {}
        self.submissions: list[dict[str, Any]] = []
        self.request_log: list[tuple[str, str, int, float]] = []
        self.durations: deque[float] = deque()
        # jobIds to hand out to the next submissions (any string, e.g. a hostile "../x").
        self.job_ids: deque[str] = deque()

        self._faults: list[_Fault] = []
        self._fail_remaining = 0
        self._fail_error = "NSFW content detected"
        self._status_sequence: tuple[str, ...] = ()
        self._min_image_bytes: int | None = None
        self._replacement: tuple[bytes, str] | None = None
        self._extra_urls = 0
        self._images: dict[str, tuple[str, int]] = {}
        self._renders: dict[str, asyncio.Future[bytes]] = {}
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving; ``port`` is updated when it was 0."""
        if self._runner is not None:
            raise RuntimeError("FakePixelDojo is already running")
        self._closing = asyncio.Event()
        app = web.Application(
            middlewares=[self._forget, self._record, self._inject_faults, self._authenticate]
        )
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
        log.info("Fake PixelDojo listening on %s", self.base_url)

    async def stop(self) -> None:
        """Stop serving; requests held by a "timeout" fault are released with a 503."""
        if self._runner is None:
            return
        if self._closing is not None:
            self._closing.set()
        runner, self._runner = self._runner, None
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
            raise RuntimeError("FakePixelDojo is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """API base URL to give the client, e.g. ``http://127.0.0.1:PORT/api/v1``."""
        return f"{self.origin}/api/v1"

    # -- controls ----------------------------------------------------------------------------

    def fail_next(self, n: int = 1, error: str = "NSFW content detected") -> None:
        """Make the next ``n`` accepted jobs end with status "failed" and ``error``."""
        self._fail_remaining = n
        self._fail_error = error

    def fault_next(
        self,
        kind: FaultKind,
        n: int = 1,
        route: FaultRoute = "any",
        *,
        delay: float = 5.0,
        retry_after: float = 0.05,
        error_shape: ErrorShape = "object",
        location: str = "",
    ) -> None:
        """Answer the next ``n`` requests on ``route`` with a fault instead of normally.

        Status kinds answer with a JSON error in ``error_shape`` ("429" adds ``Retry-After:
        retry_after``); "malformed" answers 200 with an HTML body; "drop" closes the connection
        without a response; "timeout" holds the request ``delay`` seconds and then handles it
        normally, like a server whose answer arrives after the client gave up (so a held submit
        still creates a job); "trickle" answers 200 and then sends one byte of body every
        ``delay`` seconds, never finishing, until the client hangs up or the server stops;
        "redirect" answers 302 to ``location``.
        Faults queue in call order; each request uses the first match.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        if route not in ("submit", "poll", "download", "any"):
            raise ValueError(f"unknown fault route {route!r}")
        if kind == "redirect" and not location:
            raise ValueError("a redirect fault needs a location")
        self._faults.append(_Fault(kind, route, n, delay, retry_after, error_shape, location))

    def clear_faults(self) -> None:
        """Drop every pending fault and pending job failure."""
        self._faults.clear()
        self._fail_remaining = 0

    def set_duration(self, seconds: float) -> None:
        """Set how long new jobs take when ``durations`` is empty."""
        self.job_duration = seconds

    def finish_jobs(self) -> None:
        """Let every job still generating complete on its next poll.

        With ``set_duration(3600)`` a test holds jobs "generating" for as long as it needs,
        whatever the machine's load, then releases them here.
        """
        now = time.monotonic()
        for job in self.jobs.values():
            job.complete_at = min(job.complete_at, now)

    def set_status_sequence(self, statuses: Iterable[str] | None) -> None:
        """Statuses new jobs report on successive polls before they may complete."""
        self._status_sequence = tuple(statuses or ())

    def expire_images(self) -> None:
        """Make every existing result image answer 410 Gone."""
        for job in self.jobs.values():
            job.images_expired = True

    def oversize_images(self, bytes_target: int | None) -> None:
        """Make images of new jobs noisy PNGs of at least ``bytes_target`` bytes (None: off)."""
        self._min_image_bytes = bytes_target

    def replace_images(self, body: bytes | None, content_type: str = "image/png") -> None:
        """Serve ``body`` as every result file, whatever it is (None: real images again)."""
        self._replacement = None if body is None else (body, content_type)

    def list_extra_images(self, n: int) -> None:
        """Completed jobs list ``n`` more image URLs than they have outputs (copies of theirs)."""
        self._extra_urls = n

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
        if self.image_field:
            properties[self.image_field] = {
                "type": "string",
                "format": "uri",
                "description": "Input image to edit.",
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
        allowed = set(self.schema()["properties"])
        problems = [
            {"field": name, "message": "Unknown property."} for name in sorted(set(body) - allowed)
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
        for name in ("webhook_url", self.image_field):
            if name and name in body and not _is_uri(body[name]):
                bad(name, "Must be an absolute http(s) or data: URI.")
        return problems

    # -- middlewares -------------------------------------------------------------------------

    @web.middleware
    async def _forget(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Drop expired jobs, their images and renders, so a long-lived sandbox stays small."""
        now = self._now()
        while self._by_expiry and self._by_expiry[0].expires_at <= now:
            job = self._by_expiry.popleft()
            if self.jobs.get(job.job_id) is not job:
                continue  # its id was handed out again (``job_ids``): the newer job stays
            del self.jobs[job.job_id]
            for name in job.image_names:
                self._images.pop(name, None)
                self._renders.pop(name, None)
        return await handler(request)

    @web.middleware
    async def _record(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if not self.keep_history:
            return await handler(request)
        if _route_name(request) == "submit":
            raw = await request.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            self.submissions.append(
                parsed if isinstance(parsed, dict) else {"_raw": raw.decode("utf-8", "replace")}
            )
        status = 500
        try:
            response = await handler(request)
            status = 0 if isinstance(response, _DroppedResponse) else response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.request_log.append((request.method, request.path, status, time.monotonic()))

    @web.middleware
    async def _inject_faults(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        route = _route_name(request)
        fault = next((f for f in self._faults if f.route == "any" or f.route == route), None)
        if fault is None:
            return await handler(request)
        fault.remaining -= 1
        if fault.remaining <= 0:
            self._faults.remove(fault)
        log.debug("Fake PixelDojo injects %s on %s %s", fault.kind, request.method, request.path)
        if fault.kind == "timeout":
            assert self._closing is not None
            try:
                await asyncio.wait_for(self._closing.wait(), timeout=fault.delay)
            except TimeoutError:
                return await handler(request)
            return _error(503, "shutting_down", "Server is shutting down.")
        if fault.kind == "trickle":
            return await self._trickle(request, route, fault.delay)
        if fault.kind == "redirect":
            return web.Response(status=302, headers={"Location": fault.location})
        if fault.kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            return _DroppedResponse(status=204)
        if fault.kind == "malformed":
            return web.Response(
                text="<html><body><h1>502 Bad Gateway</h1></body></html>",
                content_type="text/html",
            )
        status, code, message = _FAULT_ERRORS[fault.kind]
        if route == "download" and status == 403:
            code, message = "forbidden", "Access denied."
        headers: dict[str, str] | None = None
        if status == 429:
            headers = {
                "Retry-After": f"{fault.retry_after:g}",
                "X-RateLimit-Limit": "60",
                "X-RateLimit-Remaining": "0",
            }
        return _error(status, code, message, shape=fault.error_shape, headers=headers)

    async def _trickle(
        self, request: web.Request, route: str | None, interval: float
    ) -> web.StreamResponse:
        assert self._closing is not None
        image = route == "download"
        response = web.StreamResponse(
            headers={"Content-Type": "image/png" if image else "application/json"}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        # Whitespace is valid JSON padding, so only the clock can end this body.
        byte = b"\x89" if image else b" "
        try:
            while not self._closing.is_set():
                await response.write(byte)
                try:
                    await asyncio.wait_for(self._closing.wait(), timeout=interval)
                except TimeoutError:
                    pass
        except ConnectionError:
            pass  # the client gave up, as it should
        return response

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "unauthorized", "Missing API key. Send 'Authorization: Bearer'.")
        if self.api_key is not None and token.strip() != self.api_key:
            return _error(401, "unauthorized", "Invalid API key.")
        return await handler(request)

    # -- handlers ----------------------------------------------------------------------------

    async def _handle_submit(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != MODEL_ID:
            return _error(404, "model_not_found", "Unknown model.")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "invalid_json", "Request body must be valid JSON.")
        if not isinstance(body, dict):
            return _error(400, "invalid_body", "Request body must be a JSON object.")
        problems = self._validate(body)
        if problems:
            unknown = [p["field"] for p in problems if p["message"] == "Unknown property."]
            if unknown:
                message = f"Unknown properties: {', '.join(unknown)}."
            else:
                message = "Invalid request: " + "; ".join(
                    f"{p['field']}: {p['message']}" for p in problems
                )
            return _error(422, "validation_error", message, details=problems)

        num_outputs = body.get("num_outputs", 1)
        cost = num_outputs * self.credit_cost_per_output
        if self.credits < cost:
            return _error(
                402,
                "insufficient_credits",
                f"Insufficient credits: this request costs {cost}, {self.credits} remaining.",
            )
        self.credits -= cost

        now = time.monotonic()
        duration = self.durations.popleft() if self.durations else self.job_duration
        job_id = self.job_ids.popleft() if self.job_ids else f"job_{uuid.uuid4().hex[:24]}"
        job = FakeJob(
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
            status_sequence=self._status_sequence,
            min_image_bytes=self._min_image_bytes,
            inputs=dict(body),
        )
        if self._fail_remaining > 0:
            self._fail_remaining -= 1
            job.outcome, job.error = "fail", self._fail_error
        self.jobs[job_id] = job
        self._by_expiry.append(job)
        for index, name in enumerate(job.image_names):
            self._images[name] = (job_id, index)
        api_base = self.public_base_url or self.base_url
        status_url = (self.status_url_format or "{base}/jobs/{job_id}").format(
            base=api_base, job_id=quote(job_id, safe="")
        )
        return _json(
            {
                "jobId": job_id,
                "status": "pending",
                "statusUrl": status_url,
                "creditCost": cost,
                "creditsRemaining": self.credits,
                "expiresAt": _iso(job.expires_at),
            },
            status=202,
        )

    async def _handle_poll(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["job_id"])
        if job is None:
            return _error(404, "job_not_found", "Job not found.")
        job.polls += 1
        now = time.monotonic()
        step = job.polls - 1
        body: dict[str, Any] = {"jobId": job.job_id}
        if step < len(job.status_sequence) or (now < job.complete_at and not job.finished):
            if step < len(job.status_sequence):
                job.status = job.status_sequence[step]
            else:
                job.status = "pending" if job.polls == 1 else "processing"
            body["status"] = job.status
        elif job.outcome == "fail":
            job.status = "failed"
            body.update(status="failed", error=job.error)
        else:
            job.status = "completed"
            body["status"] = "completed"
            body.update(self._output(job))
        if job.status in ("completed", "failed") and job.completed_seen_at is None:
            job.completed_seen_at = now
        body.update(creditCost=job.credit_cost, expiresAt=_iso(job.expires_at))
        return _json(body)

    def _output(self, job: FakeJob) -> dict[str, Any]:
        urls = [f"{self.origin}/files/{quote(name, safe='')}" for name in job.image_names]
        urls += [f"{urls[k % len(urls)]}?copy={k}" for k in range(self._extra_urls)]
        if self.output_shape == "image":
            return {"output": {"image": urls[0]}}
        if self.output_shape == "assets":
            return {"assets": [{"type": "image", "url": url} for url in urls]}
        return {"output": {"images": urls}}

    async def _handle_models(self, request: web.Request) -> web.Response:
        return _json({"models": [self.model_info()]})

    async def _handle_model(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != MODEL_ID:
            return _error(404, "model_not_found", "Unknown model.")
        return _json(self.model_info())

    async def _handle_schema(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != MODEL_ID:
            return _error(404, "model_not_found", "Unknown model.")
        return _json(self.schema())

    async def _handle_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        located = self._images.get(name)
        job = self.jobs.get(located[0]) if located else None
        if located is None or job is None or job.outcome != "complete":
            return _error(404, "not_found", "File not found.")
        now = time.monotonic()
        if now < job.complete_at:
            return _error(404, "not_found", "File not found.")
        expired = job.images_expired or (
            self.image_ttl is not None and now > job.complete_at + self.image_ttl
        )
        if expired:
            return _error(410, "gone", "This file has expired.")
        if self._replacement is not None:
            body, content_type = self._replacement
            return web.Response(body=body, headers={"Content-Type": content_type})
        png = await self._render(name, job, located[1])
        return web.Response(
            body=png, content_type="image/png", headers={"Cache-Control": "max-age=3600"}
        )

    async def _render(self, name: str, job: FakeJob, index: int) -> bytes:
        future = self._renders.pop(name, None)
        if future is None:
            seed_key = str(job.seed) if job.seed is not None else job.job_id
            # Pillow work is CPU-bound: keep it off the event loop.
            future = asyncio.ensure_future(
                asyncio.to_thread(
                    render_placeholder_png,
                    job.aspect_ratio,
                    long_side=self.image_base_size,
                    seed_key=seed_key,
                    index=index,
                    prompt=job.prompt if self.render_prompt else None,
                    min_bytes=job.min_image_bytes,
                )
            )
        self._renders[name] = future  # most recently used last
        while len(self._renders) > self.max_cached_renders:
            del self._renders[next(iter(self._renders))]
        try:
            return await asyncio.shield(future)
        except Exception:
            self._renders.pop(name, None)
            raise


def _route_name(request: web.Request) -> str | None:
    route = request.match_info.route
    return getattr(route, "name", None)


def _is_int_between(value: Any, low: int, high: int | None) -> bool:
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return value >= low and (high is None or value <= high)


def _is_uri(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://", "data:"))
