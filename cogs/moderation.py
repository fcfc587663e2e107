"""`/mod ...`: moderators change the server's credit rules and read them back.

Discord-facing only: parse the options, check the invoker, call `ModerationService` (which
validates, writes the change and its audit row in one transaction), tell the log channel and
reply privately. Every reply is ephemeral and pings nobody.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.credits import usage_chart
from bot.credits.blocklist import TERM_MAX_LENGTH
from bot.credits.moderation import (
    ALLOWANCE_MAX,
    AUDIT_PAGE_MAX,
    BAN_MAX_SECONDS,
    BAN_MIN_SECONDS,
    COOLDOWN_MAX,
    GRANT_MAX,
    MAX_CONCURRENT_MAX,
    MAX_QUEUED_MAX,
    REASON_MAX_LENGTH,
    SPEND_CAP_MAX,
    AuditEntry,
    InvalidSetting,
    ModerationService,
)
from bot.credits.report import UsageReport
from bot.discord_ui import embeds
from bot.discord_ui.errors import set_failure_note
from bot.discord_ui.members import can_moderate, role_ids_of
from bot.generation.models import MAX_OUTPUTS
from cogs._client import bot_of

if TYPE_CHECKING:
    from bot.app import PixelDojoBot

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
NOT_A_MODERATOR = "You need Manage Server or the moderator role to use this."
NAME_LOOKUP_TIMEOUT = 5.0
"""How long `/mod report` waits for Discord to name its chart's members (else it shows ids)."""
CHART_FILENAME = "usage.png"
CHART_DESCRIPTION = "Bar charts: credits spent over this period, and the top members"
ONE_OF = "Give one of `credits`, `unlimited:True` or `clear:True`."

Action = Callable[[], Awaitable[AuditEntry]]
Member = discord.Member | discord.User
GenerationChannel = discord.TextChannel | discord.VoiceChannel | discord.Thread

PERIOD_CHOICES = [
    app_commands.Choice(name="daily", value="day"),
    app_commands.Choice(name="weekly (from Monday)", value="week"),
    app_commands.Choice(name="monthly (from the 1st)", value="month"),
    app_commands.Choice(name="never (one allowance in total)", value="none"),
]
REPORT_CHOICES = [
    app_commands.Choice(name="current period", value="current"),
    app_commands.Choice(name="previous period", value="previous"),
]


class ModeratorGroup(app_commands.Group):
    """A `/mod` command group whose commands only moderators may run.

    discord.py runs the interaction check of a command's direct parent group, so the root
    group and every subgroup are of this class: each `/mod` command is checked exactly once,
    by the bot itself, whatever permissions a server admin gave the command in Discord.
    """

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        bot = bot_of(interaction)
        if await can_moderate(bot.services.moderation, interaction):
            return True
        command = interaction.command.qualified_name if interaction.command else "mod"
        log.warning(
            "guild %s: refused /%s to user %d: not a moderator",
            interaction.guild_id,
            command,
            interaction.user.id,
        )
        # The tree's error handler shows this message privately to the member.
        raise app_commands.CheckFailure(NOT_A_MODERATOR)


async def _defer(interaction: discord.Interaction) -> None:
    await interaction.response.defer(ephemeral=True, thinking=True)


async def _reply(
    interaction: discord.Interaction,
    content: str | None = None,
    *,
    embed: discord.Embed | None = None,
    file: discord.File | None = None,
) -> None:
    """A private answer to the (deferred) interaction that pings nobody."""
    kwargs: dict[str, Any] = {"ephemeral": True, "allowed_mentions": NO_MENTIONS}
    if content is not None:
        kwargs["content"] = content[:2000]
    if embed is not None:
        kwargs["embed"] = embed
    if file is not None:
        kwargs["file"] = file
    await interaction.followup.send(**kwargs)


def _done(entry: AuditEntry) -> str:
    return f"✅ You {entry.summary}."


