# The two commands a newcomer needs: `make run` and `make test`.
.PHONY: run test lint security fuzz

run:  ## serve on http://localhost:5000 (SQLite file by default)
	bash scripts/run.sh

test:  ## ruff + mypy + the suite on SQLite and on PostgreSQL
	bash scripts/test.sh

lint:
	bash -c 'source scripts/bootstrap.sh && ruff check deploy_service tests migrations app.py && mypy'

security:  ## the attack-matrix tests (tests/security) on SQLite; see docs/security.md
	bash -c 'source scripts/bootstrap.sh && python -m pytest tests/security -q'

fuzz:  ## schemathesis over the OpenAPI spec (FUZZ_MAX_EXAMPLES, default 10), on SQLite
	bash -c 'source scripts/bootstrap.sh && python -m pytest tests/fuzz -q'
