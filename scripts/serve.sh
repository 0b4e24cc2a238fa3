#!/usr/bin/env bash
# Production start step (Dockerfile, Render): apply migrations, then serve with gunicorn.
set -euo pipefail
cd "$(dirname "$0")/.."
flask --app app db upgrade
exec gunicorn --config gunicorn.conf.py app:app
