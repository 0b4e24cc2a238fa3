# The two commands a newcomer needs: `make run` and `make test`; `make check` while you work.
.PHONY: help run check test lint security load bench test-swarm faults fuzz

CHECK_MARKERS := not engine and not postgres and not process and not load and not fuzz and not clients and not image

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

run:  ## serve on http://localhost:5000 (SQLite file by default)
	bash scripts/run.sh

check:  ## ruff, format, mypy, and the tests needing no engine, own PostgreSQL, process, load or fuzz, on SQLite, on every core (~2.5 min)
	ruff check deploy_service deploy_client tests migrations bench app.py
	ruff format --check deploy_service deploy_client tests migrations bench app.py gunicorn.conf.py
	mypy
	env -u TEST_DATABASE_URL python -m pytest -q -n auto -m "$(CHECK_MARKERS)"

test:  ## the full gate: ruff + mypy + the whole suite on SQLite and on PostgreSQL, then the load test
	bash scripts/test.sh

lint:
	bash -c 'source scripts/bootstrap.sh && ruff check deploy_service deploy_client tests migrations bench app.py && mypy'

security:  ## the attack-matrix tests (tests/security) on SQLite; see docs/security.md
	bash -c 'source scripts/bootstrap.sh && python -m pytest tests/security -q'

load:  ## the sustained load test against gunicorn (LOAD_SECONDS, default 60); prints req/s and p99
	bash -c 'source scripts/bootstrap.sh && scripts/ensure_docker.sh && python -m pytest tests/load -s -q'

bench:  ## every benchmark, one table of figures against the targets (docs/performance.md)
	bash bench/run_all

test-swarm:  ## the Swarm runner's tests (the engine is made a single-node swarm for them when it is none, and left after)
	bash -c 'source scripts/bootstrap.sh && scripts/ensure_docker.sh && python -m pytest tests/unit/test_swarm.py tests/api/test_swarm_reconciler.py tests/integration/test_swarm_runner.py tests/integration/test_deployments_engine.py -k swarm'

faults:  ## the fault-injection tests (real engine, real databases) on SQLite, then on PostgreSQL
	bash -c 'source scripts/bootstrap.sh && scripts/ensure_docker.sh && scripts/ensure_postgres.sh \
		&& env -u TEST_DATABASE_URL python -m pytest tests/faults -q && scripts/with_postgres.sh python -m pytest tests/faults -q'

fuzz:  ## schemathesis over the OpenAPI spec (FUZZ_MAX_EXAMPLES, default 10), on SQLite
	bash -c 'source scripts/bootstrap.sh && python -m pytest tests/fuzz -q'
