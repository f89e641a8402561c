# syntax=docker/dockerfile:1
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_URL=sqlite:////data/bot.sqlite3

WORKDIR /app

# Dependencies first, so code changes reuse the cached layer.
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY storage ./storage
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin bot \
    && mkdir -p /data \
    && chown bot /data

USER 10001
VOLUME ["/data"]

# SIGTERM lets in-flight sends finish (SHUTDOWN_TIMEOUT, 10 s by default); give it longer.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
