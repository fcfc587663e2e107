"""Every embed the bot shows, in one place so they look alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord

from bot.credits.admission import Balance
from bot.credits.blocklist import is_enforced
from bot.generation.models import Job, JobState
from bot.generation.runner import Phase, QueuePosition
from bot.safe_text import escape_member_text

if TYPE_CHECKING:
    from bot.credits.moderation import Ban, BlockedTerm
    from bot.credits.report import UsageReport
    from bot.storage.audit import AuditEntry
    from bot.storage.guild_settings import GuildSettings

BRAND = discord.Colour(0x7C3AED)
SUCCESS = discord.Colour(0x22C55E)
FAILURE = discord.Colour(0xEF4444)
MODEL_NAME = "Flux Kontext Pro"

_PHASE_TITLES = {
    Phase.QUEUED: "⏳ Queued",
    Phase.GENERATING: "🎨 Generating",
    Phase.DELIVERING: "📥 Saving your images",
}


def job_marker(job: Job) -> str:
    """The footer text that names a job's messages (for people; crash recovery matches the
    result's buttons instead)."""
    return f"Job #{job.id}"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _member(text: str, limit: int) -> str:
    """Member-supplied text, inert (see `bot.safe_text`) and within `limit` characters."""
    return _shorten(escape_member_text(text), limit)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def status(
    job: Job,
    phase: Phase,
    elapsed: float,
    queue: QueuePosition | None = None,
    expected: float | None = None,
) -> discord.Embed:
    """The message that moves while a job runs: while it waits, its place in the queue; while
    it generates, a progress bar against `expected` (the learned typical duration)."""
    title = _PHASE_TITLES[phase]
    if phase is Phase.GENERATING:
        title += f" · {elapsed:.0f} s"
    embed = discord.Embed(title=title, description=_member(job.prompt, 300), colour=BRAND)
    if phase is Phase.QUEUED and queue is not None:
        embed.add_field(name="Position", value=queue_position_text(queue), inline=False)
    if phase is Phase.GENERATING:
        embed.add_field(name="Progress", value=progress_text(elapsed, expected), inline=False)
    embed.add_field(name="Aspect ratio", value=job.aspect_ratio)
    embed.add_field(name="Images", value=str(job.num_outputs))
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
    embed.set_footer(text=f"{job_marker(job)} · {MODEL_NAME}")
    return embed


PROGRESS_CELLS = 12
PROGRESS_CAP = 0.95
"""The bar never looks finished before the images are: past the estimate it stops here."""


def progress_text(elapsed: float, expected: float | None) -> str:
    """Like "▰▰▰▰▱▱▱▱▱▱▱▱ 35% · about 6 s left", honest when the estimate is passed ("any moment
    now") or not known yet (just the time so far)."""
    if expected is None or expected <= 0:
        return f"Started {elapsed:.0f} s ago; I'll know how long jobs take after a few more."
    share = max(0.0, elapsed / expected)
    if share >= PROGRESS_CAP:
        return f"{_bar(PROGRESS_CAP)} any moment now"
    left = max(1, round(expected - elapsed))
    return f"{_bar(share)} {share:.0%} · about {left} s left"


def _bar(share: float) -> str:
    filled = min(PROGRESS_CELLS, max(0, round(share * PROGRESS_CELLS)))
    return "▰" * filled + "▱" * (PROGRESS_CELLS - filled)


def queue_position_text(queue: QueuePosition) -> str:
    """Like "3rd in line · ready about <t:…:R>" (the estimate once durations are known)."""
    text = f"{_ordinal(queue.position)} in line"
    if queue.eta is not None:
        text += f" · ready about <t:{int(queue.eta)}:R>"
    return text


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def cancelled(job: Job) -> discord.Embed:
    """A queued job's status message once it was cancelled (never sent, fully refunded)."""
    return _ended_without_images(
        job, "🚫 Cancelled", f"This prompt was cancelled before it started. {_refunded(job)}"
    )


def result(job: Job, elapsed: float, *, reencoded: bool = False) -> discord.Embed:
    """The embed posted with the images."""
    embed = discord.Embed(description=_member(job.prompt, 4000), colour=SUCCESS)
    embed.add_field(name="Aspect ratio", value=job.aspect_ratio)
    embed.add_field(name="Seed", value=str(job.seed) if job.seed is not None else "random")
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
    charged = job.credits_charged if job.credits_charged is not None else job.credits_reserved
    embed.add_field(name="Credits", value=str(charged))
    embed.add_field(name="Time", value=f"{elapsed:.1f} s")
    footer = f"{job_marker(job)} · {MODEL_NAME}"
    if reencoded:
        footer += " · re-encoded to fit this server's upload limit"
    embed.set_footer(text=footer)
    return embed


