"""The PixelDojo API client: submit a Flux Kontext Pro job, poll it, download its images.

:class:`PixelDojoClient` holds one ``httpx.AsyncClient`` for its lifetime and turns every
failure into a typed :class:`~bot.pixeldojo.errors.PixelDojoError` whose ``message`` is plain
English and safe to show to a Discord user. The retry policy, rate limits and body caps are
:mod:`bot.pixeldojo.transport`'s; safe result downloads are :mod:`bot.pixeldojo.downloads`'s.

The bearer token is only ever sent to the configured API origin and never logged. Image
downloads go only to public addresses, checked at every redirect hop, and result images are
checked to decode before anyone sees them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from importlib import metadata
from typing import Any, Self
from urllib.parse import quote, unquote

import httpx

from bot.pixeldojo.downloads import (
    DEFAULT_DOWNLOAD_CONCURRENCY,
    DEFAULT_DOWNLOAD_DEADLINE,
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DEFAULT_MAX_JOB_DOWNLOAD_BYTES,
    DownloadBudget,
    Resolver,
    ResultDownloader,
    resolve,
)
from bot.pixeldojo.errors import MalformedResponse
from bot.pixeldojo.models import ASPECT_RATIOS, MODEL_ID, JobStatus, SubmittedJob, as_int, job_url
from bot.pixeldojo.transport import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_JSON_BYTES,
    PRIORITY_POLL,
    RequestBudget,
    RequestTiming,
    SleepFunc,
    Transport,
    origin,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://pixeldojo.ai/api/v1"
DEFAULT_TIMEOUT = httpx.Timeout(30, connect=10)
# Fields of the run body the client sets itself; ``extra`` may not override them.
_DOCUMENTED_FIELDS = frozenset({"prompt", "aspect_ratio", "num_outputs", "seed"})


def _package_version() -> str:
    try:
        return metadata.version("pixeldojo-bot")
    except metadata.PackageNotFoundError:
        return "dev"


DEFAULT_USER_AGENT = f"pixeldojo-bot/{_package_version()}"


class PixelDojoClient:
    """Async PixelDojo API client holding one HTTP connection pool for its lifetime.

    Use as ``async with PixelDojoClient(key) as client: ...`` or call :meth:`aclose`.
    """

    last_credits_remaining: int | None

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        max_retry_after: float = 60,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: SleepFunc = asyncio.sleep,
        user_agent: str = DEFAULT_USER_AGENT,
        requests_per_minute: float | None = None,
        max_requests_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        deadline: float = DEFAULT_DEADLINE,
        download_deadline: float = DEFAULT_DOWNLOAD_DEADLINE,
        max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
        trusted_origins: Iterable[str] = (),
        resolve: Resolver = resolve,
        max_job_download_bytes: int = DEFAULT_MAX_JOB_DOWNLOAD_BYTES,
        download_concurrency: int = DEFAULT_DOWNLOAD_CONCURRENCY,
    ) -> None:
        """``timeout`` is httpx's, per connect and per read; ``deadline`` and
        ``download_deadline`` bound each API request and each image download as a whole.
        ``clock`` (monotonic seconds) times the request budget and rate-limit gate; tests
        pass one that only their fake ``sleep`` advances. ``requests_per_minute`` turns the
        request budget on, assuming that limit until PixelDojo's ``X-RateLimit-*`` headers say
        otherwise; ``max_requests_per_minute`` caps whatever they say.

        Image downloads go only to public addresses (every redirect hop is resolved with
        ``resolve`` and checked), except on the API origin and ``trusted_origins``
        (``scheme://host[:port]``): origins the operator configured, such as a sandbox or test
        server on loopback. :meth:`download_results` downloads at most
        ``download_concurrency`` images of a job at once, within ``max_job_download_bytes``."""
        key = (api_key or "").strip()
        if not key:
            raise ValueError("api_key must be a non-empty string")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        base = httpx.URL(base_url.rstrip("/"))
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError("base_url must be an absolute http(s) URL")
        self._api_key = key
        self._base_url = str(base)
        self._base = base
        self._warned_foreign_status_url = False
        self.last_credits_remaining = None
        self._http = httpx.AsyncClient(
            # Only encodings transport.read_body can inflate within its cap.
            headers={
                "Authorization": f"Bearer {key}",
                "User-Agent": user_agent,
                "Accept-Encoding": "gzip",
            },
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )
        self._transport = Transport(
            self._http,
            api_key=key,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            max_retry_after=max_retry_after,
            sleep=sleep,
            clock=clock,
            deadline=deadline,
            max_json_bytes=max_json_bytes,
            requests_per_minute=requests_per_minute,
            max_requests_per_minute=max_requests_per_minute,
            on_headers=self._observe_credits,
        )
        self._downloads = ResultDownloader(
            self._http,
            self._transport,
            api_base=base,
            trusted_origins=trusted_origins,
            resolve=resolve,
            deadline=download_deadline,
            max_job_bytes=max_job_download_bytes,
            concurrency=download_concurrency,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API base URL, without a trailing slash."""
        return self._base_url

    @property
    def budget(self) -> RequestBudget | None:
        """The request budget (None when off), for callers that pace themselves by it."""
        return self._transport.budget

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has run."""
        return self._http.is_closed

    async def aclose(self) -> None:
        """Close the underlying connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"PixelDojoClient(base_url={self._base_url!r})"

    # -- public API --------------------------------------------------------------------------

    async def submit(
        self,
        *,
        prompt: str,
        aspect_ratio: str,
        num_outputs: int = 1,
        seed: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> SubmittedJob:
        """Start a Flux Kontext Pro generation and return the accepted job.

        Only documented fields are sent; ``extra`` adds fields discovered from the model schema
        (for example an input image URL) and may not override the documented ones.
        """
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt must be a non-empty string")
        if aspect_ratio not in ASPECT_RATIOS:
            raise ValueError(f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}")
        if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
            raise ValueError("num_outputs must be a positive integer")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError("seed must be a non-negative integer")
        body: dict[str, Any] = {
            "prompt": prompt,
            "aspect_ratio": aspect_ratio,
            "num_outputs": num_outputs,
        }
        if seed is not None:
            body["seed"] = seed
        if extra:
            clash = sorted(set(extra) & _DOCUMENTED_FIELDS)
            if clash:
                raise ValueError(f"extra may not override documented fields: {', '.join(clash)}")
            body.update(extra)

        url = f"{self._base_url}/models/{MODEL_ID}/run"
        data = await self._transport.execute(
            lambda: self._http.build_request(
                "POST", url, json=body, headers={"Accept": "application/json"}
            ),
            idempotent=False,
            gated=True,
            target="model",
            consume=self._transport.read_json,
        )
        # The job is polled by its id, whatever statusUrl says: a statusUrl naming another
        # origin or another job must never decide which job's images a member gets.
        job = SubmittedJob.from_payload(data, base_url=self._base_url)
        raw_status_url = data.get("statusUrl") or data.get("status_url")
        if isinstance(raw_status_url, str) and raw_status_url.strip():
            self._note_status_url(self._base.join(raw_status_url.strip()), job.status_url)
        if job.credits_remaining is not None:
            self.last_credits_remaining = job.credits_remaining
        log.info("PixelDojo accepted job %s (cost %s)", job.job_id, job.credit_cost)
        return job

    async def get_job(
        self,
        job: SubmittedJob | str,
        *,
        priority: float = PRIORITY_POLL,
        raise_rate_limited: bool = False,
        timing: RequestTiming | None = None,
    ) -> JobStatus:
        """Poll a job (``GET {base_url}/jobs/{job_id}``) by :class:`SubmittedJob` or job id.

        ``priority`` orders the wait for the request budget (lower first);
        ``raise_rate_limited`` raises :class:`RateLimited` on a 429 instead of retrying, for a
        caller that reschedules the poll; ``timing`` learns how long the request waited.

        The job id is the ``jobId`` PixelDojo returned at submit. A URL is accepted only in the
        form this client polls (``{base_url}/jobs/{job_id}``): the id is never guessed from
        another URL, and nothing but the API origin ever receives the bearer token.
        """
        job_id = self._job_id_of(job)
        url = self._job_url(job_id)
        data = await self._transport.execute(
            lambda: self._http.build_request("GET", url, headers={"Accept": "application/json"}),
            idempotent=True,
            gated=True,
            target="job",
            consume=self._transport.read_json,
            priority=priority,
            raise_rate_limited=raise_rate_limited,
            timing=timing,
        )
        state = JobStatus.from_payload(data, job_id=job_id, base_url=url)
        if state.error:
            state = replace(state, error=self._transport.scrub(state.error))
        return state

    async def download(
        self,
        url: str,
        *,
        max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        budget: DownloadBudget | None = None,
    ) -> tuple[bytes, str | None]:
        """Download a result image and return ``(bytes, content_type)``, bytes unchecked:
        see :meth:`ResultDownloader.download` for the checks and what it raises."""
        return await self._downloads.download(url, max_bytes=max_bytes, budget=budget)

    async def download_results(
        self, urls: Sequence[str], *, limit: int | None = None
    ) -> list[tuple[bytes, str]]:
        """Download a finished job's images, each checked to decode as PNG, JPEG or WebP.

        Takes at most ``limit`` URLs (the outputs paid for), downloads at most
        ``download_concurrency`` at once and within ``max_job_download_bytes`` together.
        Returns ``(bytes, mime_type)`` in order; raises :class:`NotAnImage` for a file that is
        not an image, :class:`ImageTooLarge` for too many pixels or bytes. The first failure
        cancels the other downloads.
        """

        # Each image through self.download, so a subclass that wraps it sees every one.
        async def one(url: str, budget: DownloadBudget) -> tuple[bytes, str | None]:
            return await self.download(url, budget=budget)

        return await self._downloads.download_all(urls, limit=limit, download=one)

    async def get_model_schema(self, model: str = MODEL_ID) -> dict[str, Any]:
        """Return the request JSON Schema of ``model`` (``GET /models/{id}/schema``)."""
        url = f"{self._base_url}/models/{quote(model, safe='')}/schema"
        data = await self._transport.get_json(url, target="model")
        if isinstance(data, Mapping) and "properties" not in data:
            inner = data.get("schema")
            if isinstance(inner, Mapping):
                data = inner
        if not isinstance(data, Mapping):
            raise MalformedResponse(api_message="model schema is not a JSON object", retryable=True)
        return dict(data)

    # -- internals ---------------------------------------------------------------------------

    def _job_url(self, job_id: str) -> str:
        return job_url(self._base_url, job_id)

    def _is_api_origin(self, url: httpx.URL) -> bool:
        return origin(url) == origin(self._base)

    def _job_id_of(self, job: SubmittedJob | str) -> str:
        if isinstance(job, SubmittedJob):
            job_id = job.job_id
        elif job.startswith(("http://", "https://")):
            url = httpx.URL(job)
            prefix = f"{self._base.path.rstrip('/')}/jobs/"
            segment = url.path[len(prefix) :] if url.path.startswith(prefix) else ""
            if not self._is_api_origin(url) or not segment or "/" in segment:
                raise ValueError("poll a job by the jobId PixelDojo returned, not by a URL")
            job_id = unquote(segment)
        else:
            job_id = job
        if not job_id:
            raise ValueError("a job id is required")
        return job_id

    def _note_status_url(self, advertised: httpx.URL, polled: str) -> None:
        if str(advertised) == polled or self._warned_foreign_status_url:
            return
        self._warned_foreign_status_url = True
        log.warning(
            "PixelDojo returned a statusUrl on %s (%s://%s) other than %s/jobs/{jobId}; "
            "jobs are polled there by their jobId instead",
            "the API origin" if self._is_api_origin(advertised) else "another origin",
            advertised.scheme,
            advertised.host,
            self._base_url,
        )

    def _observe_credits(self, headers: httpx.Headers) -> None:
        credits = as_int(headers.get("X-Credits-Remaining"))
        if credits is not None:
            self.last_credits_remaining = credits
