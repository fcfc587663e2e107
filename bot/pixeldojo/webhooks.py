"""PixelDojo's job-finished callbacks: per-job URLs and the small web server that receives them.

Opt-in (`PIXELDOJO_WEBHOOK_URL`). Each submitted job carries a `webhook_url` of the form
`{public base}/pixeldojo/webhook/{job id}/{token}`, where the token is HMAC-SHA256 of the job id
under a random secret kept in the database's meta table: unguessable, never stored per job, and
checked in constant time.

A call with the right token is authenticated: only PixelDojo was given that URL (in the job's
submission, over TLS), just as only the bot holds the API key. Its body is still bounded like a
poll answer: it must parse as the job-status shape, and `doubt` then accepts it only as a
complete success within the job's own bounds (this job's PixelDojo id, no more images than were
asked for, every image on PixelDojo's own hosts, a `creditCost` from 0 to the job's price). Such
a report is delivered as it stands, without a status request: under the 60-a-minute limit a
verifying poll would halve the jobs the key can serve. Anything else (a failure, a body missing
a field, an image elsewhere, a charge above the price) is only a hint that makes the runner poll
the job at once, and PixelDojo's status answer decides. Result images from either source take the
same hardened download path (public addresses only, size caps, every image decoded).

The token is a secret: it appears in no log line (the access log is off, and paths are never
logged).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable

import httpx
from aiohttp import web

from bot.pixeldojo.errors import MalformedResponse
from bot.pixeldojo.models import JobStatus
from bot.pixeldojo.transport import loads, origin
from bot.storage import Database

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/pixeldojo/webhook"
MAX_BODY_BYTES = 64 * 1024
"""A job-status body is a few hundred bytes; anything past this is refused with 413 unread."""
_SECRET_KEY = "webhook_secret"
_TOKEN_SHAPE = re.compile(r"[0-9a-f]{64}")
_JOB_ID_SHAPE = re.compile(r"[1-9][0-9]{0,18}")

RESULT_ORIGINS: tuple[str, ...] = ("https://temp.pixeldojo.ai",)
"""PixelDojo's file host: with the API origin, the only place a callback's images may be for the
report to be delivered without a poll (a poll answer's images may be anywhere public)."""


class WebhookUnavailable(Exception):
    """The receiver could not listen on `WEBHOOK_HOST:WEBHOOK_PORT` (in use, not permitted)."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        reason = os.strerror(cause.errno) if cause.errno else str(cause)
        super().__init__(f"WEBHOOK_HOST:WEBHOOK_PORT={host}:{port}: {reason}")
        self.host = host
        self.port = port
        self.cause = cause


class WebhookTokens:
    """Derives each job's callback URL from one secret, and checks a presented token."""

    def __init__(self, secret: bytes, public_base: str) -> None:
        self._secret = secret
        self.public_base = public_base.rstrip("/")

    @classmethod
    async def load(cls, db: Database, public_base: str) -> WebhookTokens:
        """The tokens of this database: its secret is generated on first use and kept in the
        meta table, so callbacks for jobs submitted before a restart still verify."""
        stored = await db.get_meta(_SECRET_KEY)
        if stored is None:
            stored = secrets.token_hex(32)
            await db.set_meta(_SECRET_KEY, stored)
        return cls(bytes.fromhex(stored), public_base)

    def token(self, job_id: int) -> str:
        return hmac.new(self._secret, f"job:{job_id}".encode(), hashlib.sha256).hexdigest()

    def url_for(self, job_id: int) -> str:
        """The `webhook_url` to send with job `job_id`'s submission."""
        return f"{self.public_base}{WEBHOOK_PATH}/{job_id}/{self.token(job_id)}"

    def verify(self, job_id: int, token: str) -> bool:
        """Whether `token` is job `job_id`'s, compared in constant time."""
        return hmac.compare_digest(self.token(job_id).encode(), token.encode())


def result_origins(api_base: str | None) -> set[tuple[str, str, int | None]]:
    """Where a callback's images may be for its report to be delivered as it stands:
    PixelDojo's file host (`RESULT_ORIGINS`) and the API origin the bot talks to."""
    hosts = {origin(httpx.URL(host)) for host in RESULT_ORIGINS}
    if api_base:
        hosts.add(origin(httpx.URL(api_base)))
    return hosts


def read_report(body: bytes) -> JobStatus | None:
    """The callback's body as a job status, or None when it is not the job-status shape (JSON
    object with a `status`). Relative image links stay relative, so `doubt` refuses them."""
    try:
        return JobStatus.from_payload(loads(body))
    except (ValueError, MalformedResponse):
        return None


def doubt(
    report: JobStatus,
    *,
    api_job_id: str | None,
    num_outputs: int,
    price: int,
    result_origins: Iterable[tuple[str, str, int | None]],
) -> str | None:
    """Why an authenticated callback's report must be checked by a poll before anything is
    done with it, or None when it can be delivered as it stands.

    Only a complete success is taken on its word: about this job (`api_job_id`), with 1 to
    `num_outputs` images, every one on `result_origins` (`transport.origin` tuples), and a
    `creditCost` from 0 to `price`. A failure is always checked: it is rare, and it would
    refund a job PixelDojo may have charged for.
    """
    if api_job_id is None:
        return "the job's PixelDojo id is not known yet"
    if report.job_id != api_job_id:
        return "it does not name this job"
    if not report.is_completed:
        return "it failed" if report.is_failed else "it does not say completed"
    if not report.image_urls:
        return "it lists no images"
    if len(report.image_urls) > num_outputs:
        return f"it lists {len(report.image_urls)} images for {num_outputs} asked for"
    allowed = set(result_origins)
    for url in report.image_urls:
        try:
            where = origin(httpx.URL(url))
        except (httpx.InvalidURL, ValueError):  # ValueError: a host IDNA cannot decode
            return "an image link is not a URL"
        if where not in allowed:
            return "an image is not on PixelDojo's hosts"
    if report.credit_cost is None:
        return "it has no creditCost"
    if not 0 <= report.credit_cost <= price:
        return f"its creditCost is over the job's price of {price}"
    return None


PollNow = Callable[[int, JobStatus | None], bool]
"""`JobRunner.poll_now(job id, report)`: True if the runner is waiting on the job; it then
delivers the report (if `doubt` finds nothing) or checks the job now."""
WasSubmitted = Callable[[int], Awaitable[bool]]
"""Whether the bot ever sent job `id` to PixelDojo (so a late or repeated callback is benign)."""


class WebhookReceiver:
    """The aiohttp server PixelDojo's callbacks reach (behind the operator's reverse proxy).

    Answers at once: 404 for any path, token or job it does not accept (the same answer
    whether or not the job exists), 413 for a body over `max_body`, 200 otherwise. The only
    work a call causes is `poll_now(job_id, report)`, which the runner deduplicates: it
    delivers a report it need not doubt, and checks the job otherwise.
    """

    def __init__(
        self,
        tokens: WebhookTokens,
        *,
        poll_now: PollNow,
        was_submitted: WasSubmitted,
        host: str = "127.0.0.1",
        port: int = 8080,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.tokens = tokens
        self._poll_now = poll_now
        self._was_submitted = was_submitted
        self.host = host
        self.port = port
        self.max_body = max_body
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve; `port` is updated when it was 0 (any free port). Raises
        `WebhookUnavailable` if the address cannot be listened on."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=self.max_body)
        app.router.add_post(WEBHOOK_PATH + "/{job_id}/{token}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise WebhookUnavailable(self.host, self.port, exc) from exc
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("receiving PixelDojo webhooks on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        raw_id, token = request.match_info["job_id"], request.match_info["token"]
        if not (_JOB_ID_SHAPE.fullmatch(raw_id) and _TOKEN_SHAPE.fullmatch(token)):
            return _not_found()
        job_id = int(raw_id)
        if not self.tokens.verify(job_id, token):
            log.debug("webhook for job %d refused: wrong token", job_id)
            return _not_found()
        if request.content_length is not None and request.content_length > self.max_body:
            return _too_large()
        try:
            body = await request.read()  # bounded by client_max_size
        except web.HTTPRequestEntityTooLarge:
            return _too_large()
        if self._poll_now(job_id, read_report(body)):
            log.info("job %d: PixelDojo called back", job_id)
            return web.Response(status=200, text="ok")
        if await self._was_submitted(job_id):
            return web.Response(status=200, text="ok")  # already handled: a repeat or late call
        return _not_found()


def _not_found() -> web.Response:
    return web.Response(status=404, text="not found")


def _too_large() -> web.Response:
    return web.Response(status=413, text="body too large")
