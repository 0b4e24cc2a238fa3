#!/usr/bin/env bash
# with_postgres.sh - run a command against a throwaway PostgreSQL server.
#
# Usage:
#   scripts/with_postgres.sh <command> [args...]
#
# Example:
#   scripts/with_postgres.sh python -m pytest -q
#   scripts/with_postgres.sh sh -c 'psql "${TEST_DATABASE_URL/+psycopg/}" -c "select 1"'
#
# What it does:
#   1. Finds the PostgreSQL server binaries (initdb, pg_ctl, postgres) in
#      $PG_BINDIR (if set), then PATH, then /usr/lib/postgresql/*/bin (highest
#      version).  If none are found and we are root, installs Debian's
#      `postgresql` package with apt-get.
#   2. Creates a temporary data directory, runs initdb (trust auth, superuser
#      "postgres") and starts a server listening on 127.0.0.1 only, on a free
#      port (or $PG_TEST_PORT if set), with durability turned off for speed.
#      As root, the server runs as the `postgres` system user (PostgreSQL
#      refuses to run as root); otherwise as the current user.
#   3. Creates the database `deploy_test`, exports
#        TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:$PORT/deploy_test
#      and runs the command.
#   4. Always stops the server it started and removes the temporary directory
#      (on success, failure, Ctrl-C or SIGTERM), then exits with the command's
#      exit code.
#
# Environment:
#   PG_TEST_PORT  TCP port to use instead of picking a free one.
#   PG_BINDIR     Directory holding initdb/pg_ctl/postgres (overrides search).
#
# Messages from this script go to stderr, prefixed with "with_postgres:".

set -euo pipefail

PROG=with_postgres
DB_NAME=deploy_test
DB_SUPERUSER=postgres
PG_OS_USER=postgres

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ $# -eq 0 ]]; then
    printf 'usage: %s <command> [args...]\n' "$0" >&2
    exit 2
fi

IS_ROOT=0
if [[ $(id -u) -eq 0 ]]; then
    IS_ROOT=1
fi

# --------------------------------------------------------------------------
# 1. Locate (or install) the server binaries.
# --------------------------------------------------------------------------
BINDIR=""

has_server_bins() {
    local dir=$1
    [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]
}

find_bindir() {
    local p dir
    BINDIR=""
    if [[ -n ${PG_BINDIR:-} ]]; then
        has_server_bins "$PG_BINDIR" || die "PG_BINDIR=$PG_BINDIR does not contain initdb, pg_ctl and postgres"
        BINDIR=$PG_BINDIR
        return 0
    fi
    # PATH: resolve symlinks (e.g. /usr/local/bin/pg_ctl -> .../15/bin/pg_ctl)
    # so that pg_ctl, postgres and the client tools come from one install.
    if p=$(command -v pg_ctl) && command -v initdb >/dev/null && command -v postgres >/dev/null; then
        dir=$(dirname -- "$(readlink -f -- "$p")")
        if has_server_bins "$dir"; then
            BINDIR=$dir
            return 0
        fi
    fi
    # Debian/Ubuntu layout: pick the highest version.
    while IFS= read -r dir; do
        if [[ -n $dir ]] && has_server_bins "$dir"; then
            BINDIR=$dir
            return 0
        fi
    done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -rV || true)
    return 1
}

apt_lists_empty() {
    local f
    for f in /var/lib/apt/lists/*; do
        case ${f##*/} in
            lock | partial | auxfiles | '*') ;;
            *) return 1 ;;
        esac
    done
    return 0
}

install_postgres() {
    command -v apt-get >/dev/null || die "PostgreSQL server binaries not found and apt-get is not available; install PostgreSQL manually"
    export DEBIAN_FRONTEND=noninteractive
    if apt_lists_empty; then
        log "apt package lists are empty; running apt-get update"
        apt-get update >&2
    fi
    log "PostgreSQL server binaries not found; installing Debian package 'postgresql' (apt-get install -y postgresql)"
    if ! apt-get install -y postgresql >&2; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update >&2
        apt-get install -y postgresql >&2 || die "apt-get install -y postgresql failed"
    fi
}

