"""Calling a deployed agent: forward a request to one of its ready replicas, and count the call.

Which replica (`replica_choice`): without a session id the ready replicas are taken in turn
(round-robin per deployment, per process); with `X-Session-Id` the session's rendezvous order over
the ready replicas, so that its calls land on the same replica on every worker while it stays ready.
A call that cannot connect to its replica (refused, or no connection within
`INTERACT_CONNECT_TIMEOUT_SECONDS`: the request never reached it, so trying another is safe) goes on
to the next replica in that order, at most once per ready replica; once the request was sent it is
never sent again, whatever happens next.

The forwarded request is a plain `POST` with `Content-Length` to the agent's `invoke_path`, over a
process-wide urllib3 pool. Answers: the agent's status and JSON body; 503 when no replica is ready,
504 when the agent does not answer in `INTERACT_TIMEOUT_SECONDS`, 502 when no replica could be
connected to, the connection failed after the request was sent, or the answer is not JSON or too
large. Every call is recorded as an `Invocation`; a record that fails to commit is logged, and the
agent's answer still comes back.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.exceptions import ConnectTimeoutError, ReadTimeoutError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.response import BaseHTTPResponse

from deploy_service import rawdb, strict_json
from deploy_service.errors import AgentTimeout, AgentUnreachable, NoReadyReplica, ServiceError
from deploy_service.extensions import db
from deploy_service.models import SERVING, ApiKey, Instance, Principal
from deploy_service.services import invocations
from deploy_service.services.agents import agent_for_caller
from deploy_service.services.deployments import live_deployment
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


def _ready(instances: list[Instance], desired: int) -> list[Instance]:
    return [instance for instance in instances if instance.index < desired and instance.ready and instance.port]


@dataclass(frozen=True)
class Target:
    """Where a call goes, read from the database before it is released: the replicas in the order to try."""

    agent_id: str
    deployment_id: str
    replicas: tuple[tuple[int, str], ...]
    """(replica index, URL of its `invoke_path`), the first to try first."""


def call_target(caller: Caller, agent_id: str, *, session_id: str | None) -> Target:
    """The agent's live deployment's ready replicas, in the order this call tries them.

    Raises:
        NotFound: no such agent, not the caller's, or a key of another agent.
        NoReadyReplica: the agent is not running, or none of its replicas is ready.
    """
    agent = agent_for_caller(caller, agent_id)
    deployment = live_deployment(agent.id)
    if deployment is None or deployment.status not in SERVING:
        raise NoReadyReplica("The agent is not running.")
    ready = {instance.index: instance for instance in _ready(list(deployment.instances), deployment.replicas_desired)}
    if not ready:
        raise NoReadyReplica()
    settings = current_settings().interact
    path = deployment.config.get("invoke_path", "/invoke")
    order = call_order(deployment.id, list(ready), session_id=session_id)
    replicas = tuple(
        (index, f"http://{ready[index].host or settings.replica_host}:{ready[index].port}{path}") for index in order
    )
    return Target(agent_id=agent.id, deployment_id=deployment.id, replicas=replicas)


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
        NotFound, NoReadyReplica: see `call_target`.
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
