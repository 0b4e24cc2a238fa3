#!/usr/bin/env bash
# Production start step (Dockerfile, Render): apply migrations, then serve with gunicorn.
set -euo pipefail
cd "$(dirname "$0")/.."
# From a checkout (not the Docker image, whose venv /opt/venv is on PATH): the project's .venv.
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/flask ]; then
  export PATH="$PWD/.venv/bin:$PATH"
fi
flask --app app db upgrade
exec gunicorn --config gunicorn.conf.py app:app
