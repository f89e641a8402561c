# syntax=docker/dockerfile:1
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_URL=sqlite:////data/bot.sqlite3 \
    HEALTH_PORT=8080 \
    HEALTH_LISTEN=0.0.0.0

WORKDIR /app

# The locked dependencies first, in their own layer: a change to the code reuses it.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin bot \
    && mkdir -p /data \
    && chown bot /data \
    && chmod 0700 /data

# Then the code, installed without touching the dependencies.
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY storage ./storage
RUN pip install --no-deps --no-build-isolation .

USER 10001
VOLUME ["/data"]
EXPOSE 8080

# /healthz only: the process and its event loop answer. A feed or Telegram outage makes /readyz
# red, which must page someone, not restart the container.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os,urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HEALTH_PORT','8080'), timeout=4)"]

# SIGTERM lets in-flight sends finish (SHUTDOWN_TIMEOUT, 10 s by default); give it longer.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
