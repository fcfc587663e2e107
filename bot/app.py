"""The bot process: builds the services (`bot.services`), then connects them to discord.py."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import Counter
from typing import Any

import discord
import yarl
from discord.ext import commands

from bot.config import Settings
from bot.discord_ui.errors import ReportingCommandTree
from bot.discord_ui.identify_pacing import IdentifyPacing
from bot.discord_ui.moderator_log import log_channel_poster
from bot.discord_ui.presenter import DiscordPresenter
from bot.health import Heartbeat, keep_beating
from bot.services import Services, build_services, limits_in_force
from cogs import queued, results

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


class PixelDojoBot(commands.AutoShardedBot):
    """discord.py bot that owns the services for its lifetime (built in `setup_hook`).

    It only wires and starts: the commands are in `cogs/`, the behaviour in the services.
    Sharded as Discord recommends (`GET /gateway/bot`; one shard for a small bot), all shards
    in this process.
    """

    services: Services
    presenter: DiscordPresenter
    heartbeat: Heartbeat

    def __init__(self, settings: Settings, **options: Any) -> None:
        # Only GUILDS: the guild cache (upload limits after a restart, roles for permissions,
        # channels). The bot reads no messages (slash commands and buttons arrive as interactions,
        # with the member and their roles), so no message, member or presence intent.
        intents = discord.Intents.none()
        intents.guilds = True
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=ReportingCommandTree,
            **options,
        )
        self.settings = settings
        self._identify_pacing: IdentifyPacing | None = None
        self._beating: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        settings = self.settings
        # The result buttons and the Vary form belong to the bot, not to an extension: every
        # result is posted with them, and old results keep working, whatever is loaded.
        self.presenter = DiscordPresenter(
            self,
            edit_interval=settings.status_edit_interval,
            view_factory=results.result_view,
            queued_view_factory=queued.queued_view,
            # The learned typical generation time, for the progress bar (runner built below).
            expected_duration=lambda: self.services.runner.durations.typical(),
        )
        self.add_dynamic_items(results.JobButton, queued.CancelButton)
        self.add_listener(results.answer_vary_form, "on_interaction")
        self.services = await build_services(
            settings,
            self.presenter,
            fetch_image=self.http.get_from_cdn,
            post_notice=log_channel_poster(self),
        )
        # Before the cogs load: the /imagine image option describes what the schema allows.
        await self.services.capabilities.refresh()
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self._sync_commands()
        await self.services.start()
        log.info("%s", limits_in_force(self.services))
        self.heartbeat = Heartbeat(settings.heartbeat_file, settings.heartbeat_interval)
        self._beating = asyncio.create_task(
            keep_beating(self.heartbeat, self.health_problem), name="heartbeat"
        )

    def health_problem(self) -> str | None:
        """Why the bot cannot serve members right now; None when every shard is connected
        and the job loops run."""
        if self.is_closed():
            return "shutting down"
        if not self.is_ready():
            return "not connected to Discord yet"
        down = sorted(shard_id for shard_id, shard in self.shards.items() if shard.is_closed())
        if down:
            return f"gateway shard(s) {', '.join(map(str, down))} disconnected"
        if not self.services.runner.running:
            return "the job loops have stopped"
        return None

    async def _sync_commands(self) -> None:
        """Sync slash commands only when they changed: global syncs are rate limited."""
        db = self.services.db
        guild = discord.Object(self.settings.dev_guild_id) if self.settings.dev_guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        payload = [c.to_dict(self.tree) for c in self.tree.get_commands(guild=guild)]
        digest = hashlib.sha256(
            json.dumps([guild.id if guild else None, payload], sort_keys=True).encode()
        ).hexdigest()
        if await db.get_meta(_COMMANDS_HASH_KEY) == digest:
            log.info("slash commands unchanged; not syncing")
            return
        synced = await self.tree.sync(guild=guild)
        await db.set_meta(_COMMANDS_HASH_KEY, digest)
        where = f"guild {guild.id}" if guild else "all guilds (may take up to an hour to appear)"
        log.info("synced %d slash command(s) to %s", len(synced), where)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Identify as fast as Discord allows this bot (`max_concurrency` shards per 5 s)
        rather than discord.py's one shard per 5 s."""
        if self._identify_pacing is None:
            # Only a second shard needs the figure, so a one-shard bot never asks for it.
            concurrency = 1
            if (self.shard_count or 1) > 1:
                try:
                    concurrency = (await self.fetch_session_start_limits()).max_concurrency
                except discord.HTTPException as exc:
                    log.warning("could not read the identify concurrency (%s); using 1", exc)
            self._identify_pacing = IdentifyPacing(concurrency)
        await self._identify_pacing.wait_turn(shard_id)

    async def on_ready(self) -> None:
        per_shard = Counter(guild.shard_id for guild in self.guilds)
        log.info(
            "logged in as %s (%s) on %d shard(s) [%s] of %s, in %d guild(s) (%s)",
            self.user,
            getattr(self.user, "id", "?"),
            len(self.shards),
            ", ".join(map(str, sorted(self.shards))),
            self.shard_count,
            len(self.guilds),
            ", ".join(f"shard {i}: {per_shard[i]}" for i in sorted(self.shards)),
        )
        if self._beating is not None:
            self.heartbeat.beat(self.health_problem())  # healthy now, not a beat later

    async def close(self) -> None:
        """Stop the services (see `Services.close` for the order), leaving Discord just
        before the database closes."""
        if self._beating is not None:
            self._beating.cancel()
            self._beating = None
            self.heartbeat.remove()
        services = getattr(self, "services", None)  # None if setup_hook failed before it
        if services is None:
            await super().close()
        else:
            await services.close(before_storage=super().close)
