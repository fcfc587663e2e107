"""Every embed the bot shows, in one place so they look alike."""

from __future__ import annotations

import discord

from bot.jobs import Job
from bot.runner import Phase

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
    """The footer text that identifies a job's messages (also used to find them after a crash)."""
    return f"Job #{job.id}"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def status(job: Job, phase: Phase, elapsed: float) -> discord.Embed:
    """The message that moves while a job runs."""
    title = _PHASE_TITLES[phase]
    if phase is Phase.GENERATING:
        title += f" · {elapsed:.0f} s"
    embed = discord.Embed(title=title, description=_shorten(job.prompt, 300), colour=BRAND)
    embed.add_field(name="Aspect ratio", value=job.aspect_ratio)
    embed.add_field(name="Images", value=str(job.num_outputs))
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
    embed.set_footer(text=f"{job_marker(job)} · {MODEL_NAME}")
    return embed


def result(job: Job, elapsed: float, *, reencoded: bool = False) -> discord.Embed:
    """The embed posted with the images."""
    embed = discord.Embed(description=_shorten(job.prompt, 4000), colour=SUCCESS)
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
    held = job.credits_reserved
    refund = f"Your {_plural(held, 'credit')} {'was' if held == 1 else 'were'} refunded."
    embed = discord.Embed(
        title="❌ Generation failed",
        description=f"{_shorten(reason, 1500)}\n\n{refund}",
        colour=FAILURE,
    )
    embed.add_field(name="Prompt", value=_shorten(job.prompt, 1000), inline=False)
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
