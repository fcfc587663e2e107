"""The composition root: the one place the bot and the command line get their services from.

`build_services` wires storage, the PixelDojo client (or the sandbox standing in for it), the
capability cache, the job runner (every runner setting from `Settings`), the credit rules and
the generation service. `Services.close` takes them down in the one order that loses nothing.
Nothing here imports discord.py: the Discord pieces (presenter, poster, image fetcher) are
handed in by `bot.app`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bot.config import Settings
from bot.credits.admission import Limits
from bot.credits.moderation import ModerationService
from bot.credits.notices import ModeratorNotices, NoticePoster
from bot.credits.summary import CreditSummaries
from bot.generation.runner import JobPresenter, JobRunner, RunnerSettings
from bot.generation.service import GenerationService, admit_without_limits
from bot.pixeldojo.client import PixelDojoClient
from bot.pixeldojo.schema import CapabilityCache, ImageFetcher
from bot.pixeldojo.transport import DOCUMENTED_REQUESTS_PER_MINUTE
from bot.pixeldojo.webhooks import WebhookReceiver, WebhookTokens
from bot.storage import Database
from bot.storage.guild_settings import GuildSettings
from bot.storage.jobs import JobStore

if TYPE_CHECKING:
    from bot.pixeldojo.sandbox import SandboxPixelDojo

log = logging.getLogger(__name__)

SANDBOX_JOB_DURATION = 3.0
"""Seconds a sandbox job takes in the bot: long enough to see its status message."""


def runner_settings(settings: Settings) -> RunnerSettings:
    """The runner's settings: every one the environment sets, the defaults for the rest."""
    return RunnerSettings(
        poll_initial_interval=settings.poll_initial_interval,
        poll_max_interval=settings.poll_max_interval,
        job_timeout=settings.job_timeout,
        max_concurrent_submits=settings.max_concurrent_submits,
        max_concurrent_polls=settings.max_concurrent_polls,
        webhooks=settings.pixeldojo_webhook_url is not None,
        webhook_fallback_poll=settings.webhook_fallback_poll,
    )


def limits_in_force(services: Services) -> str:
    """The limits this process runs with, for the start-up log (names no secret)."""
    settings = services.settings
    budget = services.pixeldojo.budget
    if budget is None:
        requests = "PixelDojo requests unpaced (sandbox)"
    elif budget.ceiling is not None:
        requests = f"PixelDojo requests at most {budget.limit}/min (PIXELDOJO_REQUESTS_PER_MINUTE)"
    else:
        requests = (
            f"PixelDojo requests {budget.limit}/min until its rate-limit headers say otherwise"
        )
    defaults = GuildSettings(guild_id=0)
    webhooks = (
        f"webhooks on (listening on {settings.webhook_host}:{settings.webhook_port})"
        if services.webhooks is not None
        else "webhooks off (polling)"
    )
    return (
        f"limits: {requests}; {settings.max_concurrent_submits} submissions and "
        f"{settings.max_concurrent_polls} polls in flight; per member "
        f"{defaults.max_concurrent} at once and {defaults.max_queued} queued by default "
        f"(/mod settings changes them per server); {webhooks}; "
        f"job timeout {settings.job_timeout:g} s"
    )


@runtime_checkable
class _Closable(Protocol):
    async def aclose(self) -> None: ...


