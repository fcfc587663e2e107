"""The bot process: wires settings, storage, the PixelDojo client and the runner to discord.py."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import discord
import yarl
from discord.ext import commands

from bot.config import Settings
from bot.credits.admission import Balance, Limits
from bot.credits.moderation import ModerationService
from bot.discord_ui.errors import ReportingCommandTree
from bot.discord_ui.members import role_ids_of
from bot.discord_ui.presenter import DiscordPresenter
from bot.generation.edit_input import CapabilityCache
from bot.generation.models import Job, JobState
from bot.generation.runner import JobRunner, RunnerSettings
from bot.generation.service import GenerationService
from bot.pixeldojo.client import PixelDojoClient
from bot.storage import Database
from bot.storage.audit import AuditEntry
from bot.storage.jobs import JobStore
from cogs import results

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.imagine", "cogs.credits", "cogs.history", "cogs.moderation")
"""The command extensions. The result buttons (`cogs.results`) are not one: see `setup_hook`."""
_COMMANDS_HASH_KEY = "synced_commands_hash"


def point_discord_at(api_base: str | None, gateway_url: str | None) -> None:
    """Send discord.py's REST and gateway traffic to a Discord-compatible server (self-hosted
    or a test double) instead of discord.com. Process-wide, as discord.py keeps these on classes."""
    if api_base:
        discord.http.Route.BASE = api_base
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


RECENT_JOBS = 5


class PixelDojoBot(commands.Bot):
    """discord.py bot that owns the services for its lifetime (created in `setup_hook`)."""

    db: Database
    pixeldojo: PixelDojoClient
    store: JobStore
    runner: JobRunner
    generation: GenerationService
    presenter: DiscordPresenter
    limits: Limits
    moderation: ModerationService
    capabilities: CapabilityCache

    def __init__(self, settings: Settings, **options: Any) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # guild cache: upload limits, roles, channel names
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=ReportingCommandTree,
            **options,
        )
        self.settings = settings
        self._sandbox: Any = None

    async def setup_hook(self) -> None:
        settings = self.settings
        self.db = Database(settings.database_path)
        await self.db.connect()
        api_base = settings.pixeldojo_api_base
        if settings.sandbox:
            api_base = await self._start_sandbox()
        self.pixeldojo = PixelDojoClient(
            settings.pixeldojo_api_key,
            api_base,
            requests_per_minute=None
            if settings.sandbox
            else settings.pixeldojo_requests_per_minute,
        )
        # Before the cogs load: the /imagine image option describes what the schema allows.
        self.capabilities = CapabilityCache(self.pixeldojo, fetch_image=self.http.get_from_cdn)
        await self.capabilities.refresh()
        self.store = JobStore(self.db)
        # The result buttons and the Vary form belong to the bot, not to an extension: every
        # result is posted with them, and old results keep working, whatever is loaded.
        self.presenter = DiscordPresenter(
            self, edit_interval=settings.status_edit_interval, view_factory=results.result_view
        )
        self.add_dynamic_items(results.JobButton)
        self.add_listener(results.answer_vary_form, "on_interaction")
        self.runner = JobRunner(
            self.store,
            self.pixeldojo,
            self.presenter,
            RunnerSettings(
                poll_initial_interval=settings.poll_initial_interval,
                poll_max_interval=settings.poll_max_interval,
                job_timeout=settings.job_timeout,
                max_concurrent_submits=settings.max_concurrent_submits,
                max_concurrent_polls=settings.max_concurrent_polls,
            ),
            on_finished=self._audit_generation,
            capabilities=self.capabilities,
        )
        self.limits = Limits(self.db)
        self.moderation = ModerationService(self.db, self.limits)
        self.generation = GenerationService(
            self.store, self.runner, self.limits.admit, notify_moderators=self.notify_moderators
        )
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self._sync_commands()
        await self.runner.start()

    async def _start_sandbox(self) -> str:
        from bot.pixeldojo.sandbox import SandboxPixelDojo

        self._sandbox = SandboxPixelDojo(
            api_key=None,
            job_duration=3.0,
            credit_cost_per_output=0,
            render_prompt=True,
            image_base_size=768,
        )
        await self._sandbox.start()
        log.warning(
            "SANDBOX MODE: images are placeholders from a built-in server; no credits spent"
        )
        return self._sandbox.base_url

    async def _sync_commands(self) -> None:
        """Sync slash commands only when they changed: global syncs are rate limited."""
        guild = discord.Object(self.settings.dev_guild_id) if self.settings.dev_guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        payload = [c.to_dict(self.tree) for c in self.tree.get_commands(guild=guild)]
        digest = hashlib.sha256(
            json.dumps([guild.id if guild else None, payload], sort_keys=True).encode()
        ).hexdigest()
        if await self.db.get_meta(_COMMANDS_HASH_KEY) == digest:
            log.info("slash commands unchanged; not syncing")
            return
        synced = await self.tree.sync(guild=guild)
        await self.db.set_meta(_COMMANDS_HASH_KEY, digest)
        where = f"guild {guild.id}" if guild else "all guilds (may take up to an hour to appear)"
        log.info("synced %d slash command(s) to %s", len(synced), where)

    async def credit_summary(
        self, guild_id: int, member: discord.abc.User
    ) -> tuple[Balance, list[Job]]:
        """A member's credits this period and recent jobs (`/credits`, `/mod credits check`)."""
        balance = await self.limits.balance(guild_id, member.id, role_ids_of(member))
        recent = await self.store.recent_for_user(guild_id, member.id, limit=RECENT_JOBS)
        return balance, recent

    async def can_moderate(self, interaction: discord.Interaction) -> bool:
        """Manage Server, or the guild's configured moderator role."""
        member = interaction.user
        if interaction.guild_id is None or not isinstance(member, discord.Member):
            return False
        return await self.moderation.is_moderator(
            interaction.guild_id,
            role_ids_of(member),
            member.guild_permissions.manage_guild,
        )

    async def notify_moderators(self, guild_id: int, text: str) -> None:
        """Post to the guild's moderator log channel, if one is configured."""
        settings = await self.limits.settings(guild_id)
        if settings.log_channel_id is None:
            return
        channel = self.get_partial_messageable(settings.log_channel_id, guild_id=guild_id)
        try:
            await channel.send(text[:2000], allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as exc:
            log.warning("guild %d: could not post to the log channel (%s)", guild_id, exc)

    async def _audit_generation(self, job: Job) -> None:
        """Every generation ends in the audit table and, if configured, the log channel."""
        posted = job.state is JobState.POSTED
        entry = await self.moderation.record_generation(
            guild_id=job.guild_id,
            user_id=job.user_id,
            job_id=job.id,
            outcome="posted" if posted else "failed",
            credits=(job.credits_charged or 0) if posted else 0,
        )
        await self.notify_moderators(
            job.guild_id, f"{'🎨' if posted else '⚠️'} <@{job.user_id}> {entry.summary}"
        )

    async def log_moderator_action(self, entry: AuditEntry) -> None:
        """Every moderator action is in the audit table already; also tell the log channel."""
        log.info("guild %d: moderator %d: %s", entry.guild_id, entry.actor_id or 0, entry.summary)
        await self.notify_moderators(entry.guild_id, f"🛡️ <@{entry.actor_id}> {entry.summary}")

    async def on_ready(self) -> None:
        log.info(
            "logged in as %s (%s) in %d guild(s)",
            self.user,
            getattr(self.user, "id", "?"),
            len(self.guilds),
        )

    async def close(self) -> None:
        runner = getattr(self, "runner", None)
        if runner is not None:
            await runner.stop()
        presenter = getattr(self, "presenter", None)
        if presenter is not None:
            await presenter.edits.close()
        client = getattr(self, "pixeldojo", None)
        if client is not None:
            await client.aclose()
        if self._sandbox is not None:
            await self._sandbox.stop()
        await super().close()
        db = getattr(self, "db", None)
        if db is not None:
            await db.close()
