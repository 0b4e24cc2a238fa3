# The two commands a newcomer needs: `make run` and `make test`.
.PHONY: run test lint faults

run:  ## serve on http://localhost:5000 (SQLite file by default)
	bash scripts/run.sh

test:  ## ruff + mypy + the suite on SQLite and on PostgreSQL
	bash scripts/test.sh

lint:
	bash -c 'source scripts/bootstrap.sh && ruff check deploy_service tests migrations app.py && mypy'

faults:  ## the fault-injection tests (real engine, real databases) on SQLite, then on PostgreSQL
	bash -c 'source scripts/bootstrap.sh && scripts/ensure_docker.sh && scripts/ensure_postgres.sh \
		&& env -u TEST_DATABASE_URL python -m pytest tests/faults -q && scripts/with_postgres.sh python -m pytest tests/faults -q'
