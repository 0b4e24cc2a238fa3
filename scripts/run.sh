#!/usr/bin/env bash
# Run the service on http://localhost:5000 (a SQLite file under instance/ unless DATABASE_URL is set).
# Installs what it needs on first run, makes sure a container engine answers (scripts/ensure_docker.sh
# starts one when none does, unless DOCKER_HOST points elsewhere), then `python app.py` applies
# migrations, starts the reconciler and serves.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
scripts/ensure_docker.sh
exec python app.py
