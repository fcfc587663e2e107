"""Command line: `python -m bot` runs the bot; `python -m bot imagine PROMPT` generates once;
`python -m bot --check` says whether the running bot is healthy (exit status 0 or 1).

The `imagine` subcommand goes through the same PixelDojo client and job runner as the bot,
which makes it the quickest check that an API key and the network work, without Discord.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import ConfigError, Settings, load_settings
from bot.logging_setup import setup_logging

if TYPE_CHECKING:
    from bot.app import PixelDojoBot

log = logging.getLogger("bot")


def _parser() -> argparse.ArgumentParser:
    from bot.pixeldojo.models import ASPECT_RATIOS

    parser = argparse.ArgumentParser(prog="pixeldojo-bot", description=__doc__)
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if the running bot's heartbeat is fresh and healthy, else 1 with the reason",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the Discord bot (the default)")
    imagine = sub.add_parser("imagine", help="generate images from the command line")
    imagine.add_argument("prompt")
    imagine.add_argument("--aspect-ratio", default="1:1", choices=ASPECT_RATIOS)
    imagine.add_argument("--num-outputs", type=int, default=1, choices=range(1, 5))
    imagine.add_argument("--seed", type=int)
    imagine.add_argument("--out", type=Path, default=Path("."), help="folder for the images")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.check:
        return health_check()
    is_cli = args.command == "imagine"
    try:
        settings = load_settings(require_discord=not is_cli)
    except ConfigError as exc:
        print(f"pixeldojo-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, [settings.discord_token, settings.pixeldojo_api_key])
    if is_cli:
        from bot.cli import generate_once

        return asyncio.run(
            generate_once(
                settings,
                prompt=args.prompt,
                aspect_ratio=args.aspect_ratio,
                num_outputs=args.num_outputs,
                seed=args.seed,
                out_dir=args.out,
            )
        )
    return run_bot(settings)


def health_check() -> int:
    """For a supervisor: 0 and one line if the bot's heartbeat is fresh and healthy, else 1 and
    one line saying why. Reads only `HEARTBEAT_PATH` / `DATABASE_PATH` (no secrets needed);
    never 2, which Docker reserves."""
    from bot.config import heartbeat_file
    from bot.health import check

    verdict = check(heartbeat_file(), now=time.time())
    print(f"pixeldojo-bot: {verdict.line}", file=sys.stdout if verdict.healthy else sys.stderr)
    return 0 if verdict.healthy else 1


def run_bot(settings: Settings) -> int:
    """Run until SIGINT or SIGTERM, then shut down cleanly. Unfinished jobs resume next start."""
    import discord

    from bot.app import PixelDojoBot, point_discord_at
    from bot.pixeldojo.webhooks import WebhookUnavailable
    from bot.storage import DatabaseUnavailable

    point_discord_at(settings.discord_api_base, settings.discord_gateway_url)
    try:
        asyncio.run(_serve(PixelDojoBot(settings), settings.discord_token))
    except discord.LoginFailure:
        print(
            "pixeldojo-bot: Discord rejected DISCORD_TOKEN (check it in the Developer Portal)",
            file=sys.stderr,
        )
        return 2
    except discord.PrivilegedIntentsRequired:
        print("pixeldojo-bot: Discord refused the requested gateway intents", file=sys.stderr)
        return 2
    except DatabaseUnavailable as exc:
        print(f"pixeldojo-bot: cannot open DATABASE_PATH={exc.path}: {exc.cause}", file=sys.stderr)
        return 2
    except WebhookUnavailable as exc:
        print(f"pixeldojo-bot: cannot listen for webhooks on {exc}", file=sys.stderr)
        return 2
    return 0


async def _serve(bot: PixelDojoBot, token: str) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # A service manager stops the bot with SIGTERM: close the gateway, stop polling and
        # close the database instead of dying mid-write (a crash would still lose nothing).
        loop.add_signal_handler(signum, _request_close, bot, signum)
    async with bot:
        await bot.start(token)
    log.info("shut down")


def _request_close(bot: PixelDojoBot, signum: int) -> None:
    log.info("received %s: shutting down", signal.Signals(signum).name)
    asyncio.get_running_loop().create_task(bot.close())


if __name__ == "__main__":
    sys.exit(main())
