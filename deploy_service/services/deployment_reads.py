"""The deployment read path: `GET /v1/deployments/<id>`, `GET /v1/deployments` and a deployment's events
(`GET /v1/deployments/<id>/events`), built for throughput.

These are the routes dashboards poll, so they skip the ORM and marshmallow: Core statements prepared
once (`rawdb.PreparedQuery`: compiled once per dialect, run on the request's DBAPI connection) read
plain rows, and `deployment_body` turns them into exactly what `schemas.deployment.DeploymentSchema`
would dump (tests/api/test_deployment_reads.py holds the two to the same output, and the OpenAPI spec
keeps documenting that schema); an events page is what `EventPageSchema` would dump, in one round trip.
Measured in bench/api.py: see docs/performance.md.

Writes still go through `services.deployments` and the ORM; this module only reads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import Text, bindparam, cast, func, select, true, type_coerce
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from deploy_service.errors import NotFound
from deploy_service.models import (
    WITHOUT_REPLICAS,
    Deployment,
    DeploymentEvent,
    Instance,
    Principal,
    Release,
    is_ready,
    is_running,
)
from deploy_service.rawdb import PreparedQuery
from deploy_service.services.read_columns import JsonText, RawJSON, body_of, timestamp

_deployments = Deployment.__table__
_instances = Instance.__table__
_events = DeploymentEvent.__table__
_releases = Release.__table__


class _PublicConfig(FunctionElement[Any]):
    """A deployment's `config` without its internal keys (`overrides`, `secret_versions`), as JSON text, computed
    by the database."""

    type = RawJSON()
    inherit_cache = True


@compiles(_PublicConfig, "sqlite")
def _public_config_sqlite(element: _PublicConfig, compiler: Any, **kw: Any) -> str:
    return "json_remove(deployments.config, '$.overrides', '$.secret_versions')"


@compiles(_PublicConfig, "postgresql")
def _public_config_postgresql(element: _PublicConfig, compiler: Any, **kw: Any) -> str:
    return "CAST((deployments.config - 'overrides' - 'secret_versions') AS TEXT)"


# The current release's `{git_url, branch, commit}` (NULL for an image agent): one row by the unique
# (deployment_id, number) index, looked up per deployment of the page.
_CURRENT_SOURCE = JsonText(
    select(_releases.c.source)
    .where(_releases.c.deployment_id == _deployments.c.id, _releases.c.number == _deployments.c.revision)
    .correlate(_deployments)
    .scalar_subquery()
)


# The one declaration of what the bodies hold: (body key, column), in the body's order. The SELECTs are
# built from these lists, so a row holds these values in this order, and `body_of` reads each key's
# value at its position; tests/api/test_deployment_reads.py holds the keys to `DeploymentSchema`'s fields.
DEPLOYMENT_FIELDS: tuple[tuple[str, Any], ...] = (
    ("id", _deployments.c.id),
    ("agent_id", _deployments.c.agent_id),
    ("owner_id", _deployments.c.owner_id),
    ("status", _deployments.c.status),
    ("desired_state", _deployments.c.desired_state),
    ("replicas", _deployments.c.replicas_desired),  # the desired count: `deployment_body` adds running and ready
    ("image", _deployments.c.image),
    ("revision", _deployments.c.revision),
    ("generation", _deployments.c.generation),
    ("config", _PublicConfig().label("config")),
    ("source", _CURRENT_SOURCE.label("source")),
    ("error", _deployments.c.error),
    ("created_at", timestamp(_deployments.c.created_at)),
    ("updated_at", timestamp(_deployments.c.updated_at)),
    ("started_at", timestamp(_deployments.c.started_at)),
    ("ready_at", timestamp(_deployments.c.ready_at)),
    ("ended_at", timestamp(_deployments.c.ended_at)),
)
"""Then `instances`, built from `INSTANCE_FIELDS`."""
INSTANCE_FIELDS: tuple[tuple[str, Any], ...] = (
    ("id", _instances.c.id),
    ("index", _instances.c.index),
    ("container_id", _instances.c.container_id),
    ("status", _instances.c.status),
    ("host", _instances.c.host),
    ("port", _instances.c.port),
    ("restarts", _instances.c.restarts),
    ("started_at", timestamp(_instances.c.started_at)),
    ("exit_code", _instances.c.exit_code),
    ("healthy", _instances.c.healthy),
)


_DEPLOYMENT_KEYS = tuple(key for key, _ in DEPLOYMENT_FIELDS)
_deployment_fields = body_of(DEPLOYMENT_FIELDS)
_instance_fields = body_of(INSTANCE_FIELDS)
_DEPLOYMENT_COLUMNS = [column for _, column in DEPLOYMENT_FIELDS]
# An instance row is its fields, then the deployment it belongs to (how a page's instances are grouped).
_INSTANCE_COLUMNS = [*(column for _, column in INSTANCE_FIELDS), _instances.c.deployment_id]
_OF_DEPLOYMENT = len(INSTANCE_FIELDS)
_DEPLOYMENT_WIDTH = len(DEPLOYMENT_FIELDS)
_TOTAL = _DEPLOYMENT_WIDTH  # the page's total, after the deployment's fields
_ID, _OWNER = _DEPLOYMENT_KEYS.index("id"), _DEPLOYMENT_KEYS.index("owner_id")

# One deployment and its instances in one round trip: a row per instance (or one with NULLs for none).
_BY_ID = PreparedQuery(
    select(*_DEPLOYMENT_COLUMNS, *_INSTANCE_COLUMNS)
    .select_from(_deployments.outerjoin(_instances, _instances.c.deployment_id == _deployments.c.id))
    .where(_deployments.c.id == bindparam("deployment_id"))
    .order_by(_instances.c.index)
)


def deployment_body(row: Sequence[Any], instances: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """The contract's deployment body from a deployment row and its instance rows (ordered by index).

    A row holds `DEPLOYMENT_FIELDS` (`INSTANCE_FIELDS` for an instance) in order, and maybe more after
    them. The same rules as `DeploymentSchema`: a stopped or killed deployment shows no instances and
    wants no replicas; slots at or above the desired count (being scaled away) are not shown.
    Timestamps come as ISO text (SQLite) or UTC `datetime`s, and `config` as a JSON fragment the database
    built; `api.common.json_response` (orjson) writes all of them as the schema would.
    """
    body = _deployment_fields(row)
    wanted = body["replicas"]
    live = body["status"] not in WITHOUT_REPLICAS
    shown = []
    running = ready = 0
    for instance_row in instances:
        instance = _instance_fields(instance_row)
        if instance["index"] >= wanted:
            continue
        state, container_id = instance["status"], instance["container_id"]
        if is_running(state, container_id):
            running += 1
            ready += is_ready(state, container_id, instance["healthy"])
        if live:
            shown.append(instance)
    body["replicas"] = {"desired": wanted if live else 0, "running": running, "ready": ready}
    if body["config"] is None:
        body["config"] = {}
    body["instances"] = shown
    return body


@cache
def _instances_of(count: int) -> PreparedQuery:
    """The instances of `count` deployments (ids bound as `d0`, `d1`, ...), built once per page size."""
    ids: list[Any] = [bindparam(f"d{position}") for position in range(count)]
    return PreparedQuery(
        select(*_INSTANCE_COLUMNS)
        .where(_instances.c.deployment_id.in_(ids))
        .order_by(_instances.c.deployment_id, _instances.c.index)
    )


def _instances_by_deployment(deployment_ids: Sequence[str]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = defaultdict(list)
    if deployment_ids:
        params = {f"d{position}": deployment_id for position, deployment_id in enumerate(deployment_ids)}
        for instance in _instances_of(len(deployment_ids)).rows(params):
            grouped[instance[_OF_DEPLOYMENT]].append(instance)
    return grouped


def get_deployment_body(actor: Principal, deployment_id: str) -> dict[str, Any]:
    """The body of a deployment the caller may see.

    Raises:
        NotFound: missing or someone else's (the same answer).
    """
    rows = _BY_ID.rows({"deployment_id": deployment_id})
    if not rows or (not actor.is_admin and rows[0][_OWNER] != actor.id):
        raise NotFound("Deployment not found.")
    width = _DEPLOYMENT_WIDTH
    instances = [row[width:] for row in rows if row[width] is not None]  # an instance's id: NULL for none
    return deployment_body(rows[0], instances)


@cache
def _list_statements(scoped: bool, by_agent: bool, by_status: bool) -> tuple[PreparedQuery, PreparedQuery]:
    """The (count, page) statements for one combination of filters, built once per process.

    The page carries the total as an uncorrelated scalar subquery, which the database runs once, so one
    query answers both; the count alone is needed only for a page past the end. (A window count,
    `count() OVER ()`, would make the database build every matching row, with its computed columns,
    before sorting and cutting the page: 250 µs against 160 µs for a page of 50 on SQLite.)
    """
    conditions = []
    if scoped:
        conditions.append(_deployments.c.owner_id == bindparam("owner_id"))
    if by_agent:
        conditions.append(_deployments.c.agent_id == bindparam("agent_id"))
    if by_status:
        conditions.append(_deployments.c.status == bindparam("status"))
    count = select(func.count()).select_from(_deployments).where(*conditions)
    page = (
        select(*_DEPLOYMENT_COLUMNS, count.correlate(None).scalar_subquery().label("total"))
        .where(*conditions)
        .order_by(_deployments.c.created_at.desc(), _deployments.c.id.desc())
        .limit(bindparam("limit"))
        .offset(bindparam("skip"))
    )
    return PreparedQuery(count), PreparedQuery(page)


def list_deployment_bodies(
    actor: Principal, *, skip: int, limit: int, agent_id: str | None = None, status: str | None = None
) -> dict[str, Any]:
    """The caller's deployments, newest first, as the contract's list body `{items, total, skip, limit}`."""
    count, page = _list_statements(not actor.is_admin, bool(agent_id), bool(status))
    params: dict[str, Any] = {"owner_id": actor.id, "agent_id": agent_id, "status": status}
    rows = page.rows({**params, "skip": skip, "limit": limit})
    if rows:
        total = rows[0][_TOTAL]
    else:
        total = count.rows(params)[0][0] if skip else 0
    instances = _instances_by_deployment([row[_ID] for row in rows])
    return {
        "items": [deployment_body(row, instances.get(row[_ID], [])) for row in rows],
        "total": total,
        "skip": skip,
        "limit": limit,
    }


EVENT_FIELDS: tuple[tuple[str, Any], ...] = (
    ("id", _events.c.id),
    ("event_type", _events.c.event_type),
    ("status", _events.c.status),
    ("message", _events.c.message),
    ("data", type_coerce(cast(_events.c.data, Text), RawJSON()).label("data")),
    ("created_at", timestamp(_events.c.created_at)),
)
"""An event's body, in `EventSchema`'s order (tests/api/test_deployment_reads.py holds the two alike)."""
_event_fields = body_of(EVENT_FIELDS)
_HEADER = (_deployments.c.id, _deployments.c.owner_id, _deployments.c.status)
_EVENT_AT = len(_HEADER) + 1  # after the header and the total


@cache
def _events_statement(by_type: bool, by_status: bool) -> PreparedQuery:
    """The deployment's header (id, owner, status, its events counter; and with a filter the count of the
    matches) beside each event of the page, newest first, in one round trip: a row per event, or one
    with NULLs when the page is empty (the deployment's row is what the 404 and the header need)."""
    conditions = [_events.c.deployment_id == bindparam("deployment_id")]
    if by_type:
        conditions.append(_events.c.event_type == bindparam("event_type"))
    if by_status:
        conditions.append(_events.c.status == bindparam("status"))
    order = (_events.c.created_at.desc(), _events.c.id.desc())
    page = (
        select(*(column for _, column in EVENT_FIELDS), _events.c.created_at.label("at"))
        .where(*conditions)
        .order_by(*order)
        .limit(bindparam("limit"))
        .offset(bindparam("skip"))
        .subquery("page")
    )
    if by_type or by_status:
        total: Any = select(func.count()).select_from(_events).where(*conditions).scalar_subquery()
    else:
        total = _deployments.c.events_total
    return PreparedQuery(
        select(*_HEADER, total.label("total"), *(page.c[key] for key, _ in EVENT_FIELDS))
        .select_from(_deployments.outerjoin(page, true()))
        .where(_deployments.c.id == bindparam("deployment_id"))
        .order_by(page.c.at.desc(), page.c.id.desc())
    )


def list_event_bodies(
    actor: Principal,
    deployment_id: str,
    *,
    skip: int,
    limit: int,
    event_type: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """A deployment's events, newest first, as the contract's page `{deployment_id, deployment_status,
    items, total, skip, limit}`.

    Unfiltered, `total` is the deployment's `events_total` counter, so a page costs the same at a million
    events as at a thousand; a filter counts the matching rows (an index on deployment, type and time).

    Raises:
        NotFound: missing or someone else's (the same answer).
    """
    statement = _events_statement(bool(event_type), bool(status))
    params = {"deployment_id": deployment_id, "event_type": event_type, "status": status, "skip": skip, "limit": limit}
    rows = statement.rows(params)
    if not rows or (not actor.is_admin and rows[0][1] != actor.id):
        raise NotFound("Deployment not found.")
    first = rows[0]
    return {
        "deployment_id": first[0],
        "deployment_status": first[2],
        "items": [_event_fields(row[_EVENT_AT:]) for row in rows if row[_EVENT_AT] is not None],
        "total": first[3],
        "skip": skip,
        "limit": limit,
    }
