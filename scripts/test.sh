#!/usr/bin/env bash
# The one test command: lint and types, then the whole suite on SQLite and on a throwaway PostgreSQL
# that scripts/with_postgres.sh installs (Debian's postgresql) and starts itself. The integration
# tests drive a real Docker engine: scripts/ensure_docker.sh installs Debian's docker.io and
# busybox-static and starts dockerd when no engine answers; the rate-limit tests need Debian's
# redis-server and the load test wrk (scripts/ensure_tools.sh installs them when missing); the load test runs last, once. The swarm runner's
# tests run on a single-node swarm that this script initialises (and leaves at the end) when the engine
# is not in one already.
# About 15 minutes on the 2-core VM: SQLite 2.3 min (engine-free, every core) + 4.8 min (engine, processes,
# servers, on 3 workers), PostgreSQL 2.9 + 3.3 min (no `dbless` tests), load test 1.1 min.
# Extra arguments go to pytest (e.g. scripts/test.sh -k agents).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh

scripts/ensure_docker.sh
scripts/ensure_postgres.sh  # the PostgreSQL-restart fault test starts its own server (in the SQLite run)
scripts/ensure_client_tools.sh  # tests/clients: openapi-typescript and tsc from npm, pinned
scripts/ensure_sshd.sh  # tests/integration/test_ssh_engine.py: a throwaway sshd for DOCKER_HOST=ssh://
scripts/ensure_base_image.sh  # tests/integration/test_production_image.py: the Debian 12 base, made once
scripts/ensure_tools.sh  # redis-server (the rate-limit tests) and wrk (the load test)
tests/integration/images/build.sh >&2  # the test images, once: every xdist worker's session would build them

# The swarm runner's integration tests need a Swarm manager: make this engine a single-node swarm for
# the run, and leave it afterwards only if this script initialised it (a swarm that was there stays).
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" != "active" ]; then
  echo "test: initialising a single-node swarm for the swarm runner's tests" >&2
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  trap 'echo "test: leaving the swarm this run initialised" >&2; docker swarm leave --force >/dev/null' EXIT
fi

echo "== ruff" >&2
ruff check deploy_service deploy_client tests migrations bench app.py
ruff format --check deploy_service deploy_client tests migrations bench app.py gunicorn.conf.py
echo "== mypy" >&2
mypy

# pytest's "no tests collected" (exit 5) is fine for a part that arguments picked nothing from.
run_pytest() { local rc=0; "$@" || rc=$?; [ "$rc" -eq 0 ] || [ "$rc" -eq 5 ] || exit "$rc"; }

# The tests that need no engine, server, process or PostgreSQL of their own run on every core (pytest-xdist:
# each test has its own SQLite file); those that do, on OWN_WORKERS (default 3) xdist workers: each test has
# an engine namespace and containers of its own, and each worker a host-port range of its own
# (tests/helpers.py `port_range`). They mostly wait on the engine and on their processes, not on the cores.
OWN_PARTS="engine or postgres or process or image or clients or fuzz"
OWN_WORKERS="${OWN_WORKERS:-3}"
echo "== pytest on SQLite: the tests needing no engine or server of their own, on every core" >&2
run_pytest env -u TEST_DATABASE_URL python -m pytest -n auto -m "not load and not ($OWN_PARTS)" "$@"
echo "== pytest on SQLite: the engine, processes and servers, on $OWN_WORKERS workers" >&2
run_pytest env -u TEST_DATABASE_URL python -m pytest -n "$OWN_WORKERS" -m "not load and ($OWN_PARTS)" "$@"

# Only what the database can change runs again: the generated-clients tests read the spec, and `dbless`
# tests (tests/conftest.py: no test-database fixture; the runners' own tests, processes on SQLite files
# of their own, the PostgreSQL-restart test's own server, pure unit tests) and the production image
# (`image`, its own SQLite file) run in the SQLite run only.
# Split as on SQLite: each pytest process (each xdist worker) makes a database of its own on the server
# (tests/conftest.py), so the part without an engine or server of its own runs on every core too.
PG_TESTS="not load and not clients and not dbless and not image"
echo "== pytest on PostgreSQL: the tests needing no engine or server of their own, on every core" >&2
run_pytest scripts/with_postgres.sh python -m pytest -n auto -m "$PG_TESTS and not ($OWN_PARTS)" "$@"
echo "== pytest on PostgreSQL: the engine, processes and servers, on $OWN_WORKERS workers" >&2
run_pytest scripts/with_postgres.sh python -m pytest -n "$OWN_WORKERS" -m "$PG_TESTS and ($OWN_PARTS)" "$@"

# The sustained load test (LOAD_SECONDS, default 60) runs once, on PostgreSQL as in production, and
# only for the whole suite (not when arguments pick tests).
if [ "$#" -eq 0 ]; then
  echo "== load test on PostgreSQL (${LOAD_SECONDS:-60} s)" >&2
  scripts/with_postgres.sh python -m pytest tests/load -s -q
fi