if ! find_bindir; then
    if [[ $IS_ROOT -ne 1 ]]; then
        die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in PATH or /usr/lib/postgresql/*/bin, and not running as root so cannot install them. Install PostgreSQL (e.g. 'sudo apt-get install -y postgresql') or set PG_BINDIR."
    fi
    install_postgres
    find_bindir || die "PostgreSQL was installed but initdb/pg_ctl/postgres still cannot be found"
fi

INITDB=$BINDIR/initdb
PG_CTL=$BINDIR/pg_ctl
PSQL=$BINDIR/psql
if [[ ! -x $PSQL ]]; then
    PSQL=$(command -v psql) || die "psql not found (looked in $BINDIR and PATH)"
fi

# --------------------------------------------------------------------------
# 2. Decide which OS user runs the server.
# --------------------------------------------------------------------------
if [[ $IS_ROOT -eq 1 ]]; then
    if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
        log "creating system user '$PG_OS_USER'"
        useradd --system --no-create-home --shell /bin/sh "$PG_OS_USER" \
            || die "could not create system user '$PG_OS_USER'"
    fi
fi

# Run a command as the user that owns the cluster, from inside the temp dir
# (so the postgres user never starts in a directory it cannot read).
as_pg() {
    if [[ $IS_ROOT -eq 1 ]]; then
        if command -v runuser >/dev/null; then
            (cd "$WORKDIR" && runuser -u "$PG_OS_USER" -- "$@")
        else
            # shellcheck disable=SC2016  # $0/$@ are expanded by the inner sh
            (cd "$WORKDIR" && su "$PG_OS_USER" -s /bin/sh -c 'exec "$0" "$@"' -- "$@")
        fi
    else
        (cd "$WORKDIR" && "$@")
    fi
}

# --------------------------------------------------------------------------
# Cleanup: stop only the server we started, remove the temp dir.
# --------------------------------------------------------------------------
WORKDIR=""
DATADIR=""
SERVER_STARTED=0

# shellcheck disable=SC2329  # invoked via the EXIT trap
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [[ $SERVER_STARTED -eq 1 && -n $DATADIR && -f $DATADIR/postmaster.pid ]]; then
        log "stopping PostgreSQL server"
        if ! as_pg "$PG_CTL" -D "$DATADIR" -m fast -w -t 60 stop >/dev/null; then
            log "fast stop failed; trying immediate stop"
            as_pg "$PG_CTL" -D "$DATADIR" -m immediate -w -t 30 stop >/dev/null
        fi
    fi
    if [[ -n $WORKDIR && -d $WORKDIR ]]; then
        rm -rf -- "$WORKDIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --------------------------------------------------------------------------
# 3. Create the cluster and start the server.
# --------------------------------------------------------------------------
WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/with_postgres.XXXXXX")
if [[ $IS_ROOT -eq 1 ]]; then
    chown "$PG_OS_USER:" "$WORKDIR"
fi
DATADIR=$WORKDIR/data
SOCKDIR=$WORKDIR
LOGFILE=$WORKDIR/server.log

if [[ -n ${PG_TEST_PORT:-} ]]; then
    if ! [[ $PG_TEST_PORT =~ ^[0-9]+$ ]] || ((PG_TEST_PORT < 1 || PG_TEST_PORT > 65535)); then
        die "PG_TEST_PORT must be a TCP port number (1-65535), got '$PG_TEST_PORT'"
    fi
    PORT=$PG_TEST_PORT
else
    command -v python3 >/dev/null || die "python3 is needed to pick a free port (or set PG_TEST_PORT)"
    PORT=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()')
fi

log "using $BINDIR ($("$PG_CTL" --version)), port $PORT, data dir $DATADIR"

# --locale=C: deterministic and works even if $LANG names a missing locale.
if ! as_pg "$INITDB" -D "$DATADIR" -A trust -U "$DB_SUPERUSER" --no-sync -E UTF8 --locale=C \
    >"$WORKDIR/initdb.log" 2>&1; then
    log "initdb failed:"
    tail -n 30 "$WORKDIR/initdb.log" >&2
    exit 1
fi

# Set before starting: a timed-out "pg_ctl -w start" may leave a server running.
SERVER_STARTED=1
if ! as_pg "$PG_CTL" -D "$DATADIR" -l "$LOGFILE" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k '$SOCKDIR' -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    >/dev/null; then
    log "PostgreSQL server failed to start; last lines of $LOGFILE:"
    tail -n 40 "$LOGFILE" >&2 || true
    exit 1
fi

# --------------------------------------------------------------------------
# 4. Create the test database.
# --------------------------------------------------------------------------
"$PSQL" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U "$DB_SUPERUSER" -d postgres \
    -c "CREATE DATABASE $DB_NAME" >&2 \
    || die "could not create database $DB_NAME"

# --------------------------------------------------------------------------
# 5. Run the command.
# --------------------------------------------------------------------------
export TEST_DATABASE_URL="postgresql+psycopg://$DB_SUPERUSER@127.0.0.1:$PORT/$DB_NAME"
log "TEST_DATABASE_URL=$TEST_DATABASE_URL"

cmd_rc=0
"$@" || cmd_rc=$?

if [[ $cmd_rc -ne 0 ]]; then
    log "command exited with status $cmd_rc"
fi
# cleanup (EXIT trap) stops the server and preserves this exit status.
exit "$cmd_rc"
