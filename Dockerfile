# UNTESTED: written on a machine without a Docker engine; nothing here has been built or run. Keep it
# consistent with pyproject.toml (the package and its console script) and docs/api.md's process interface.
#
#   docker build -t claude-agent-graphql-api .
#   docker run --rm -p 127.0.0.1:8000:8000 -e ANTHROPIC_API_KEY -v agent-data:/data \
#     --security-opt seccomp=unconfined --security-opt apparmor=unconfined claude-agent-graphql-api
#
# With no DATABASE_URL/REDIS_URL the container runs the embedded default (SQLite under /data, one replica);
# docker-compose.yml shows the PostgreSQL + Redis + two replicas setup.
# GraphiQL's and the console's browser assets, from the npm packages web/package-lock.json pins
# (scripts/web-assets; docs/operations.md#browser-assets-graphiql-and-the-console).
FROM node:20-slim AS web-assets
WORKDIR /app
COPY web/package.json web/package-lock.json ./web/
COPY scripts/web-assets ./scripts/
RUN scripts/web-assets

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data

# The agent CLI works in git repositories and shells out to git; ca-certificates for the Anthropic API;
# bubblewrap for the sandbox every agent runs in, socat for its egress relay (docs/security.md). The
# sandbox needs unprivileged user namespaces: Docker's default seccomp profile refuses them, so run the
# container with `--security-opt seccomp=unconfined` (and `--security-opt apparmor=unconfined` where
# AppArmor restricts user namespaces, as Ubuntu 24.04 does), or the server refuses runs and says why
# (GET /readyz).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates bubblewrap socat \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --shell /bin/bash app \
    && mkdir -p /data \
    && chown app:app /data

WORKDIR /app

# A regular (non-editable) install; alembic.ini and alembic/ stay in the working directory because
# `claude-agent-api migrate` looks for alembic.ini next to the package or in the current directory.
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY api ./api
COPY graphql_schema ./graphql_schema
COPY persistence ./persistence
COPY --from=web-assets /app/api/web/vendor ./api/web/vendor
RUN pip install . \
    && rm -rf build ./*.egg-info

USER app

VOLUME ["/data"]
EXPOSE 8000

# Exec form: the server is PID 1 and gets SIGTERM itself for a graceful shutdown (uvicorn closes sockets
# with 1012, which graphql-ws clients retry). Run with an init (compose: `init: true`) so orphaned tool
# processes of the agent CLI are reaped.
CMD ["claude-agent-api", "serve", "--host", "0.0.0.0", "--port", "8000"]
