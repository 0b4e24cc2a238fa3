"""Calling a deployed agent: forward a request to one of its ready replicas, and count the call.

Which replica (`replica_choice`): without a session id the ready replicas are taken in turn
(round-robin per deployment, per process); with `X-Session-Id` the session's rendezvous order over
the ready replicas, so that its calls land on the same replica on every worker while it stays ready.
A call that cannot connect to its replica (refused, or no connection within
`INTERACT_CONNECT_TIMEOUT_SECONDS`: the request never reached it, so trying another is safe) goes on
to the next replica in that order, at most once per ready replica; once the request was sent it is
never sent again, whatever happens next.

Where the replicas are is one prepared read on the request's raw connection (`_TARGET`: the agent,
its live deployment and the instances in one round trip, as the deployment reads do), not three ORM
queries: it is on the path of every call, before the agent's first byte (docs/performance.md).

The forwarded request is a plain `POST` with `Content-Length` to the agent's `invoke_path`, over a
process-wide urllib3 pool. Answers: the agent's status and JSON body; 503 when no replica is ready,
504 when the agent does not answer in `INTERACT_TIMEOUT_SECONDS`, 502 when no replica could be
connected to, the connection failed after the request was sent, or the answer is not JSON or too
large. Every call is recorded as an `Invocation`; a record that fails to commit is logged, and the
agent's answer still comes back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import urllib3
from sqlalchemy import and_, bindparam, select
from urllib3.exceptions import ConnectTimeoutError, ReadTimeoutError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.response import BaseHTTPResponse

from deploy_service import rawdb, strict_json
from deploy_service.errors import (
    AgentTimeout,
    AgentUnreachable,
    InvalidState,
    NoReadyReplica,
    NotFound,
    ServiceError,
)
from deploy_service.extensions import db
from deploy_service.models import (
    SERVING,
    Agent,
    AgentKind,
    ApiKey,
    Deployment,
    DeploymentStatus,
    Instance,
    Principal,
    is_ready,
)
from deploy_service.rawdb import PreparedQuery
from deploy_service.services import invocations
from deploy_service.services.invocations import CallRecord
from deploy_service.services.replica_choice import call_order
from deploy_service.settings import InteractSettings, current_settings

Caller = Principal | ApiKey
log = logging.getLogger(__name__)


_pool: urllib3.PoolManager | None = None
_pool_lock = threading.Lock()


def _http() -> urllib3.PoolManager:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = urllib3.PoolManager(num_pools=64, maxsize=16, retries=False)
        return _pool


@dataclass(frozen=True)
class Target:
    """Where a call goes, read from the database before it is released: the replicas in the order to try."""

    agent_id: str
    deployment_id: str
    replicas: tuple[tuple[int, str], ...]
    """(replica index, URL of its `invoke_path`), the first to try first."""


_agents, _deployments, _instances = Agent.__table__, Deployment.__table__, Instance.__table__
# The agent, its live deployment and that deployment's instances in one round trip (one row per instance;
# NULLs for a missing deployment or instance): the hot path of every call, kept off the ORM session.
_TARGET = PreparedQuery(
    select(
        _agents.c.owner_id,
        _deployments.c.id.label("deployment_id"),
        _deployments.c.status.label("deployment_status"),
        _deployments.c.replicas_desired,
        _deployments.c.config,
        _instances.c.index,
        _instances.c.host,
        _instances.c.port,
        _instances.c.status.label("instance_status"),
        _instances.c.container_id,
        _instances.c.healthy,
        _agents.c.kind,
    )
    .select_from(
        _agents.outerjoin(
            _deployments,
            and_(_deployments.c.agent_id == _agents.c.id, _deployments.c.status != bindparam("killed")),
        ).outerjoin(_instances, _instances.c.deployment_id == _deployments.c.id)
    )
    .where(_agents.c.id == bindparam("agent_id"))
    .order_by(_deployments.c.created_at.desc(), _instances.c.index)
)


def _visible(caller: Caller, agent_id: str, owner_id: str) -> bool:
    """Whether `caller` may call the agent `agent_id` owned by `owner_id` (as `agent_for_caller` decides)."""
    if isinstance(caller, ApiKey):
        return caller.agent_id == agent_id
    return bool(caller.is_admin) or caller.id == owner_id


def call_target(caller: Caller, agent_id: str, *, session_id: str | None) -> Target:
    """The agent's live deployment's ready replicas, in the order this call tries them.

    Raises:
        NotFound: no such agent, not the caller's, or a key of another agent.
        NoReadyReplica: the agent is not running, or none of its replicas is ready.
        InvalidState: the agent is a job, which gets no calls.
    """
    rows = _TARGET.rows({"agent_id": agent_id, "killed": DeploymentStatus.KILLED.value})
    if not rows or not _visible(caller, agent_id, rows[0][0]):
        raise NotFound("Agent not found.")
    if rows[0][-1] == AgentKind.JOB:
        raise InvalidState("A job gets no interact: it runs to completion.", details={"kind": rows[0][-1]})
    _, deployment_id, status, desired, config, *_ = rows[0]
    if deployment_id is None or status not in SERVING:
        raise NoReadyReplica("The agent is not running.")
    ready = {
        index: (host, port)
        for _, of, _, _, _, index, host, port, state, container_id, healthy, _ in rows
        if of == deployment_id
        and index is not None
        and index < desired
        and port
        and is_ready(state, container_id, healthy)
    }
    if not ready:
        raise NoReadyReplica()
    if isinstance(config, str | bytes):
        config = json.loads(config)
    settings = current_settings().interact
    path = (config or {}).get("invoke_path", "/invoke")
    order = call_order(deployment_id, list(ready), session_id=session_id)
    replicas = tuple(
        (index, f"http://{ready[index][0] or settings.replica_host}:{ready[index][1]}{path}") for index in order
    )
    return Target(agent_id=agent_id, deployment_id=deployment_id, replicas=replicas)


def send(
    target: Target, body: bytes, *, accept: str, settings: InteractSettings
) -> tuple[int, BaseHTTPResponse | ServiceError]:
    """Send the call to the first replica that takes the connection; the replica and its response's head.

    A replica that refuses the connection or does not accept it within the connect timeout is passed
    over for the next; any failure once the request was sent ends the call. The response's body is
    left unread (`preload_content=False`): the caller reads it and releases the connection.

    Returns:
        (the replica index, the response) or (the last replica tried, the error the call ends with:
        `AgentTimeout` when the agent did not start answering in time, `AgentUnreachable` otherwise).
    """
    timeout = urllib3.Timeout(connect=settings.connect_timeout, read=settings.timeout)
    headers = {"Content-Type": "application/json", "Accept": accept}
    passed_over: list[dict[str, Any]] = []
    for index, url in target.replicas:
        try:
            response = _http().request(
                "POST", url, body=body or b"{}", headers=headers, timeout=timeout, preload_content=False, redirect=False
            )
        except ConnectTimeoutError as exc:  # NewConnectionError (refused, unreachable) is one too
            passed_over.append({"replica": index, "reason": type(exc).__name__})
            continue
        except ReadTimeoutError:
            return index, AgentTimeout(details={"replica": index})
        except (Urllib3Error, OSError) as exc:
            return index, AgentUnreachable(details={"replica": index, "reason": type(exc).__name__})
        if passed_over:
            log.info("agent %s: replica %s took the call after %s", target.agent_id, index, passed_over)
        return index, response
    return passed_over[-1]["replica"], AgentUnreachable(
        "No ready replica of the agent took the connection.", details={"tried": passed_over}
    )


def release_database() -> None:
    """End the read transaction before the agent is called: no pooled connection (the session's, the login
    check's) is held, nor a PostgreSQL snapshot kept open, while the agent answers. Nothing is written yet."""
    db.session.rollback()
    rawdb.release()


def interact(caller: Caller, agent_id: str, body: bytes, *, session_id: str | None = None) -> tuple[int, Any]:
    """Forward `body` to one ready replica; returns the agent's status and parsed JSON body.

    Raises:
        NotFound, NoReadyReplica, InvalidState: see `call_target`.
        AgentTimeout, AgentUnreachable: see the module docstring.
    """
    target = call_target(caller, agent_id, session_id=session_id)
    settings = current_settings().interact
    release_database()
    started = time.perf_counter()
    index, sent = send(target, body, accept="application/json", settings=settings)
    return json_answer(target, index, sent, started=started, body=body, session_id=session_id, streamed=False)


def json_answer(
    target: Target,
    index: int,
    sent: BaseHTTPResponse | ServiceError,
    *,
    started: float,
    body: bytes,
    session_id: str | None,
    streamed: bool,
) -> tuple[int, Any]:
    """Read and parse the agent's JSON answer to a call sent at `started`, record the call, return the answer.

    Raises:
        AgentTimeout, AgentUnreachable: `sent` is one, or the answer is cut, not JSON or too large.
    """
    settings = current_settings().interact
    limit = settings.max_response_bytes
    status = 0
    raw = b""
    error: ServiceError | None = sent if isinstance(sent, ServiceError) else None
    first_byte: float | None = None
    if isinstance(sent, BaseHTTPResponse):
        status = sent.status
        first_byte = (time.perf_counter() - started) * 1000
        try:
            raw = sent.read(limit + 1)
        except ReadTimeoutError:
            error = AgentTimeout(details={"replica": index})
        except (Urllib3Error, OSError) as exc:
            error = AgentUnreachable(details={"replica": index, "reason": type(exc).__name__})
        finally:
            sent.release_conn()
    latency = (time.perf_counter() - started) * 1000
    if error is None and len(raw) > limit:
        error = AgentUnreachable(f"The agent's answer is larger than {limit} bytes.", details={"replica": index})
    parsed: Any = None
    if error is None and raw.strip():
        try:
            parsed = strict_json.loads(raw, max_depth=current_settings().http.max_json_depth)
        except strict_json.InvalidJson as exc:
            error = AgentUnreachable(
                f"The agent's answer is not JSON the service passes on: {exc}",
                details={"replica": index, "status": status},
            )
    invocations.record(
        CallRecord(
            agent_id=target.agent_id,
            deployment_id=target.deployment_id,
            replica=index,
            status_code=status if error is None else error.status_code,
            latency_ms=latency,
            session_id=session_id,
            streamed=streamed,
            first_byte_ms=first_byte,
            request_bytes=len(body),
            response_bytes=None if isinstance(sent, ServiceError) else len(raw),
            error=None if error is None else f"{error.kind}: {error.message}",
        )
    )
    if error is not None:
        raise error
    return status, parsed
