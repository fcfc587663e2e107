# pixeldojo-bot: `docker compose up -d` (compose.yaml), or build and run this image yourself
# with the settings in the environment and a volume at /data.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A dedicated user without a login shell or home: the bot needs to write only /data.
RUN useradd --system --user-group --no-create-home --shell /usr/sbin/nologin pixeldojo

# Installed, not run from the sources: the build folder is removed afterwards.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
RUN pip install . && rm -rf /src

# The database, and next to it the heartbeat file the health check reads. matplotlib (the
# /mod report chart) keeps its font cache in MPLCONFIGDIR: the user has no home to put it in.
RUN mkdir /data && chown pixeldojo:pixeldojo /data
ENV DATABASE_PATH=/data/pixeldojo-bot.sqlite3 \
    MPLCONFIGDIR=/tmp/matplotlib
VOLUME ["/data"]
WORKDIR /data

USER pixeldojo

# `--check` exits 0 while the heartbeat (written every 20 s) is fresh and healthy, 1 otherwise.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["pixeldojo-bot", "--check"]

# `docker stop` sends SIGTERM, on which the bot shuts down cleanly (allow it more than the 8 s
# it may wait for submissions in flight: compose.yaml sets stop_grace_period).
CMD ["pixeldojo-bot"]
