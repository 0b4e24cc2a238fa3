"""The agents page (`GET /v1/agents`) on the prepared-read path, built for throughput.

Dashboards poll it beside the deployments, so, like `deployment_reads`, it skips the ORM and marshmallow:
one Core statement prepared once (`rawdb.PreparedQuery`) reads the page and its total in one round trip,
and `agent_body` turns a row into exactly what `schemas.agent.AgentSchema` would dump
(tests/api/test_agent_reads.py holds the two to the same output; the OpenAPI spec keeps documenting the
schema). `env`, `secrets` and `command` are handed on as the JSON text the database holds; the nested
objects (`source`, `health_check`, `resources`, `registry_auth`) are projected as the nested schemas dump
them: their declared keys only, in the schema's order, each converted as its field would.

Writes, and the other agent routes, go through `services.agents` and the ORM; this module only reads.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from marshmallow import Schema, fields
from sqlalchemy import bindparam, func, select, type_coerce

from deploy_service.errors import Forbidden
from deploy_service.models import Agent, Principal
from deploy_service.rawdb import PreparedQuery
from deploy_service.schemas.agent import AgentSchema
from deploy_service.services.read_columns import DriverNumber, JsonText, JsonValue, body_of, timestamp

_agents = Agent.__table__

AGENT_FIELDS: tuple[tuple[str, Any], ...] = (
    ("id", _agents.c.id),
    ("owner_id", _agents.c.owner_id),
    ("name", _agents.c.name),
    ("description", _agents.c.description),
    ("image", _agents.c.image),
    ("source", JsonValue(_agents.c.source).label("source")),
    ("port", _agents.c.port),
    ("invoke_path", _agents.c.invoke_path),
    ("command", JsonText(_agents.c.command).label("command")),
    ("env", JsonText(_agents.c.env).label("env")),
    ("secrets", JsonText(_agents.c.secrets).label("secrets")),
    ("health_check", JsonValue(_agents.c.health_check).label("health_check")),
    ("resources", JsonValue(_agents.c.resources).label("resources")),
    ("read_only_rootfs", _agents.c.read_only_rootfs),
    ("run_as_user", _agents.c.run_as_user),
    ("registry_auth", JsonValue(_agents.c.registry_auth).label("registry_auth")),
    ("kind", _agents.c.kind),
    ("restart_policy", _agents.c.restart_policy),
    ("timeout_seconds", type_coerce(_agents.c.timeout_seconds, DriverNumber()).label("timeout_seconds")),
    ("status", _agents.c.status),
    ("created_at", timestamp(_agents.c.created_at)),
    ("updated_at", timestamp(_agents.c.updated_at)),
)
"""An agent's body, in `AgentSchema`'s order (tests/api/test_agent_reads.py holds the two alike)."""
_agent_fields = body_of(AGENT_FIELDS)
_TOTAL = len(AGENT_FIELDS)  # the page's total, after the agent's fields

_CONVERSIONS: dict[type[fields.Field[Any]], Callable[[Any], Any]] = {
    fields.String: str,
    fields.Float: float,
    fields.Integer: int,
    fields.Boolean: bool,
}


def _projection(schema: Schema) -> Callable[[dict[str, Any] | None], dict[str, Any] | None]:
    """`value -> what `schema` dumps of it`: its declared keys that `value` has, in the schema's order, each
    converted as its field serializes (None stays None). Only flat schemas of the fields above."""
    steps = []
    for name, field in schema.fields.items():
        convert = next((step for kind, step in _CONVERSIONS.items() if type(field) is kind), None)
        if convert is None:
            raise TypeError(f"{type(schema).__name__}.{name}: no projection for {type(field).__name__}")
        steps.append((name, convert))

    def project(value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        return {name: None if value[name] is None else convert(value[name]) for name, convert in steps if name in value}

    return project


_NESTED: tuple[tuple[str, Callable[[dict[str, Any] | None], dict[str, Any] | None]], ...] = tuple(
    (name, _projection(field.schema))
    for name, field in AgentSchema().fields.items()
    if isinstance(field, fields.Nested)
)


def agent_body(row: Any) -> dict[str, Any]:
    """The contract's agent body from a row holding `AGENT_FIELDS` in order (and maybe more after them)."""
    body = _agent_fields(row)
    for name, project in _NESTED:
        body[name] = project(body[name])
    timeout = body["timeout_seconds"]
    if timeout is not None:
        body["timeout_seconds"] = float(timeout)
    return body


@cache
def _list_statements(by_owner: bool, by_status: bool, by_name: bool) -> tuple[PreparedQuery, PreparedQuery]:
    """The (count, page) statements for one combination of filters, built once per process. The page carries
    the total as an uncorrelated scalar subquery (run once), so one query answers both; the count alone is
    needed only for a page past the end. Newest first, in the order of the `(owner_id, created_at, id)`
    and `(created_at, id)` indexes."""
    conditions = []
    if by_owner:
        conditions.append(_agents.c.owner_id == bindparam("owner_id"))
    if by_status:
        conditions.append(_agents.c.status == bindparam("status"))
    if by_name:
        conditions.append(func.lower(_agents.c.name).like(bindparam("name"), escape="\\"))
    count = select(func.count()).select_from(_agents).where(*conditions)
    page = (
        select(*(column for _, column in AGENT_FIELDS), count.correlate(None).scalar_subquery().label("total"))
        .where(*conditions)
        .order_by(_agents.c.created_at.desc(), _agents.c.id.desc())
        .limit(bindparam("limit"))
        .offset(bindparam("skip"))
    )
    return PreparedQuery(count), PreparedQuery(page)


def list_agent_bodies(
    actor: Principal,
    *,
    skip: int,
    limit: int,
    status: str | None = None,
    q: str | None = None,
    owner_id: str | None = None,
) -> dict[str, Any]:
    """The caller's agents (an admin's: everyone's, or `owner_id`'s), newest first, filtered by status and a
    case-insensitive match of `q` on the name, as the contract's page `{items, total, skip, limit}`.

    Raises:
        Forbidden: a non-admin filtered by another user's id (`owner_id` is an admin's filter).
    """
    if owner_id and not actor.is_admin and owner_id != actor.id:
        raise Forbidden("Only an admin may list other users' agents.")
    owner = owner_id or (None if actor.is_admin else actor.id)
    name = None
    if q:
        name = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    count, page = _list_statements(owner is not None, bool(status), name is not None)
    params: dict[str, Any] = {"owner_id": owner, "status": status, "name": name}
    rows = page.rows({**params, "skip": skip, "limit": limit})
    if rows:
        total = rows[0][_TOTAL]
    else:
        total = count.rows(params)[0][0] if skip else 0
    return {"items": [agent_body(row) for row in rows], "total": total, "skip": skip, "limit": limit}