def failure(job: Job, reason: str) -> discord.Embed:
    """What a member sees when a job ends without images."""
    return _ended_without_images(
        job, "❌ Generation failed", f"{_member(reason, 1500)}\n\nYour {_refunded(job)}"
    )


def _refunded(job: Job) -> str:
    held = job.credits_reserved
    return f"{_plural(held, 'credit')} {'was' if held == 1 else 'were'} refunded."


def _ended_without_images(job: Job, title: str, description: str) -> discord.Embed:
    """A job's status message once it ended without images (failed or cancelled)."""
    embed = discord.Embed(title=title, description=description, colour=FAILURE)
    embed.add_field(name="Prompt", value=_member(job.prompt, 1000), inline=False)
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
    embed.set_footer(text=job_marker(job))
    return embed


def job_details(job: Job) -> discord.Embed:
    """Everything needed to reproduce a result (shown privately)."""
    embed = discord.Embed(title=f"{job_marker(job)} details", colour=BRAND)
    embed.description = f"```\n{_shorten(job.prompt, 3900).replace('```', 'ˋˋˋ')}\n```"
    embed.add_field(name="Aspect ratio", value=job.aspect_ratio)
    embed.add_field(name="Seed", value=str(job.seed) if job.seed is not None else "random")
    embed.add_field(name="Images", value=str(job.num_outputs))
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
    if job.parent_job_id is not None:
        embed.add_field(name="Based on", value=f"Job #{job.parent_job_id}")
    return embed


_STATE_ICONS = {
    JobState.QUEUED: "⏳",
    JobState.RESERVED: "⏳",
    JobState.SUBMITTED: "🎨",
    JobState.COMPLETED: "📥",
    JobState.POSTED: "✅",
    JobState.FAILED: "❌",
}


def job_link(job: Job) -> str:
    """A jump link to the job's result (or status) message, or the job number alone."""
    message_id = job.result_message_id or job.status_message_id
    if message_id is None or not job.guild_id:
        return job_marker(job)
    return f"[{job_marker(job)}](https://discord.com/channels/{job.guild_id}/{job.channel_id}/{message_id})"


def job_line(job: Job) -> str:
    """One line of a job list: state, link, prompt excerpt, when."""
    when = f"<t:{int(job.created_at)}:R>"
    return f"{_STATE_ICONS[job.state]} {job_link(job)} · {_member(job.prompt, 60)} · {when}"


def credits(balance: Balance, recent: list[Job]) -> discord.Embed:
    """`/credits`: what is left, what was used, when it resets, and recent jobs."""
    if balance.unlimited:
        headline = f"**Unlimited** credits · {balance.used} used"
    else:
        total = (balance.allowance or 0) + balance.granted
        headline = f"**{balance.remaining}** of {total} credits left"
    embed = discord.Embed(title="Your image credits", description=headline, colour=BRAND)
    embed.add_field(name=f"Used {balance.period.phrase}", value=str(balance.used))
    if balance.granted:
        embed.add_field(name="Granted by moderators", value=str(balance.granted))
    if balance.resets_at is not None:
        embed.add_field(name="Resets", value=f"<t:{int(balance.resets_at)}:R>")
    if balance.active_jobs:
        embed.add_field(name="Running or waiting", value=str(balance.active_jobs))
    if recent:
        embed.add_field(
            name="Recent jobs",
            value="\n".join(job_line(job) for job in recent)[:1024],
            inline=False,
        )
    embed.set_footer(text="1 credit per image · refunded automatically if a job fails")
    return embed


# -- moderator views (`/mod ...`): always ephemeral, never pinging ----------------------------

FIELD_LIMIT = 1024
DESCRIPTION_LIMIT = 4096


