"""Schemathesis fuzzing of the service's own OpenAPI spec, in-process (WSGI), with every default check.

What runs:
- `test_operation`: every operation of `GET /openapi.json` (OpenAPI 3.1, 51 operations), as a logged-in
  user (`Authorization: Bearer`; the refresh route gets the refresh token), with schemathesis 4's default
  configuration: all phases (examples, coverage — including unsupported methods and malformed content
  types — and fuzzing), positive and negative data, and every default check (server errors, status
  code / content type / headers / response schema conformance, positive data acceptance, negative data
  rejection, missing required header, unsupported method, Allow header, ignored auth, use-after-free,
  resource availability).
- `test_operation_with_api_key`: the operations that also take `X-API-Key`, with a real key of a real
  agent the fuzz user owns.
- `test_stateful`: schemathesis' state machine over the spec's OpenAPI links (agent → get/patch/delete/
  deploy/api-key/stats, deployment → get/events/logs/metrics/scale/stop/restart/results/delete, secret,
  webhook and API key → delete), bounded in steps and examples: the spec's links only, not links
  schemathesis would infer from path parameters (see `schema.config` below). Each scenario starts from
  an empty database, so Hypothesis can replay and shrink what it finds.

Auth goes through schemathesis auth providers (`BearerAuth`, `ApiKeyAuth`), so every case counts as
explicitly authenticated and `ignored_auth` checks every protected operation. The providers write
stand-in credentials (cached for the whole run) that the WSGI proxy in front of the app swaps for the
current identity's real ones (only those exact values; a missing, forged or mangled credential passes
unchanged), because the identity is made anew for every operation.

The schema is loaded lazily (`schemathesis.pytest.from_fixture`): building the spec's examples and
coverage cases costs about 30 s, which eager loading spent at every collection of the suite. So each
of `test_operation` and `test_operation_with_api_key` is one pytest test with one subtest per operation;
`afresh_per_operation` gives each operation an empty database and a new identity, as one test per
operation did. The `fuzz` marker keeps these out of `make check`; `make fuzz` and `make test` run them.

The runner is the in-memory `FakeRunner`, so fuzzing never starts containers; no reconciler runs, so
deployments stay `deploying`. `LOG_FOLLOW_MAX_SECONDS` is tiny so `follow=true` streams end at once, and
`WEBHOOK_ALLOW_PRIVATE_TARGETS` is on so that webhook URLs are never resolved (no DNS traffic), and
`RECONCILER_STALE_SECONDS` is a day, since no reconciler records passes for readiness.
The spec's two non-standard string formats (`git-url`, `http-url`) get generators here; whether a value
is valid is still decided by the service, and every check applies to it.

Excluded: no operation and no check. One expectation is widened: `scaleDeployment` may answer a
schema-valid body with 400 `invalid_state` (the contract's answer for a deployment that is not running).
Part of the normal suite (`make test`, both databases).

Bounded and reproducible: `FUZZ_MAX_EXAMPLES` (default 10) examples per operation and phase (three times
that for the state machine, ten steps each), Hypothesis derandomized (fixed seed), no example database.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test
from schemathesis.config import OperationConfig, PositiveDataAcceptanceConfig
from schemathesis.schemas import BaseSchema

from deploy_service import create_app
from deploy_service.extensions import db
from deploy_service.references import InvalidReference, check_image_origin, image_registry
from deploy_service.services.engine import EXTENSION_KEY as RUNNER_KEY
from tests.conftest import TEST_CONFIG
from tests.fakes import FakeRunner

POSITIVE_STATUSES = PositiveDataAcceptanceConfig().expected_statuses
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "10"))
PASSWORD = "fuzz-password-123"
REGISTRY_SECRET = "ghcr-token"
"""The fuzz user's one stored secret: the spec's example of `registry_auth.password_secret`."""
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@schemathesis.hook
def filter_case(_context: Any, case: Any) -> bool:
    """Positive cases keep the rules JSON Schema cannot state: an agent's `env` and `secrets` share no
    variable, its image names neither a loopback or private registry nor an image the service built, its
    `registry_auth` names a stored secret and the image's registry (`_login_known`); and logs'
    `previous=true` names a `replica` and goes with neither `follow=true` nor `source=build`.

    The spec says them in words (a rule between the keys of two maps; where a registry is); the service
    refuses each with 400, which positive-data acceptance would otherwise read as a valid body refused.
    Negative cases are left as they are.
    """
    if case.meta is None or case.meta.generation.mode.is_negative:
        return True
    query = case.query if isinstance(case.query, dict) else {}
    if query.get("previous") in (True, "true"):
        if query.get("replica") is None or query.get("follow") in (True, "true") or query.get("source") == "build":
            return False
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("image"), str) and not _image_origin_allowed(body["image"]):
        return False
    if isinstance(body, dict) and isinstance(body.get("registry_auth"), dict) and not _login_known(body):
        return False
    if isinstance(body, dict) and isinstance(body.get("env"), dict) and isinstance(body.get("secrets"), dict):
        return not set(body["env"]) & set(body["secrets"])
    return True


def _login_known(body: dict[str, Any]) -> bool:
    """The third: `registry_auth` names a secret the user has (the fuzz user's is the spec's example) and, given a
    registry, the one the body's image comes from (without an image in the body: none, for the stored image)."""
    login = body["registry_auth"]
    if login.get("password_secret") != REGISTRY_SECRET:
        return False
    if not login.get("registry") or body.get("source"):
        return True
    image = body.get("image")
    return isinstance(image, str) and str(login["registry"]).lower() == image_registry(image)


