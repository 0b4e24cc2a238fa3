#!/usr/bin/env bash
# Run the service on http://localhost:5000 (a SQLite file under instance/ unless DATABASE_URL is set).
# Installs what it needs on first run; `python app.py` applies migrations before serving.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
exec python app.py
