"""The PixelDojo double: the product's sandbox server plus fault injection, recorders and knobs.

``FakePixelDojo`` subclasses ``bot.pixeldojo.sandbox.SandboxPixelDojo``, so tests and benches
run against the same validation, job lifecycle and placeholders the sandbox ships, and adds what
only a test needs: every request recorded (``submissions``, ``request_log``), programmatic faults
(rate limits, server errors, malformed bodies, hung, trickling, redirected or dropped
connections), failed jobs, scripted statuses, job ids and durations, expired, oversized,
replaced or extra images, API variations (output shape, status URL, an input-image field), and
webhook callbacks recorded (``webhook_calls``), dropped or sent twice.

Everything runs on the caller's event loop; the controls are not thread-safe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Literal, get_args
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from PIL import Image

from bot.pixeldojo.sandbox import (
    SandboxJob,
    SandboxPixelDojo,
    error_response,
    image_size,
    json_response,
)

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

FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

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
class FakeJob(SandboxJob):
    """A sandbox job plus what the test scripted for it when it was submitted."""

    status_sequence: tuple[str, ...] = ()
    min_image_bytes: int | None = None
    images_expired: bool = False


@dataclass(frozen=True)
class WebhookCall:
    """One callback the double made (or dropped) when a job ended; ``status`` 0: not sent or
    unreachable."""

    job_id: str
    status: int
    dropped: bool = False


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


def noise_png(
    aspect_ratio: str, *, min_bytes: int, long_side: int = 256, seed_key: str = "", index: int = 0
) -> bytes:
    """A PNG with exactly ``aspect_ratio`` of at least ``min_bytes`` bytes.

    Deterministic noise for ``seed_key`` and ``index``, which does not compress, so the file is
    about 3 bytes per pixel; never smaller than ``long_side`` would make it.
    """
    a, b = (int(part) for part in aspect_ratio.split(":"))
    width, _height = image_size(aspect_ratio, long_side)
    scale = max(width // a, math.ceil(math.sqrt(min_bytes / (3 * a * b))) + 1)
    width, height = a * scale, b * scale
    rng = random.Random(f"{seed_key}:{index}")
    image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buffer = BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _fault_error(
    status: int,
    code: str,
    message: str,
    *,
    shape: ErrorShape = "object",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error in one of the shapes PixelDojo's documents disagree on."""
    if shape == "string":
        return json_response({"error": message}, status, headers)
    if shape == "message":
        return json_response({"message": message, "code": code}, status, headers)
    return error_response(status, code, message, headers=headers)


def _route_name(request: web.Request) -> str | None:
    route = request.match_info.route
    return getattr(route, "name", None)


