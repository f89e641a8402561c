"""Command line: `python -m bot [run]` runs the bot, `python -m bot preview` prints posts.

The only module that touches argv, the environment, logging setup, signals and exit codes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from bot.config import ConfigError, Settings, load_settings
from bot.logs import setup_logging

log = logging.getLogger("bot")

EXIT_CONFIG = 2


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bot", description="Caliber.az analytics to Telegram."
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the bot (the default)")
    preview = sub.add_parser(
        "preview", help="print the posts a feed would produce; needs no token and no Telegram"
    )
    preview.add_argument("--feed", help="feed URL or file (default: the first of FEEDS)")
    preview.add_argument("--lang", help="language of the post's fixed words (default: the feed's)")
    preview.add_argument("--limit", type=int, default=3, help="how many posts (default 3)")
    preview.add_argument("--html", action="store_true", help="print the Telegram HTML")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    command = args.command or "run"
    try:
        if command == "preview":
            return _preview(args)
        settings = load_settings(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(settings.log_level, [settings.token or ""])
    return asyncio.run(_run(settings))


async def _run(settings: Settings) -> int:
    from telegram.error import InvalidToken

    from bot.app import run_bot

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await run_bot(settings, stop)
    except InvalidToken:
        log.critical("Telegram rejected TELEGRAM_BOT_TOKEN (401); check the token")
        return 1
    except Exception:
        # Through the logger, whose handler redacts the token, never as a bare traceback.
        log.critical("the bot stopped on an unexpected error", exc_info=True)
        return 1
    return 0


def _preview(args: argparse.Namespace) -> int:
    from bot.preview import run_preview

    env = dict(os.environ) | _preview_defaults(args)
    settings = load_settings(env, require_token=False)
    setup_logging(settings.log_level if env.get("LOG_LEVEL") else "WARNING")
    return asyncio.run(
        run_preview(settings, feed=args.feed, lang=args.lang, limit=args.limit, html=args.html)
    )


def _preview_defaults(args: argparse.Namespace) -> dict[str, str]:
    """Preview needs no FEEDS: without one it reads --feed, or the bundled sample feed."""
    if not os.environ.get("FEEDS", "").strip():
        return {"FEEDS": "en=https://preview.invalid/feed"}
    return {}


if __name__ == "__main__":
    sys.exit(main())