def _image_origin_allowed(image: str) -> bool:
    """The other rule said in words: an image names no private registry (`0:0/a` is 0.0.0.0) nor a built image."""
    try:
        check_image_origin(image)
    except InvalidReference:
        return False
    return True


# The spec's own string formats: how to make a valid value.
_NAME = st.from_regex(r"[a-z][a-z0-9]{0,20}", fullmatch=True)
schemathesis.openapi.format(
    "http-url",
    st.builds(
        "{}://{}.example.com/{}".format,
        st.sampled_from(["http", "https"]),
        _NAME,
        st.from_regex(r"[A-Za-z0-9/_-]{0,30}", fullmatch=True),
    ),
)
schemathesis.openapi.format("git-url", st.builds("https://{}.example.com/{}/{}.git".format, _NAME, _NAME, _NAME))


@dataclass
class Identity:
    access: str
    refresh: str
    api_key: str
    agent_id: str


# Stand-in credentials. The auth providers' values are cached for the run, but the users are made anew
# for every operation (the database is emptied first). So the providers write these stand-ins, and the
# proxy in front of the app swaps exactly these values for the current identity's real ones. Any other
# value (none, a forged or a mangled one, as the `ignored_auth` check sends) reaches the app unchanged.
ACCESS, REFRESH, API_KEY = "fuzz-access-token", "fuzz-refresh-token", "fuzz-api-key"


class _AppProxy:
    """The WSGI app under test, set by the `fuzz_app` fixture; the schema sends every request here."""

    target: Flask | None = None
    identity: Identity | None = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        assert self.target is not None, "the fuzz_app fixture is not active"
        if self.identity is not None:
            real = {ACCESS: self.identity.access, REFRESH: self.identity.refresh}
            scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
            if scheme == "Bearer" and token in real:
                environ["HTTP_AUTHORIZATION"] = f"Bearer {real[token]}"
            if environ.get("HTTP_X_API_KEY") == API_KEY:
                environ["HTTP_X_API_KEY"] = self.identity.api_key
        return self.target(environ, start_response)


APP = _AppProxy()