class FakePixelDojo(SandboxPixelDojo):
    """The loopback PixelDojo double. Start with ``await start()`` or ``async with``.

    Every request to the run endpoint is appended to ``submissions`` as received, including
    refused or faulted ones; ``request_log`` holds ``(method, path, status, monotonic_time)``
    for every request (status 0 for a dropped connection).
    """

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        output_shape: OutputShape = "images",
        public_base_url: str | None = None,
        image_field: str | None = None,
        image_ttl: float | None = None,
        **options: Any,
    ) -> None:
        """Configure the double; other ``options`` are the sandbox's.

        ``public_base_url`` replaces the API base advertised in ``statusUrl``; ``image_field``
        adds an input-image property (e.g. ``"image_url"``) to the schema and accepted body;
        ``image_ttl`` makes result images return 410 that many seconds after completion.
        """
        if output_shape not in ("images", "image", "assets"):
            raise ValueError(f"unknown output_shape {output_shape!r}")
        super().__init__(api_key=api_key, **options)
        self.output_shape: OutputShape = output_shape
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.image_field = image_field
        self.image_ttl = image_ttl
        # A hostile or changed API: ``statusUrl`` as this format (``{base}``, ``{job_id}``).
        self.status_url_format: str | None = None

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
        self._closing = asyncio.Event()
        self._request_logged = asyncio.Event()
        self.webhook_calls: list[WebhookCall] = []
        self._webhook_recorded = asyncio.Event()
        self._drop_webhooks = 0
        self._repeat_webhooks = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving; ``port`` is updated when it was 0."""
        await super().start()
        self._closing = asyncio.Event()

    async def stop(self) -> None:
        """Stop serving; requests held by a "timeout" fault are released with a 503."""
        self._closing.set()
        await super().stop()

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
        self.completion_moved()

    # -- webhooks ----------------------------------------------------------------------------

    def drop_webhooks(self, n: int = 1) -> None:
        """The next ``n`` callbacks are never sent (recorded as dropped), as if lost."""
        self._drop_webhooks = n

    def repeat_webhooks(self, n: int = 1) -> None:
        """The next ``n`` callbacks are each sent twice, one after the other."""
        self._repeat_webhooks = n

    async def wait_for_webhooks(self, count: int, timeout: float = 10) -> list[WebhookCall]:
        """Wait until ``count`` callbacks were made or dropped; returns them all."""
        async with asyncio.timeout(timeout):
            while len(self.webhook_calls) < count:
                recorded = self._webhook_recorded
                await recorded.wait()
        return list(self.webhook_calls)

    async def wait_for_requests(
        self, method: str, path_prefix: str, count: int, timeout: float = 10
    ) -> None:
        """Wait until ``count`` requests ``method path_prefix…`` were answered (logged)."""

        def seen() -> int:
            return sum(m == method and p.startswith(path_prefix) for m, p, _, _ in self.request_log)

        async with asyncio.timeout(timeout):
            while seen() < count:
                logged = self._request_logged
                await logged.wait()

    def _record_webhook(self, call: WebhookCall) -> None:
        self.webhook_calls.append(call)
        recorded, self._webhook_recorded = self._webhook_recorded, asyncio.Event()
        recorded.set()

    async def _send_webhook(self, job: SandboxJob, url: str) -> None:
        if self._drop_webhooks > 0:
            self._drop_webhooks -= 1
            self._record_webhook(WebhookCall(job.job_id, 0, dropped=True))
            return
        times = 1
        if self._repeat_webhooks > 0:
            self._repeat_webhooks -= 1
            times = 2
        for _ in range(times):
            status = await self.post_webhook(url, self._finished_body(job))
            self._record_webhook(WebhookCall(job.job_id, status))

    def set_status_sequence(self, statuses: Iterable[str] | None) -> None:
        """Statuses new jobs report on successive polls before they may complete."""
        self._status_sequence = tuple(statuses or ())

    def expire_images(self) -> None:
        """Make every existing result image answer 410 Gone."""
        for job in self.jobs.values():
            _scripted(job).images_expired = True

    def oversize_images(self, bytes_target: int | None) -> None:
        """Make images of new jobs noisy PNGs of at least ``bytes_target`` bytes (None: off)."""
        self._min_image_bytes = bytes_target

    def replace_images(self, body: bytes | None, content_type: str = "image/png") -> None:
        """Serve ``body`` as every result file, whatever it is (None: real images again)."""
        self._replacement = None if body is None else (body, content_type)

    def list_extra_images(self, n: int) -> None:
        """Completed jobs list ``n`` more image URLs than they have outputs (copies of theirs)."""
        self._extra_urls = n

    # -- API variations ----------------------------------------------------------------------

    def schema(self) -> dict[str, Any]:
        """The sandbox's schema, plus the ``image_field`` property when one is configured."""
        schema = super().schema()
        if self.image_field:
            schema["properties"][self.image_field] = {
                "type": "string",
                "format": "uri",
                "description": "Input image to edit.",
            }
        return schema

    def _next_job_id(self) -> str:
        return self.job_ids.popleft() if self.job_ids else super()._next_job_id()

    def _next_duration(self) -> float:
        return self.durations.popleft() if self.durations else super()._next_duration()

    def _new_job(self, body: dict[str, Any], cost: int) -> FakeJob:
        base = super()._new_job(body, cost)
        job = FakeJob(
            **vars(base),
            status_sequence=self._status_sequence,
            min_image_bytes=self._min_image_bytes,
        )
        if self._fail_remaining > 0:
            self._fail_remaining -= 1
            job.outcome, job.error = "fail", self._fail_error
        return job

    def _status_url(self, job_id: str) -> str:
        return (self.status_url_format or "{base}/jobs/{job_id}").format(
            base=self.public_base_url or self.base_url, job_id=quote(job_id, safe="")
        )

    def _running_status(self, job: SandboxJob, now: float) -> str | None:
        step = job.polls - 1
        sequence = _scripted(job).status_sequence
        if step < len(sequence):
            return sequence[step]
        return super()._running_status(job, now)

    def _output(self, job: SandboxJob) -> dict[str, Any]:
        urls = self._image_urls(job)
        urls += [f"{urls[k % len(urls)]}?copy={k}" for k in range(self._extra_urls)]
        if self.output_shape == "image":
            return {"output": {"image": urls[0]}}
        if self.output_shape == "assets":
            return {"assets": [{"type": "image", "url": url} for url in urls]}
        return {"output": {"images": urls}}

    async def _file_response(self, job: SandboxJob, name: str, index: int) -> web.Response:
        expired = _scripted(job).images_expired or (
            self.image_ttl is not None and time.monotonic() > job.complete_at + self.image_ttl
        )
        if expired:
            return error_response(410, "gone", "This file has expired.")
        if self._replacement is not None:
            body, content_type = self._replacement
            return web.Response(body=body, headers={"Content-Type": content_type})
        return await super()._file_response(job, name, index)

    def _draw(self, job: SandboxJob, index: int) -> bytes:
        min_bytes = _scripted(job).min_image_bytes
        if not min_bytes:
            return super()._draw(job, index)
        return noise_png(
            job.aspect_ratio,
            min_bytes=min_bytes,
            long_side=self.image_base_size,
            seed_key=str(job.seed) if job.seed is not None else job.job_id,
            index=index,
        )

    # -- middlewares -------------------------------------------------------------------------

    def _middlewares(self) -> list[Middleware]:
        # Recorded first, so the log shows what the extra middlewares (a rate limit) answered.
        return [
            self._forget,
            self._record,
            *self.middlewares,
            self._inject_faults,
            self._authenticate,
        ]

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
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
            logged, self._request_logged = self._request_logged, asyncio.Event()
            logged.set()

    @web.middleware
    async def _inject_faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = _route_name(request)
        fault = next((f for f in self._faults if f.route == "any" or f.route == route), None)
        if fault is None:
            return await handler(request)
        fault.remaining -= 1
        if fault.remaining <= 0:
            self._faults.remove(fault)
        log.debug("Fake PixelDojo injects %s on %s %s", fault.kind, request.method, request.path)
        if fault.kind == "timeout":
            try:
                await asyncio.wait_for(self._closing.wait(), timeout=fault.delay)
            except TimeoutError:
                return await handler(request)
            return error_response(503, "shutting_down", "Server is shutting down.")
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
        return _fault_error(status, code, message, shape=fault.error_shape, headers=headers)

    async def _trickle(
        self, request: web.Request, route: str | None, interval: float
    ) -> web.StreamResponse:
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


def _scripted(job: SandboxJob) -> FakeJob:
    """``job`` as the double created it (every job of a FakePixelDojo is a FakeJob)."""
    assert isinstance(job, FakeJob)
    return job
