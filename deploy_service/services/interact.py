"""Calling a deployed agent: forward a request to one of its ready replicas, and count the call.

Replicas are taken in turn (round-robin per deployment, per process). The forwarded request is a
plain `POST` with `Content-Length` to the agent's `invoke_path`, over a process-wide urllib3 pool.
Answers: the agent's status and JSON body; 503 when no replica is ready, 504 when the agent does not
answer in `INTERACT_TIMEOUT_SECONDS`, 502 when its connection fails or its answer is not JSON or too
large. Every call that reached a replica (or timed out there) is recorded as an `Invocation`; a record
that fails to commit is logged, and the agent's answer still comes back.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import urllib3
from sqlalchemy.exc import SQLAlchemyError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from deploy_service import rawdb, strict_json
from deploy_service.errors import AgentTimeout, AgentUnreachable, InvalidState, NoReadyReplica, ServiceError
from deploy_service.extensions import db
from deploy_service.models import SERVING, AgentKind, ApiKey, Instance, Invocation, Principal
from deploy_service.services.agents import agent_for_caller
from deploy_service.services.deployments import live_deployment
from deploy_service.settings import current_settings

Caller = Principal | ApiKey
log = logging.getLogger(__name__)


_pool: urllib3.PoolManager | None = None
_pool_lock = threading.Lock()
_turns: dict[str, Iterator[int]] = {}


def _http() -> urllib3.PoolManager:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = urllib3.PoolManager(num_pools=64, maxsize=16, retries=False)
        return _pool


def _next_turn(deployment_id: str) -> int:
    with _pool_lock:
        turns = _turns.setdefault(deployment_id, itertools.count())
        return next(turns)


def _ready(instances: list[Instance], desired: int) -> list[Instance]:
    return [instance for instance in instances if instance.index < desired and instance.ready and instance.port]


def interact(caller: Caller, agent_id: str, body: bytes) -> tuple[int, Any]:
    """Forward `body` to one ready replica; returns the agent's status and parsed JSON body."""
    agent = agent_for_caller(caller, agent_id)
    if agent.kind == AgentKind.JOB:
        raise InvalidState("A job gets no interact: it runs to completion.", details={"kind": agent.kind})
    deployment = live_deployment(agent.id)
    if deployment is None or deployment.status not in SERVING:
        raise NoReadyReplica("The agent is not running.")
    ready = _ready(list(deployment.instances), deployment.replicas_desired)
    if not ready:
        raise NoReadyReplica()
    replica = ready[_next_turn(deployment.id) % len(ready)]
    settings = current_settings().interact
    host = replica.host or settings.replica_host
    url = f"http://{host}:{replica.port}{deployment.config.get('invoke_path', '/invoke')}"
    limit = settings.max_response_bytes
    agent_id, deployment_id, index = agent.id, deployment.id, replica.index
    # Nothing is written yet: end the read transaction, so no pooled connection (the session's, the
    # login check's) is held, nor a PostgreSQL snapshot kept open, while the agent answers.
    db.session.rollback()
    rawdb.release()
    started = time.perf_counter()
    status = 0
    error: ServiceError | None = None
    try:
        response = _http().request(
            "POST",
            url,
            body=body or b"{}",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            timeout=urllib3.Timeout(connect=settings.connect_timeout, read=settings.timeout),
            preload_content=False,
            redirect=False,
        )
        try:
            raw = response.read(limit + 1)
        finally:
            response.release_conn()
        status = response.status
    except ReadTimeoutError:
        error = AgentTimeout(details={"replica": index})
    except (Urllib3Error, OSError) as exc:
        error = AgentUnreachable(details={"replica": index, "reason": type(exc).__name__})
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
    _record_call(agent_id, deployment_id, index, status if error is None else error.status_code, latency)
    if error is not None:
        raise error
    return status, parsed


def _record_call(agent_id: str, deployment_id: str, replica: int, status: int, latency_ms: float) -> None:
    """Count the call for the deployment's invocation metrics; never raises.

    The agent has answered (or failed) by now, and that is what the caller gets: a call that could not
    be recorded (the database is away, the deployment was just deleted) is logged, not turned into a 500.
    """
    try:
        db.session.add(
            Invocation(
                agent_id=agent_id,
                deployment_id=deployment_id,
                replica=replica,
                status_code=status,
                ok=status < 500,
                latency_ms=round(latency_ms, 3),
            )
        )
        db.session.commit()
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.warning(
            "a call to agent %s (deployment %s, replica %s) answered %s but was not recorded (%s)",
            agent_id,
            deployment_id,
            replica,
            status,
            type(exc).__name__,
        )
