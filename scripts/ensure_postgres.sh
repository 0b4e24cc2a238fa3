#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries (initdb, pg_ctl, postgres) are installed (idempotent).
#
# The fault-injection test of a PostgreSQL restart (tests/faults/test_postgres_restart.py) starts a
# private server of its own in every session, the SQLite one included, so the binaries must be there
# before that session runs. Looks where scripts/with_postgres.sh looks ($PG_BINDIR, pg_ctl on PATH,
# /usr/lib/postgresql/*/bin); when none is found, installs Debian's `postgresql` (root or sudo -n).
# Messages go to stderr, prefixed "ensure_postgres:".
set -euo pipefail

say() { echo "ensure_postgres: $*" >&2; }

has_bins() { [[ -x $1/initdb && -x $1/pg_ctl && -x $1/postgres ]]; }

found() {
    local dir
    if [[ -n ${PG_BINDIR:-} ]] && has_bins "$PG_BINDIR"; then return 0; fi
    if command -v pg_ctl >/dev/null && has_bins "$(dirname -- "$(readlink -f -- "$(command -v pg_ctl)")")"; then
        return 0
    fi
    for dir in /usr/lib/postgresql/*/bin; do
        if has_bins "$dir"; then return 0; fi
    done
    return 1
}

found && exit 0
say "PostgreSQL server binaries not found; installing Debian's postgresql"
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo -n "$@"; fi; }
export DEBIAN_FRONTEND=noninteractive
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
    || { as_root apt-get update -q >&2 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
found || { say "ERROR: postgresql was installed but initdb/pg_ctl/postgres are still missing"; exit 1; }
