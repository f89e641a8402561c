"""`python -m bot preview`: the newcomer's first command, with no token and no Telegram."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from bot.config import load_settings
from bot.ops.preview import run_preview
from tests.fakes.feedserver import FeedServer, make_rss
from tests.fakes.telegram_html import check_html

ROOT = Path(__file__).resolve().parents[2]


def _preview(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FEEDS", "TELEGRAM_BOT_TOKEN")}
    return subprocess.run(
        [sys.executable, "-m", "bot", "preview", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_preview_of_the_bundled_sample_needs_nothing() -> None:
    result = _preview("--limit", "2")
    assert result.returncode == 0, result.stderr
    assert "How Russia and Iran try to mask cracks" in result.stdout
    assert "Read more" in result.stdout
    assert "<b>" not in result.stdout  # readable text by default
    assert result.stdout.count("-" * 72) == 2


def test_preview_html_in_another_language_is_valid_telegram_html() -> None:
    result = _preview("--html", "--lang", "az", "--limit", "1")
    assert result.returncode == 0, result.stderr
    post = result.stdout.split("-" * 72 + "\n")[1].rsplit("\n[", 1)[0]
    check_html(post)
    assert "Ətraflı oxu" in post and "iyul 2025" in post
    assert "alert(1)" not in post and "utm_source" not in post


def test_preview_of_a_missing_file_fails_cleanly(tmp_path: Path) -> None:
    result = _preview("--feed", str(tmp_path / "nope.xml"))
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr


async def test_preview_fetches_a_feed_url() -> None:
    async with FeedServer() as server:
        server.set("/ru/rss", make_rss([{"title": "Иран и Россия", "link": "https://caliber.az/ru/post/1",
                                         "description": "Текст."}], lang="ru"))  # fmt: skip
        settings = load_settings({"FEEDS": f"ru={server.url('/ru/rss')}"}, require_token=False)
        out = io.StringIO()
        code = await run_preview(settings, feed=None, lang=None, limit=5, html=False, out=out)
    assert code == 0
    assert "Иран и Россия" in out.getvalue() and "Читать далее" in out.getvalue()