def fit_lines(lines: Sequence[str], limit: int, *, empty: str = "none") -> str:
    """Lines joined by newlines, within `limit` characters: a tail that doesn't fit becomes
    "…and N more". Each line is shortened on its own first so one long line can't hide the rest.
    """
    if not lines:
        return empty
    lines = [_shorten(line, max(1, limit - 20)) for line in lines]
    kept: list[str] = []
    length = 0
    for index, line in enumerate(lines):
        extra = len(line) + (1 if kept else 0)
        after = len(lines) - index - 1
        reserve = len(f"\n…and {after} more") if after else 0
        if length + extra + reserve > limit:
            break
        kept.append(line)
        length += extra
    more = len(lines) - len(kept)
    return "\n".join([*kept, f"…and {more} more"] if more else kept)


def allowance_text(allowance: int | None, settings: GuildSettings) -> str:
    """An allowance as text: "unlimited", or "50 credits per day" in the guild's period."""
    if allowance is None:
        return "unlimited"
    return f"{_plural(allowance, 'credit')} {settings.period.per}"


def mod_rules(
    settings: GuildSettings,
    *,
    role_allowances: dict[int, int | None],
    user_allowances: dict[int, int | None],
    channels: Sequence[int],
    blocked_terms: int,
    bans: int,
) -> discord.Embed:
    """`/mod limits show`: every rule of the guild in one embed."""
    if settings.period.value == "none":
        period = "never (one allowance in total)"
    else:
        period = f"every {settings.period.value} at {settings.reset_hour:02d}:00 UTC"
    cooldown = settings.cooldown_seconds
    embed = discord.Embed(title="🛡️ Image generation rules", colour=BRAND)
    embed.add_field(name="Credits reset", value=period)
    embed.add_field(
        name="Default allowance", value=allowance_text(settings.default_allowance, settings)
    )
    embed.add_field(
        name="Server spend cap",
        value="none"
        if settings.spend_cap is None
        else allowance_text(settings.spend_cap, settings),
    )
    for name, mention, allowances in (
        ("Role allowances", "<@&{}>", role_allowances),
        ("Member overrides", "<@{}>", user_allowances),
    ):
        lines = [
            f"{mention.format(id_)}: {allowance_text(a, settings)}" for id_, a in allowances.items()
        ]
        embed.add_field(name=name, value=fit_lines(lines, FIELD_LIMIT), inline=False)
    embed.add_field(name="Generations at once", value=f"{settings.max_concurrent} per member")
    embed.add_field(name="Waiting prompts", value=f"up to {settings.max_queued} per member")
    embed.add_field(name="Cooldown", value=f"{cooldown} s" if cooldown else "off")
    embed.add_field(name="Images per request", value=f"up to {settings.max_outputs}")
    embed.add_field(
        name="Allowed channels",
        value=fit_lines([f"<#{c}>" for c in channels], FIELD_LIMIT, empty="every channel"),
        inline=False,
    )
    embed.add_field(
        name="Moderator role",
        value="none (Manage Server only)"
        if settings.moderator_role_id is None
        else f"<@&{settings.moderator_role_id}>",
    )
    embed.add_field(
        name="Log channel",
        value="none" if settings.log_channel_id is None else f"<#{settings.log_channel_id}>",
    )
    embed.add_field(name="Blocked terms", value=str(blocked_terms))
    embed.add_field(name="Generation bans", value=str(bans))
    embed.set_footer(text="Change these with /mod limits, /mod settings, /mod channels")
    return embed


def member_credits(balance: Balance, recent: list[Job], name: str) -> discord.Embed:
    """`/mod credits check`: a member's credits exactly as `/credits` shows them to the member."""
    embed = credits(balance, recent)
    embed.title = _shorten(f"Image credits of {escape_member_text(name)}", 256)
    return embed


