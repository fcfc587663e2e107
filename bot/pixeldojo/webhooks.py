"""PixelDojo's job-finished callbacks: per-job URLs and the small web server that receives them.

Opt-in (`PIXELDOJO_WEBHOOK_URL`). Each submitted job carries a `webhook_url` of the form
`{public base}/pixeldojo/webhook/{job id}/{token}`, where the token is HMAC-SHA256 of the job id
under a random secret kept in the database's meta table: unguessable, never stored per job, and
checked in constant time. The callback's body is not trusted (its shape and any signature are
undocumented): a valid call is only a hint that makes the runner poll that job at once, and the
result posted is what PixelDojo's own status answer says.

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
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.storage import Database

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/pixeldojo/webhook"
MAX_BODY_BYTES = 64 * 1024
"""A job-status body is a few hundred bytes; anything past this is refused with 413 unread."""
_SECRET_KEY = "webhook_secret"
_TOKEN_SHAPE = re.compile(r"[0-9a-f]{64}")
_JOB_ID_SHAPE = re.compile(r"[1-9][0-9]{0,18}")


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


PollNow = Callable[[int], bool]
"""`JobRunner.poll_now`: True if the runner is waiting on the job (and will poll it now)."""
WasSubmitted = Callable[[int], Awaitable[bool]]
"""Whether the bot ever sent job `id` to PixelDojo (so a late or repeated callback is benign)."""


class WebhookReceiver:
    """The aiohttp server PixelDojo's callbacks reach (behind the operator's reverse proxy).

    Answers at once: 404 for any path, token or job it does not accept (the same answer
    whether or not the job exists), 413 for a body over `max_body`, 200 otherwise. The only
    work a call causes is `poll_now(job_id)`, which is deduplicated by the runner.
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
            # Read (bounded by client_max_size) only so the connection can be reused: the
            # body is never trusted, the poll it triggers decides.
            await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large()
        if self._poll_now(job_id):
            log.info("job %d: PixelDojo called back; checking the job now", job_id)
            return web.Response(status=200, text="ok")
        if await self._was_submitted(job_id):
            return web.Response(status=200, text="ok")  # already handled: a repeat or late call
        return _not_found()


def _not_found() -> web.Response:
    return web.Response(status=404, text="not found")


def _too_large() -> web.Response:
    return web.Response(status=413, text="body too large")
