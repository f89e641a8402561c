"""The dashboard and the alert rules query only metrics the bot really exports.

The real bot runs against the fake Bot API and a feed server, polls and delivers once; its
/metrics is scraped over HTTP and parsed as Prometheus parses it. Every `caliberbot_*` name in
deploy/grafana-dashboard.json's expressions and deploy/prometheus-alerts.yml's rules must be a
series of that scrape (counters as `_total`, histograms as `_bucket`, `_sum`, `_count`).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_health import CHANNEL, polled
from tests.fakes.botapi import FakeBotApi
from tests.fakes.feedserver import FeedServer, numbered_feed
from tests.support import bot_env, running_bot

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus-alerts.yml"
NAME = re.compile(r"\bcaliberbot_[a-z0-9_]+")
# The series Prometheus stores for each sample family type, by suffix.
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
    "gauge": ("",),
    "info": ("_info",),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))  # rows hold panels

    return [
        target["expr"]
        for panel in panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def exported_series(text: str) -> set[str]:
    """The series names a scrape gives Prometheus: its samples, and each family's by type."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        for suffix in SERIES_SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def test_dashboard_and_alert_files_are_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]
    exprs = " ".join(dashboard_exprs())
    for wanted in ("histogram_quantile", "caliberbot_bot_api_429_total", "outbox_oldest_due_age"):
        assert wanted in exprs

    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {
        "CaliberBotNotReady",
        "CaliberBotOutboxStuck",
        "CaliberBotFeedFailing",
        "CaliberBotRateLimited",
    } <= names
    for rule in rules:
        assert rule["expr"].strip() and rule["labels"]["severity"] in {"page", "warning"}
        assert rule["annotations"]["summary"]


async def test_every_metric_the_dashboard_and_alerts_use_is_exported(
    api: FakeBotApi, feed_server: FeedServer, db_path: Path
) -> None:
    api.add_chat(CHANNEL, "channel", title="Caliber EN")
    feed_server.set("/en/rss", numbered_feed(1))
    port = free_port()
    env = bot_env(
        api.url,
        {"en": feed_server.url("/en/rss")},
        db_path,
        CHANNELS=f"en={CHANNEL}",
        HEALTH_PORT=str(port),
    )
    async with running_bot(env), aiohttp.ClientSession() as session:
        await polled(feed_server, 2)
        feed_server.set("/en/rss", numbered_feed(1, 2))
        await api.wait_sent(1, CHANNEL)
        await polled(feed_server, len(feed_server.requests_to("/en/rss")) + 1)
        url = f"http://127.0.0.1:{port}/metrics"
        async with session.get(url, timeout=aiohttp.ClientTimeout(5)) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"].startswith("text/plain")
            text = await answer.text()

    exported = exported_series(text)
    assert "caliberbot_deliveries_total" in exported
    assert "caliberbot_deliveries" not in exported  # a counter's family name is no series
    used = {
        source: set(NAME.findall(expr))
        for source, expr in [
            *((f"dashboard: {e}", e) for e in dashboard_exprs()),
            *((f"alert {r['alert']}: {r['expr']}", r["expr"]) for r in alert_rules()),
        ]
    }
    assert sum(len(names) for names in used.values()) >= 20
    missing = {source: names - exported for source, names in used.items() if names - exported}
    assert not missing, f"metrics not exported by the bot: {missing}"
    # And no metric is exported that nothing shows: each is on the dashboard or in an alert.
    shown = set().union(*used.values())
    # (prometheus_client also exports each counter's and histogram's start time as `_created`.)
    families = {
        f.name for f in text_string_to_metric_families(text) if not f.name.endswith("_created")
    }
    unshown = {
        family
        for family in families
        if family.startswith("caliberbot_") and not any(n.startswith(family) for n in shown)
    }
    assert not unshown, f"exported but on no panel and in no alert: {unshown}"