@dataclass(eq=False)
class Services:
    """Everything a running bot (or one command-line generation) uses, built once."""

    settings: Settings
    db: Database
    pixeldojo: PixelDojoClient
    capabilities: CapabilityCache
    store: JobStore
    runner: JobRunner
    limits: Limits
    moderation: ModerationService
    notices: ModeratorNotices
    credit_summaries: CreditSummaries
    generation: GenerationService
    presenter: JobPresenter
    sandbox: SandboxPixelDojo | None = None
    webhooks: WebhookReceiver | None = None
    """PixelDojo's callbacks (`PIXELDOJO_WEBHOOK_URL`); None when the bot only polls."""
    _closing: asyncio.Future[None] | None = field(default=None, init=False, repr=False)

    async def start(self) -> None:
        """Start the runner, which first resumes every unfinished job in the database, then
        the webhook receiver (if on), so every callback finds the job it is about."""
        await self.runner.start()
        if self.webhooks is not None:
            await self.webhooks.start()

    async def close(self, *, before_storage: Callable[[], Awaitable[None]] | None = None) -> None:
        """Shut down in the one order that loses nothing: the webhook receiver, the runner
        (waiting up to its `shutdown_grace` for submissions PixelDojo may already charge for),
        the presenter's pending edits, the PixelDojo client, the sandbox, then `before_storage`
        (where the bot disconnects from Discord: until then, interactions are still answered
        from the database), then the database. Later calls wait for the first one."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(before_storage))
        await self._closing

    async def _close(self, before_storage: Callable[[], Awaitable[None]] | None) -> None:
        if self.webhooks is not None:
            await self.webhooks.stop()  # first: a callback now would find no runner
        await self.runner.stop()
        if isinstance(self.presenter, _Closable):
            await self.presenter.aclose()
        await self.pixeldojo.aclose()
        if self.sandbox is not None:
            await self.sandbox.stop()
        if before_storage is not None:
            await before_storage()
        await self.db.close()


async def build_services(
    settings: Settings,
    presenter: JobPresenter,
    *,
    fetch_image: ImageFetcher | None = None,
    post_notice: NoticePoster | None = None,
    member_limits: bool = True,
    sandbox_job_duration: float = SANDBOX_JOB_DURATION,
) -> Services:
    """Connect the database (raises `DatabaseUnavailable`), start the sandbox if configured,
    and wire every service; the runner is not started yet (`Services.start`).

    `fetch_image` reads an input image back from Discord, `post_notice` posts to a guild's log
    channel (both None for the command line). `member_limits=False` admits every request
    without allowances or rules: the command line's one job for the operator.
    """
    db = Database(settings.database_path)
    await db.connect()
    sandbox = None
    try:
        api_base = settings.pixeldojo_api_base
        if settings.sandbox:
            sandbox = await _start_sandbox(sandbox_job_duration)
            api_base = sandbox.base_url
        client = PixelDojoClient(
            settings.pixeldojo_api_key,
            api_base,
            # On by default: PixelDojo's documented figure until its headers say otherwise;
            # PIXELDOJO_REQUESTS_PER_MINUTE replaces that figure and caps what they say.
            requests_per_minute=(
                None
                if sandbox
                else settings.pixeldojo_requests_per_minute or DOCUMENTED_REQUESTS_PER_MINUTE
            ),
            max_requests_per_minute=settings.pixeldojo_requests_per_minute,
        )
    except BaseException:
        if sandbox is not None:
            await sandbox.stop()
        await db.close()
        raise
    capabilities = CapabilityCache(client, fetch_image=fetch_image)
    store = JobStore(db)
    limits = Limits(db)
    moderation = ModerationService(db, limits)
    notices = ModeratorNotices(moderation, post_notice)
    runner = JobRunner(
        store,
        client,
        presenter,
        runner_settings(settings),
        on_finished=notices.generation_finished,
        capabilities=capabilities,
        member_concurrency=member_concurrency_from(limits) if member_limits else None,
    )
    webhooks = None
    if settings.pixeldojo_webhook_url is not None:
        webhooks = await _webhook_receiver(settings, db, runner, store)
    generation = GenerationService(
        store,
        runner,
        limits.admit if member_limits else admit_without_limits,
        notify_moderators=notices.notify,
    )
    return Services(
        settings=settings,
        db=db,
        pixeldojo=client,
        capabilities=capabilities,
        store=store,
        runner=runner,
        limits=limits,
        moderation=moderation,
        notices=notices,
        credit_summaries=CreditSummaries(limits, store),
        generation=generation,
        presenter=presenter,
        sandbox=sandbox,
        webhooks=webhooks,
    )


async def _webhook_receiver(
    settings: Settings, db: Database, runner: JobRunner, store: JobStore
) -> WebhookReceiver:
    """Give every submission a `webhook_url` and build the receiver its callbacks reach."""
    assert settings.pixeldojo_webhook_url is not None
    tokens = await WebhookTokens.load(db, settings.pixeldojo_webhook_url)
    runner.webhook_url_for = lambda job: tokens.url_for(job.id)

    async def was_submitted(job_id: int) -> bool:
        job = await store.get(job_id)
        return job is not None and job.api_job_id is not None

    return WebhookReceiver(
        tokens,
        poll_now=runner.poll_now,
        was_submitted=was_submitted,
        host=settings.webhook_host,
        port=settings.webhook_port,
    )


def member_concurrency_from(limits: Limits) -> Callable[[int], Awaitable[int]]:
    """Each guild's `max_concurrent`, read when the queue dispatches."""

    async def of(guild_id: int) -> int:
        return (await limits.settings(guild_id)).max_concurrent

    return of


async def _start_sandbox(job_duration: float) -> SandboxPixelDojo:
    from bot.pixeldojo.sandbox import SandboxPixelDojo

    sandbox = SandboxPixelDojo(
        api_key=None,
        job_duration=job_duration,
        credit_cost_per_output=0,
        render_prompt=True,
        image_base_size=768,
    )
    await sandbox.start()
    log.warning("SANDBOX MODE: images are placeholders from a built-in server; no credits spent")
    return sandbox