class BearerAuth:
    """The fuzz user's access token (the refresh token for the refresh route), on every case of `schema`."""

    def get(self, case: Any, _context: Any) -> str:
        return REFRESH if case.path == "/v1/auth/refresh" else ACCESS

    def set(self, case: Any, token: str, _context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


class ApiKeyAuth:
    """A real key of the fuzz user's agent (`test_operation_with_api_key` only)."""

    def get(self, _case: Any, _context: Any) -> str:
        return API_KEY

    def set(self, case: Any, key: str, _context: Any) -> None:
        case.headers = {**(case.headers or {}), "X-API-Key": key}


@pytest.fixture(scope="module")
def fuzz_app(make_app: Any, app: Flask) -> Iterator[Flask]:
    # No reconciler runs here: its readiness check is given a day, so `/health/ready` answers on the
    # database, the migrations and the (in-memory) engine however long the fuzzing takes.
    fuzz = make_app(
        LOG_FOLLOW_MAX_SECONDS=0.2,
        LOG_FOLLOW_POLL_SECONDS=0.05,
        WEBHOOK_ALLOW_PRIVATE_TARGETS=True,
        RECONCILER_STALE_SECONDS=86400.0,
    )
    fuzz.extensions[RUNNER_KEY] = FakeRunner()
    APP.target = fuzz
    yield fuzz
    APP.target = None


@pytest.fixture(scope="module")
def fuzz_schema() -> BaseSchema:
    """The service's own spec, loaded when the first fuzz test runs (not when pytest collects the module).

    Requests go to APP, the proxy in front of the fuzz app. Stateful runs follow the spec's own links:
    links schemathesis would infer from path parameters alone also lead from a new agent to `undeploy`
    and `deployment-status`, whose 404 for an agent without a live deployment is the contract's; its
    resource-availability check would read that as "the agent is gone".
    """
    # The spec as a default test app serves it (some of it follows the configuration, e.g. limits).
    loaded = schemathesis.openapi.from_wsgi(
        "/openapi.json", create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    )
    loaded.app = APP
    loaded.config.phases.stateful.inference.algorithms = []
    # The one schema-valid request the contract refuses with a 400: scaling a deployment that is not
    # running is `invalid_state` 400 ("Can only scale running deployments"), where restart and stop say 409.
    loaded.config.operations.operations.append(
        OperationConfig.from_dict(
            {
                "include-operation-id": "scaleDeployment",
                "checks": {"positive_data_acceptance": {"expected-statuses": [*POSITIVE_STATUSES, "400"]}},
            }
        )
    )
    # A deleted deployment stays readable, `killed`, with its events, logs and releases (the contract's soft
    # delete: history outlives the containers), so a read of it after its DELETE is not a use after free.
    loaded.config.operations.operations.append(
        OperationConfig.from_dict(
            {
                "include-path-regex": "^/v1/deployments/\\{deployment_id\\}",
                "checks": {"use_after_free": {"enabled": False}},
            }
        )
    )
    loaded.auth(refresh_interval=None)(BearerAuth)
    return loaded


@pytest.fixture(scope="module")
def fuzz_key_schema(fuzz_schema: BaseSchema) -> BaseSchema:
    """The operations that also take `X-API-Key`."""
    return fuzz_schema.include(
        lambda ctx: any("apiKey" in req for req in ctx.operation.definition.raw.get("security", []))
    )


schema = schemathesis.pytest.from_fixture("fuzz_schema")
key_schema = schemathesis.pytest.from_fixture("fuzz_key_schema")
key_schema.auth(refresh_interval=None)(ApiKeyAuth)  # before the schema's BearerAuth: only the key is sent


def _make_identity(fuzz: Flask) -> Identity:
    """An admin (the first user), then the fuzz user: a plain user with an agent, a key for it and a secret."""
    client = fuzz.test_client()
    for email in ("root@example.com", "fuzz@example.com"):
        assert client.post("/v1/auth/register", json={"email": email, "password": PASSWORD}).status_code == 201
    tokens = client.post("/v1/auth/login", json={"email": "fuzz@example.com", "password": PASSWORD}).get_json()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    agent = client.post(
        "/v1/agents", json={"name": "fuzz-agent", "image": "deploy-test/http-agent:latest"}, headers=bearer
    )
    assert agent.status_code == 201, agent.get_json()
    secret = client.post("/v1/secrets", json={"name": REGISTRY_SECRET, "value": "fuzz-registry-token"}, headers=bearer)
    assert secret.status_code == 201, secret.get_json()
    key = client.post(f"/v1/agents/{agent.get_json()['id']}/api-key", json={}, headers=bearer)
    assert key.status_code == 201, key.get_json()
    return Identity(tokens["access_token"], tokens["refresh_token"], key.get_json()["key"], agent.get_json()["id"])


def _start_afresh(fuzz: Flask) -> Identity:
    """An empty database and engine, then a new identity that the proxy resolves the stand-ins to."""
    with fuzz.app_context():
        db.session.rollback()
        for table in reversed(db.metadata.sorted_tables):
            db.session.execute(table.delete())
        db.session.commit()
    fuzz.extensions[RUNNER_KEY] = FakeRunner()
    APP.identity = _make_identity(fuzz)
    return APP.identity


@pytest.fixture()
def identity(fuzz_app: Flask) -> Iterator[Identity]:
    yield _start_afresh(fuzz_app)
    APP.identity = None


@pytest.fixture()
def afresh_per_operation(fuzz_app: Flask) -> Iterator[Callable[[Any], None]]:
    """Call with each case: the first case of each operation starts from an empty database and a new identity.

    The lazily loaded schema runs every operation inside one pytest test, so this keeps what one test per
    operation gave: each operation's examples share one fresh state, and no operation sees another's.
    """
    current: list[str] = []

    def ensure(case: Any) -> None:
        if current != [case.operation.label]:
            current[:] = [case.operation.label]
            _start_afresh(fuzz_app)

    yield ensure
    APP.identity = None


@schema.parametrize()
@FUZZ_SETTINGS
def test_operation(case: Any, afresh_per_operation: Callable[[Any], None]) -> None:
    afresh_per_operation(case)
    case.call_and_validate()


@key_schema.parametrize()
@FUZZ_SETTINGS
def test_operation_with_api_key(case: Any, afresh_per_operation: Callable[[Any], None]) -> None:
    afresh_per_operation(case)
    case.call_and_validate()


def test_stateful(identity: Identity, fuzz_schema: BaseSchema) -> None:
    """Follow the spec's links from what POSTs create to the operations on it, with every check.

    Three times the examples of one operation, ten steps each: at the default that is enough to create
    agents, keys, secrets and webhooks and reach their item routes through the links.
    """

    # Hypothesis derives its derandomized seed from this class's source: `schema` keeps it as it was.
    schema = fuzz_schema

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            """Each scenario starts from the same state, so that Hypothesis can replay and shrink it."""
            assert APP.target is not None
            _start_afresh(APP.target)

    run_state_machine_as_test(
        Workflow,
        settings=settings(
            max_examples=3 * MAX_EXAMPLES,
            stateful_step_count=10,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