class Moderation(commands.Cog):
    """Moderator commands: limits, credits, bans, channels, blocked terms, settings, reports."""

    mod = ModeratorGroup(
        name="mod",
        description="Moderate image generation in this server",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )
    limits = ModeratorGroup(name="limits", description="Credit allowances per period", parent=mod)
    credits = ModeratorGroup(
        name="credits", description="A member's credits this period", parent=mod
    )
    channels = ModeratorGroup(
        name="channels", description="Channels where images may be generated", parent=mod
    )
    blocklist = ModeratorGroup(
        name="blocklist", description="Words and patterns prompts may not contain", parent=mod
    )

    def __init__(self, bot: PixelDojoBot) -> None:
        self.bot = bot

    @property
    def service(self) -> ModerationService:
        return self.bot.services.moderation

    async def _apply(
        self,
        interaction: discord.Interaction,
        actions: list[Action],
        notes: dict[Action, str] | None = None,
    ) -> None:
        """Run moderator actions in order, log each one, and report them to the moderator,
        each followed by its entry in `notes` (what else to do) if it was done.

        An action the service refuses stops the rest; the reply says what was done before it,
        and so does an error reply once anything was saved (repeating it would do it twice).
        """
        await _defer(interaction)
        lines: list[str] = []
        saved: list[str] = []
        for action in actions:
            try:
                entry = await action()
            except InvalidSetting as refusal:
                lines.append(f"⚠️ {refusal}")
                if len(actions) > 1:
                    lines.append("Nothing after that was changed.")
                break
            saved.append(f"you {entry.summary}")
            set_failure_note(
                interaction,
                f"This was saved, though: {'; '.join(saved)}. "
                "It is in `/mod audit`; don't repeat it.",
            )
            await self.bot.services.notices.moderator_action(entry)
            lines.append(_done(entry))
            if notes and action in notes:
                lines.append(notes[action])
        await _reply(interaction, "\n".join(lines))

    async def _act(
        self,
        interaction: discord.Interaction,
        action: Callable[..., Awaitable[AuditEntry]],
        **options: Any,
    ) -> None:
        """Run one `ModerationService` action as the invoking moderator, in this guild."""
        await self._apply(interaction, [partial(action, **self._ids(interaction), **options)])

    # -- /mod limits -------------------------------------------------------------------------

    @limits.command(name="show", description="Show every generation rule of this server")
    async def limits_show(self, interaction: discord.Interaction) -> None:
        await _defer(interaction)
        guild_id = interaction.guild_id or 0
        service = self.service
        embed = embeds.mod_rules(
            await service.get_settings(guild_id),
            role_allowances=await service.role_allowances(guild_id),
            user_allowances=await service.user_allowances(guild_id),
            channels=await service.allowed_channels(guild_id),
            blocked_terms=len(await service.blocked_terms(guild_id)),
            bans=len(await service.bans(guild_id)),
        )
        await _reply(interaction, embed=embed)

    @limits.command(name="default", description="Credits per period for everyone, and the period")
    @app_commands.describe(
        credits="Credits per period for members without a role or member allowance",
        unlimited="True: no limit for those members",
        period="How often allowances start over",
        reset_hour="Hour of the day (UTC) allowances start over",
    )
    @app_commands.choices(period=PERIOD_CHOICES)
    async def limits_default(
        self,
        interaction: discord.Interaction,
        credits: app_commands.Range[int, 0, ALLOWANCE_MAX] | None = None,
        unlimited: bool | None = None,
        period: app_commands.Choice[str] | None = None,
        reset_hour: app_commands.Range[int, 0, 23] | None = None,
    ) -> None:
        ids = self._ids(interaction)
        if credits is not None and unlimited:
            await self._refuse(interaction, "Give either `credits` or `unlimited`, not both.")
            return
        if unlimited is False and credits is None:
            await self._refuse(interaction, "To limit everyone, give the number of `credits`.")
            return
        actions: list[Action] = []
        if period is not None or reset_hour is not None:
            actions.append(
                partial(
                    self._set_period,
                    **ids,
                    period=period.value if period else None,
                    reset_hour=reset_hour,
                )
            )
        if credits is not None or unlimited:
            # After the period, so the summary names the new one ("… per week").
            actions.append(
                partial(
                    self.service.set_default_allowance,
                    **ids,
                    allowance=None if unlimited else credits,
                )
            )
        if not actions:
            await self._refuse(
                interaction,
                "Nothing to change: give `credits`, `unlimited`, `period` or `reset_hour`. "
                "`/mod limits show` shows the current rules.",
            )
            return
        await self._apply(interaction, actions)

    async def _set_period(
        self, *, guild_id: int, actor_id: int, period: str | None, reset_hour: int | None
    ) -> AuditEntry:
        """Change the period and/or its reset hour (a missing period keeps the current one)."""
        if period is None:
            period = (await self.service.get_settings(guild_id)).period.value
        return await self.service.set_period(
            guild_id=guild_id, actor_id=actor_id, period=period, reset_hour=reset_hour
        )

    @limits.command(name="role", description="Credits per period for members with a role")
    @app_commands.describe(
        role="The role",
        credits="Credits per period (a member gets their most generous role's allowance)",
        unlimited="True: no limit for members with this role",
        clear="True: remove this role's allowance",
    )
    async def limits_role(
        self,
        interaction: discord.Interaction,
        role: discord.Role,
        credits: app_commands.Range[int, 0, ALLOWANCE_MAX] | None = None,
        unlimited: bool | None = None,
        clear: bool | None = None,
    ) -> None:
        ids = self._ids(interaction)
        await self._set_allowance(
            interaction,
            credits,
            unlimited,
            clear,
            set_action=partial(self.service.set_role_allowance, **ids, role_id=role.id),
            clear_action=partial(self.service.clear_role_allowance, **ids, role_id=role.id),
        )

    @limits.command(name="user", description="A member's own credits per period, over their roles")
    @app_commands.describe(
        user="The member",
        credits="Credits per period for this member (overrides roles and the default)",
        unlimited="True: no limit for this member",
        clear="True: remove this member's own allowance",
    )
    async def limits_user(
        self,
        interaction: discord.Interaction,
        user: Member,
        credits: app_commands.Range[int, 0, ALLOWANCE_MAX] | None = None,
        unlimited: bool | None = None,
        clear: bool | None = None,
    ) -> None:
        ids = self._ids(interaction)
        await self._set_allowance(
            interaction,
            credits,
            unlimited,
            clear,
            set_action=partial(self.service.set_user_allowance, **ids, user_id=user.id),
            clear_action=partial(self.service.clear_user_allowance, **ids, user_id=user.id),
        )

    async def _set_allowance(
        self,
        interaction: discord.Interaction,
        credits: int | None,
        unlimited: bool | None,
        clear: bool | None,
        *,
        set_action: Callable[..., Awaitable[AuditEntry]],
        clear_action: Action,
    ) -> None:
        """Apply exactly one of credits / unlimited / clear to a role's or member's allowance."""
        choice = self._one_of(credits, unlimited, clear)
        if choice is None:
            await self._refuse(interaction, ONE_OF)
            return
        if choice == "clear":
            action = clear_action
        else:
            action = partial(set_action, allowance=None if choice == "unlimited" else credits)
        await self._apply(interaction, [action])

    @staticmethod
    def _one_of(credits: int | None, unlimited: bool | None, clear: bool | None) -> str | None:
        given = [
            name
            for name, on in (
                ("credits", credits is not None),
                ("unlimited", bool(unlimited)),
                ("clear", bool(clear)),
            )
            if on
        ]
        return given[0] if len(given) == 1 else None

    # -- /mod credits ------------------------------------------------------------------------

    @credits.command(name="grant", description="Give a member extra credits for this period")
    @app_commands.describe(
        user="The member", amount="Extra credits", note="Why (shown in the audit log)"
    )
    async def credits_grant(
        self,
        interaction: discord.Interaction,
        user: Member,
        amount: app_commands.Range[int, 1, GRANT_MAX],
        note: app_commands.Range[str, 1, REASON_MAX_LENGTH] | None = None,
    ) -> None:
        await self._act(
            interaction, self.service.grant_credits, user_id=user.id, amount=amount, note=note
        )

    @credits.command(name="reset", description="Forgive what a member used this period")
    @app_commands.describe(user="The member")
    async def credits_reset(self, interaction: discord.Interaction, user: Member) -> None:
        await self._act(interaction, self.service.reset_usage, user_id=user.id)

    @credits.command(name="check", description="See a member's credits as /credits shows them")
    @app_commands.describe(user="The member")
    async def credits_check(self, interaction: discord.Interaction, user: Member) -> None:
        await _defer(interaction)
        balance, recent = await self.bot.services.credit_summaries.for_member(
            interaction.guild_id or 0, user.id, role_ids_of(user)
        )
        await _reply(interaction, embed=embeds.member_credits(balance, recent, user.display_name))

    # -- /mod ban, unban, bans ---------------------------------------------------------------

    @mod.command(name="ban", description="Stop a member from generating images")
    @app_commands.describe(
        user="The member",
        hours="For how many hours (leave out for a ban until lifted)",
        reason="Why (the member sees it when refused)",
    )
    async def ban(
        self,
        interaction: discord.Interaction,
        user: Member,
        hours: app_commands.Range[float, BAN_MIN_SECONDS / 3600, BAN_MAX_SECONDS / 3600]
        | None = None,
        reason: app_commands.Range[str, 1, REASON_MAX_LENGTH] | None = None,
    ) -> None:
        seconds = None if hours is None else max(BAN_MIN_SECONDS, round(hours * 3600))
        await self._act(
            interaction,
            self.service.ban,
            user_id=user.id,
            duration_seconds=seconds,
            reason=reason,
        )

    @mod.command(name="unban", description="Let a banned member generate images again")
    @app_commands.describe(user="The member")
    async def unban(self, interaction: discord.Interaction, user: Member) -> None:
        await self._act(interaction, self.service.unban, user_id=user.id)

    @mod.command(name="bans", description="List members banned from generating")
    async def bans(self, interaction: discord.Interaction) -> None:
        await _defer(interaction)
        bans = await self.service.bans(interaction.guild_id or 0)
        await _reply(interaction, embed=embeds.ban_list(bans))

    # -- /mod channels -----------------------------------------------------------------------

    @channels.command(name="allow", description="Let images be generated in a channel")
    @app_commands.describe(channel="The channel (the first one limits generation to it)")
    async def channels_allow(
        self, interaction: discord.Interaction, channel: GenerationChannel
    ) -> None:
        await self._act(interaction, self.service.allow_channel, channel_id=channel.id)

    @channels.command(name="remove", description="Remove a channel from the allowed ones")
    @app_commands.describe(channel="The channel")
    async def channels_remove(
        self, interaction: discord.Interaction, channel: GenerationChannel
    ) -> None:
        await self._act(interaction, self.service.disallow_channel, channel_id=channel.id)

    @channels.command(name="clear", description="Allow generating images in every channel")
    async def channels_clear(self, interaction: discord.Interaction) -> None:
        await self._act(interaction, self.service.clear_channel_rules)

    @channels.command(name="list", description="List the channels where images may be generated")
    async def channels_list(self, interaction: discord.Interaction) -> None:
        await _defer(interaction)
        channels = await self.service.allowed_channels(interaction.guild_id or 0)
        if not channels:
            await _reply(interaction, "Images can be generated in every channel.")
            return
        listed = embeds.fit_lines([f"<#{c}>" for c in channels], 1900)
        await _reply(interaction, f"Images can only be generated in:\n{listed}")

    # -- /mod blocklist ----------------------------------------------------------------------

    @blocklist.command(name="add", description="Refuse prompts containing a word or pattern")
    @app_commands.describe(
        term="Word or phrase (whole words, any case), or a regular expression",
        regex="True: the term is a regular expression",
    )
    async def blocklist_add(
        self,
        interaction: discord.Interaction,
        term: app_commands.Range[str, 1, TERM_MAX_LENGTH],
        regex: bool = False,
    ) -> None:
        await self._act(interaction, self.service.add_blocked_term, term=term, is_regex=regex)

    @blocklist.command(name="remove", description="Unblock a term")
    @app_commands.describe(term="The term's number (like #3, see /mod blocklist list) or its text")
    async def blocklist_remove(
        self,
        interaction: discord.Interaction,
        term: app_commands.Range[str, 1, TERM_MAX_LENGTH],
    ) -> None:
        await self._act(interaction, self.service.remove_blocked_term, term=term)

    @blocklist.command(name="list", description="Show the blocked terms (only to you)")
    async def blocklist_list(self, interaction: discord.Interaction) -> None:
        await _defer(interaction)
        terms = await self.service.blocked_terms(interaction.guild_id or 0)
        await _reply(interaction, embed=embeds.blocklist(terms))

    # -- /mod settings -----------------------------------------------------------------------

    @mod.command(name="settings", description="Change per-member limits, the spend cap and roles")
    @app_commands.describe(
        concurrency="Generations one member may run at once",
        queue="Prompts one member may have waiting beyond those running",
        cooldown="Seconds between a member's generations (0 = none)",
        max_outputs="Most images per request",
        spend_cap="Credits the whole server may spend per period",
        no_spend_cap="True: remove the server spend cap",
        moderator_role="Role that may use /mod besides Manage Server",
        no_moderator_role="True: only Manage Server may use /mod",
        log_channel="Where moderator actions and spend-cap notices are posted",
        no_log_channel="True: stop posting moderator actions",
    )
    async def settings(
        self,
        interaction: discord.Interaction,
        concurrency: app_commands.Range[int, 1, MAX_CONCURRENT_MAX] | None = None,
        queue: app_commands.Range[int, 1, MAX_QUEUED_MAX] | None = None,
        cooldown: app_commands.Range[int, 0, COOLDOWN_MAX] | None = None,
        max_outputs: app_commands.Range[int, 1, MAX_OUTPUTS] | None = None,
        spend_cap: app_commands.Range[int, 1, SPEND_CAP_MAX] | None = None,
        no_spend_cap: bool | None = None,
        moderator_role: discord.Role | None = None,
        no_moderator_role: bool | None = None,
        log_channel: discord.TextChannel | None = None,
        no_log_channel: bool | None = None,
    ) -> None:
        ids = self._ids(interaction)
        service = self.service
        clashes = [
            (spend_cap is not None and no_spend_cap, "spend_cap", "no_spend_cap"),
            (
                moderator_role is not None and no_moderator_role,
                "moderator_role",
                "no_moderator_role",
            ),
            (log_channel is not None and no_log_channel, "log_channel", "no_log_channel"),
        ]
        for clash, first, second in clashes:
            if clash:
                await self._refuse(interaction, f"Give either `{first}` or `{second}`, not both.")
                return
        if moderator_role is not None and moderator_role.is_default():
            # Every member has @everyone: it would make the whole server moderators.
            await self._refuse(interaction, "Pick a role other than @everyone as moderator role.")
            return
        actions: list[Action] = []
        notes: dict[Action, str] = {}
        if log_channel is not None:
            # First, so this command's other changes are posted there too.
            actions.append(partial(service.set_log_channel, **ids, channel_id=log_channel.id))
        if concurrency is not None:
            actions.append(partial(service.set_max_concurrent, **ids, value=concurrency))
        if queue is not None:
            actions.append(partial(service.set_max_queued, **ids, value=queue))
        if cooldown is not None:
            actions.append(partial(service.set_cooldown, **ids, seconds=cooldown))
        if max_outputs is not None:
            actions.append(partial(service.set_max_outputs, **ids, value=max_outputs))
        if spend_cap is not None or no_spend_cap:
            actions.append(partial(service.set_spend_cap, **ids, cap=spend_cap))
        if moderator_role is not None or no_moderator_role:
            role_id = moderator_role.id if moderator_role is not None else None
            actions.append(partial(service.set_moderator_role, **ids, role_id=role_id))
            if moderator_role is not None:
                notes[actions[-1]] = self._how_to_show_mod(moderator_role)
        if no_log_channel:
            # Last, so the changes before it still reach the channel.
            actions.append(partial(self._turn_off_log_channel, **ids))
        if not actions:
            await self._refuse(
                interaction,
                "Nothing to change: give at least one option. "
                "`/mod limits show` shows the current rules.",
            )
            return
        await self._apply(interaction, actions, notes)

    def _how_to_show_mod(self, role: discord.Role) -> str:
        """The bot may let the role use /mod, but only a server admin can make Discord show it
        to them (a bot token cannot edit command permissions)."""
        app = discord.utils.escape_markdown(self.bot.user.name if self.bot.user else "this bot")
        return (
            f"Discord still shows `/mod` only to members with Manage Server. To show it to "
            f"{role.mention} too: Server Settings → Integrations → {app} → Manage → `/mod` → "
            f"Add Roles or Members → {role.mention}."
        )

    async def _turn_off_log_channel(self, *, guild_id: int, actor_id: int) -> AuditEntry:
        """Turn the log channel off, and say so in it one last time."""
        previous = (await self.service.get_settings(guild_id)).log_channel_id
        entry: AuditEntry = await self.service.set_log_channel(
            guild_id=guild_id, actor_id=actor_id, channel_id=None
        )
        if previous is not None:
            await self.bot.services.notices.farewell(entry, previous)
        return entry

    # -- /mod report, audit ------------------------------------------------------------------

    @mod.command(name="report", description="Credits spent, top members and jobs in a period")
    @app_commands.describe(period="Which period (default: the current one)")
    @app_commands.choices(period=REPORT_CHOICES)
    async def report(
        self,
        interaction: discord.Interaction,
        period: app_commands.Choice[str] | None = None,
    ) -> None:
        await _defer(interaction)
        guild_id = interaction.guild_id or 0
        report = await self.service.usage_report(guild_id)
        if period is not None and period.value == "previous":
            if report.previous_period_start is None:
                await _reply(
                    interaction,
                    "Credits never reset in this server, so there is no previous period.",
                )
                return
            report = await self.service.usage_report(
                guild_id, period_start=report.previous_period_start
            )
        # The PixelDojo account is the operator's, shared by every guild the bot serves: only
        # the operator's own guild sees its balance.
        services = self.bot.services
        operator = guild_id == services.settings.operator_guild_id
        account = services.pixeldojo.last_credits_remaining if operator else None
        embed = embeds.usage_report(report, account, show_account=operator)
        await _reply(interaction, embed=embed, file=await _usage_chart(interaction, report))

    @mod.command(name="audit", description="Recent moderator actions and generations")
    @app_commands.describe(limit=f"How many entries (default 15, at most {AUDIT_PAGE_MAX})")
    async def audit(
        self,
        interaction: discord.Interaction,
        limit: app_commands.Range[int, 1, AUDIT_PAGE_MAX] = 15,
    ) -> None:
        await _defer(interaction)
        entries = await self.service.audit_entries(interaction.guild_id or 0, limit=limit)
        await _reply(interaction, embed=embeds.audit_log(entries))

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _ids(interaction: discord.Interaction) -> dict[str, int]:
        """Who acts where: the keyword arguments every `ModerationService` action takes."""
        return {"guild_id": interaction.guild_id or 0, "actor_id": interaction.user.id}

    @staticmethod
    async def _refuse(interaction: discord.Interaction, message: str) -> None:
        """Explain a bad combination of options privately; nothing was changed."""
        if interaction.response.is_done():
            await _reply(interaction, f"⚠️ {message}")
        else:
            await interaction.response.send_message(
                f"⚠️ {message}", ephemeral=True, allowed_mentions=NO_MENTIONS
            )