def usage_report(
    report: UsageReport, account_credits: int | None, *, show_account: bool = False
) -> discord.Embed:
    """`/mod report`: the period's spending, its top members, jobs and the spend cap, and with
    `show_account` (the operator's guild only) the PixelDojo account's last seen balance."""
    period = report.period.value
    if report.period_end is None:
        span = "since the beginning (credits never reset)"
    else:
        span = f"<t:{int(report.period_start)}:f> → <t:{int(report.period_end)}:f>"
    embed = discord.Embed(
        title=f"📊 Usage report · {'all time' if period == 'none' else period}",
        description=span,
        colour=BRAND,
    )
    spent = str(report.total_credits)
    if report.refunded_credits:
        spent += f" ({report.refunded_credits} refunded to members)"
    embed.add_field(name="Credits spent", value=spent)
    if report.previous_total_credits is not None:
        embed.add_field(name="Previous period", value=str(report.previous_total_credits))
    if report.spend_cap is None:
        cap = "no cap"
    else:
        percent = report.total_credits * 100 // report.spend_cap
        cap = f"{report.total_credits} of {report.spend_cap} ({percent}%)"
    embed.add_field(name="Spend cap", value=cap)
    embed.add_field(
        name="Jobs",
        value=(
            f"{report.jobs_posted} posted · {report.jobs_failed} failed · "
            f"{report.jobs_active} running"
        ),
    )
    if show_account:
        embed.add_field(
            name="PixelDojo account",
            value="unknown" if account_credits is None else f"{account_credits:,} credits left",
        )
    lines = [
        f"{rank}. <@{usage.user_id}> · {_plural(usage.credits, 'credit')} · "
        f"{_plural(usage.jobs, 'job')}"
        for rank, usage in enumerate(report.top_users, start=1)
    ]
    embed.add_field(
        name="Top members", value=fit_lines(lines, FIELD_LIMIT, empty="nobody yet"), inline=False
    )
    embed.set_footer(
        text="Credits PixelDojo charged, even where a member was refunded; "
        "moderators' grants and resets don't count"
    )
    return embed


def audit_log(entries: Sequence[AuditEntry]) -> discord.Embed:
    """`/mod audit`: newest first, each with when and who."""
    lines = [
        f"<t:{int(entry.created_at)}:R> "
        f"{'system' if entry.actor_id is None else f'<@{entry.actor_id}>'} {entry.summary}"
        for entry in entries
    ]
    return discord.Embed(
        title="📜 Audit log",
        description=fit_lines(lines, DESCRIPTION_LIMIT, empty="Nothing recorded yet."),
        colour=BRAND,
    )


def ban_list(bans: Sequence[Ban]) -> discord.Embed:
    """`/mod bans`: who may not generate, until when, why and by whom."""
    lines = []
    for ban in bans:
        until = (
            "permanently"
            if ban.until is None
            else f"until <t:{int(ban.until)}:f> (<t:{int(ban.until)}:R>)"
        )
        by = f" · by <@{ban.actor_id}>" if ban.actor_id is not None else ""
        reason = f" · {escape_member_text(ban.reason)}" if ban.reason else ""
        lines.append(f"<@{ban.user_id}> {until}{by}{reason}")
    return discord.Embed(
        title=f"🚫 Generation bans ({len(bans)})",
        description=fit_lines(lines, DESCRIPTION_LIMIT, empty="Nobody is banned."),
        colour=BRAND,
    )


NOT_ENFORCED = "(not enforced: RE2 can't run this pattern)"
"""How `/mod blocklist list` marks a stored pattern that matching skips."""


def blocklist(terms: Sequence[BlockedTerm]) -> discord.Embed:
    """`/mod blocklist list`: the terms themselves, in a code block (moderators only)."""
    embed = discord.Embed(title=f"🚧 Blocked terms ({len(terms)})", colour=BRAND)
    if not terms:
        embed.description = "No terms are blocked."
        return embed
    lines: list[str] = []
    unenforced = False
    for term in terms:
        line = f"#{term.id:<5} {term.pattern.replace('```', 'ˋˋˋ')}"
        if term.is_regex:
            line += "  (regex)"
        if not is_enforced(term.pattern, term.is_regex):
            line += f"  {NOT_ENFORCED}"
            unenforced = True
        lines.append(line)
    embed.description = f"```\n{fit_lines(lines, DESCRIPTION_LIMIT - 8)}\n```"
    footer = "Plain terms match whole words in any case. Remove one with /mod blocklist remove #id"
    if unenforced:
        footer += ". A pattern not enforced blocks nothing: remove it and add it in RE2 syntax."
    embed.set_footer(text=footer)
    return embed


def history(user_id: int, jobs: list[Job]) -> discord.Embed:
    """`/history`: one line per recent job, newest first."""
    embed = discord.Embed(title="Recent generations", colour=BRAND)
    if not jobs:
        embed.description = f"<@{user_id}> has not generated anything here yet."
        return embed
    lines = [job_line(job) for job in jobs]
    text = f"<@{user_id}>\n"
    for line in lines:
        if len(text) + len(line) + 1 > 4000:
            break
        text += line + "\n"
    embed.description = text
    return embed
