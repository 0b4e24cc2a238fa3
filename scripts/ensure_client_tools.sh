#!/usr/bin/env bash
# The client generators tests/clients runs against the OpenAPI spec: openapi-python-client comes with
# requirements-dev.txt (scripts/bootstrap.sh); openapi-typescript and typescript are pinned in
# tests/clients/package.json and its lock file, installed here with npm (Debian's nodejs and npm are
# installed first when the machine has no npm). Safe to run again: it does nothing when they are there.
set -euo pipefail
cd "$(dirname "$0")/../tests/clients"

if ! command -v npm >/dev/null 2>&1; then
  echo "ensure_client_tools: installing Debian's nodejs and npm" >&2
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >&2 \
    || { "${sudo[@]}" apt-get update -q >&2 && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >&2; }
fi

# node_modules/.installed-from records the lock file it was installed from: a changed pin reinstalls.
wanted="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -x node_modules/.bin/openapi-typescript ] || [ ! -x node_modules/.bin/tsc ] \
  || [ "$(cat node_modules/.installed-from 2>/dev/null)" != "$wanted" ]; then
  echo "ensure_client_tools: npm ci in tests/clients" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$wanted" > node_modules/.installed-from
fi
