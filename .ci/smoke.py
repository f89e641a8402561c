"""Smoke check of an installed bot: every module imports, the article extractor extracts the
bundled page, and the operator commands that need no network run.

Run with the interpreter of the environment under test, from outside the checkout (so that the
installed package, not the source tree, is what is imported):

    cd /tmp && /path/to/venv/bin/python /path/to/.ci/smoke.py

Exits 1 naming what failed. A lazily imported extractor cannot hide a broken install: the
extraction below imports it.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

PACKAGES = ("bot", "handlers", "storage")


def import_everything() -> list[str]:
    failures = []
    count = 0
    for name in PACKAGES:
        package = importlib.import_module(name)
        modules = [name]
        modules += [
            info.name for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}.")
        ]
        for module in modules:
            if module.endswith("__main__"):
                continue  # runs the CLI; exercised below as a command
            try:
                importlib.import_module(module)
                count += 1
            except Exception as exc:
                failures.append(f"import {module}: {type(exc).__name__}: {exc}")
    print(f"smoke: imported {count} modules", flush=True)
    return failures


def extract_bundled_page() -> list[str]:
    from bot.pipeline.extract import extract_article

    page = resources.files("bot").joinpath("samples/caliber-article.html").read_bytes()
    article = extract_article(page, "https://caliber.az/en/post/sample-article")
    if len(article.text) < 1000 or not article.title:
        return [f"article extraction: got {len(article.text)} characters, title {article.title!r}"]
    print(f"smoke: extracted {len(article.text)} characters from the bundled page", flush=True)
    return []


def run_commands() -> list[str]:
    failures = []
    with tempfile.TemporaryDirectory() as data:
        # preview reads the bundled sample feed when FEEDS is not set; check needs the settings.
        base = {k: v for k, v in os.environ.items() if k != "FEEDS"}
        configured = base | {
            "FEEDS": "en=https://caliber.az/en/rss",
            "DATABASE_URL": f"sqlite:///{Path(data) / 'bot.sqlite3'}",
            "TELEGRAM_BOT_TOKEN": "123456:SMOKE-TEST-TOKEN-0123456789abcdef",
        }
        commands = [(["preview", "--limit", "1"], base), (["check", "--offline"], configured)]
        for command, env in commands:
            done = subprocess.run(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "bot", *command],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            shown = " ".join(command)
            if done.returncode != 0:
                failures.append(
                    f"python -m bot {shown}: exit {done.returncode}\n{done.stdout}{done.stderr}"
                )
            else:
                print(f"smoke: python -m bot {shown}: ok")
    return failures


def main() -> int:
    failures = import_everything() + extract_bundled_page() + run_commands()
    for failure in failures:
        print(f"smoke FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