async def _usage_chart(
    interaction: discord.Interaction, report: UsageReport
) -> discord.File | None:
    """The report's chart to attach, or None: when the period has no usage, or the chart could
    not be drawn or would not fit the upload limit (logged; the text report posts alone)."""
    if not usage_chart.has_usage(report):
        return None
    members = [u.user_id for u in report.top_users[: usage_chart.CHART_MEMBERS] if u.credits > 0]
    names = await _display_names(interaction.guild, members)
    try:
        png = await asyncio.to_thread(usage_chart.render_usage_chart, report, names)
    except Exception:
        log.exception("guild %s: could not draw the usage chart", report.guild_id)
        return None
    if png is None:
        return None
    if len(png) > interaction.filesize_limit:
        log.warning(
            "guild %s: usage chart (%d bytes) is over the upload limit (%d bytes); not attached",
            report.guild_id,
            len(png),
            interaction.filesize_limit,
        )
        return None
    return discord.File(io.BytesIO(png), filename=CHART_FILENAME, description=CHART_DESCRIPTION)


async def _display_names(guild: discord.Guild | None, user_ids: Sequence[int]) -> dict[int, str]:
    """Members' display names (raw member text): from the cache, else asked of Discord, one
    request each, all within `NAME_LOOKUP_TIMEOUT`. A member who left, or whom Discord did not
    name in time, is missing from the answer."""
    names: dict[int, str] = {}
    if guild is None:
        return names

    async def fetch(user_id: int) -> None:
        try:
            names[user_id] = (await guild.fetch_member(user_id)).display_name
        except discord.NotFound:
            pass  # left the server: the chart shows the id instead
        except Exception:  # a name is decoration: never let it cost the report
            log.warning("guild %s: could not fetch member %d's name", guild.id, user_id)

    missing = []
    for user_id in user_ids:
        member = guild.get_member(user_id)
        if member is not None:
            names[user_id] = member.display_name
        else:
            missing.append(user_id)
    try:
        async with asyncio.timeout(NAME_LOOKUP_TIMEOUT):
            await asyncio.gather(*(fetch(user_id) for user_id in missing))
    except TimeoutError:
        log.info("guild %s: Discord named only %d of the chart's members", guild.id, len(names))
    return names


async def setup(bot: PixelDojoBot) -> None:
    await bot.add_cog(Moderation(bot))
