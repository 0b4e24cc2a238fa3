#!/usr/bin/env bash
# The one test command: lint and types, then the whole suite on SQLite and on a throwaway PostgreSQL
# that scripts/with_postgres.sh installs (Debian's postgresql) and starts itself. The integration
# tests drive a real Docker engine: scripts/ensure_docker.sh installs Debian's docker.io and
# busybox-static and starts dockerd when no engine answers; the rate-limit tests need Debian's
# redis-server, installed here when missing.
# Extra arguments go to pytest (e.g. scripts/test.sh -k agents).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh

scripts/ensure_docker.sh
scripts/ensure_postgres.sh  # the PostgreSQL-restart fault test starts its own server in both runs
if ! command -v redis-server >/dev/null 2>&1; then
  echo "test: installing Debian's redis-server (the rate-limit tests start one on loopback)" >&2
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >&2 \
      || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >&2; }
  else
    sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >&2
  fi
fi

echo "== ruff" >&2
ruff check deploy_service tests migrations app.py
ruff format --check deploy_service tests migrations app.py gunicorn.conf.py
echo "== mypy" >&2
mypy

echo "== pytest on SQLite" >&2
env -u TEST_DATABASE_URL python -m pytest "$@"

echo "== pytest on PostgreSQL" >&2
scripts/with_postgres.sh python -m pytest "$@"
