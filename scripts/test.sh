#!/usr/bin/env bash
# The one test command: lint and types, then the whole suite on SQLite and on a throwaway PostgreSQL
# that scripts/with_postgres.sh installs (Debian's postgresql) and starts itself. The integration
# tests drive a real Docker engine: scripts/ensure_docker.sh installs Debian's docker.io and
# busybox-static and starts dockerd when no engine answers.
# Extra arguments go to pytest (e.g. scripts/test.sh -k agents).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh

scripts/ensure_docker.sh

echo "== ruff" >&2
ruff check deploy_service tests migrations app.py
ruff format --check deploy_service tests migrations app.py gunicorn.conf.py
echo "== mypy" >&2
mypy

echo "== pytest on SQLite" >&2
env -u TEST_DATABASE_URL python -m pytest "$@"

echo "== pytest on PostgreSQL" >&2
scripts/with_postgres.sh python -m pytest "$@"
