# Deploy Service: slim Python, non-root, gunicorn; migrations run as the start step (scripts/serve.sh).
#
# BASE is any Debian-based image with a Python 3.11+ `python3`: python:3.11-slim by default, or (where
# no registry serves it) the Debian 12 base that scripts/ensure_base_image.sh makes. The packages go
# into a venv at /opt/venv on both, since Debian's own python3 refuses system-wide pip installs.
#   docker build --network host --build-arg BASE=deploy-service-base:debian12 -t deploy-service .
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=5000

WORKDIR /app

# git: agents with a git source are cloned before they are built. python3-venv: Debian's python3 needs
# it for `python3 -m venv` (python:3.11-slim has venv built in). Installed only where missing.
RUN set -eu; \
    need=""; \
    command -v git >/dev/null 2>&1 || need="git"; \
    python3 -c 'import ensurepip, venv' 2>/dev/null || need="$need python3-venv"; \
    if [ -n "$need" ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need; \
        rm -rf /var/lib/apt/lists/*; \
    fi

# EXTRA_CA_PEM: PEM certificates pip trusts besides its own bundle, for the pip install only, where a
# TLS-inspecting proxy stands between the build and the package index (empty: none). pip and setuptools
# leave the venv afterwards: nothing installs at run time.
ARG EXTRA_CA_PEM=""
COPY requirements.txt .
RUN set -eu; \
    python3 -m venv /opt/venv; \
    if [ -n "$EXTRA_CA_PEM" ]; then \
        bundle="$(mktemp)"; \
        cat "$(python -c 'from pip._vendor import certifi; print(certifi.where())')" >"$bundle"; \
        printf '%s\n' "$EXTRA_CA_PEM" >>"$bundle"; \
        export PIP_CERT="$bundle"; \
    fi; \
    pip install -r requirements.txt; \
    rm -f "${PIP_CERT:-}"; \
    pip uninstall -y -q setuptools pip

COPY app.py gunicorn.conf.py ./
COPY deploy_service ./deploy_service
COPY migrations ./migrations
COPY scripts/serve.sh ./scripts/serve.sh

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /app/instance \
    && chown app /app/instance
USER app

EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health', timeout=4)"

CMD ["bash", "scripts/serve.sh"]
