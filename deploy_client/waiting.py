"""`--wait`: how deployctl knows a deploy or a rollout has ended, from what the contract shows.

- A deploy ends when the deployment is `ready` (every replica passes its health check, or stayed up through
  the start-up grace) or ends otherwise (`failed`, `stopped`, `killed`: failed).
- A restart, rollback or scale-up is a rollout of its own: a start-first update keeps the deployment `ready`
  all along, so its status says nothing. It ends with an event recorded after the request's own event
  (`restart_requested`, `rollback_requested`): `rollout_complete` (every replica of the new generation is
  ready while the deployment stayed `ready`; with a new release, `rollout_completed` too), or a
  `status_changed` back to `ready` (a rollout that went through `running` or `deploying` ends there: the
  service clears its progress deadline on that transition), or `rollout_failed` (and `rolled_back`: the
  previous release serves again), or the deployment `failed` (nothing served). A scale removes or adds
  replicas without a new generation: it ends when the deployment runs exactly the new count, all ready.

`Outcome.ok` False means exit code 3.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deploy_client.client import Client

ENDED = ("failed", "stopped", "killed", "succeeded")
DONE_EVENTS = ("rollout_complete", "rollout_completed")
FAILED_EVENTS = ("rollout_failed",)
Progress = Callable[[dict[str, Any], dict[str, Any] | None], None]


@dataclass(frozen=True)
class Outcome:
    """How a wait ended: `ok`, the deployment as last seen, and a sentence for people."""

    ok: bool
    deployment: dict[str, Any]
    message: str


class WaitTimeout(Exception):
    """The deployment did not finish within the wait's timeout."""


@dataclass
class Waiter:
    """Polls one deployment through `client`, calling `progress(deployment, latest_event)` on each poll."""

    client: Client
    progress: Progress
    sleep: Callable[[float], None] = time.sleep
    interval: float = 1.0
    timeout: float = 600.0

    def _loop(
        self, deployment_id: str, check: Callable[[dict[str, Any], list[dict[str, Any]]], Outcome | None]
    ) -> Outcome:
        deadline = time.monotonic() + self.timeout
        while True:
            deployment = self.client.get_deployment(deployment_id)
            events = self.client.events(deployment_id, limit=100)["items"]
            self.progress(deployment, events[0] if events else None)
            outcome = check(deployment, events)
            if outcome is not None:
                return outcome
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"Deployment {deployment_id} is still {deployment['status']} after {self.timeout:g}s."
                )
            self.sleep(self.interval)

    def deployed(self, deployment_id: str) -> Outcome:
        """Until the deployment is ready (ok) or ended (not ok)."""

        def check(deployment: dict[str, Any], _: list[dict[str, Any]]) -> Outcome | None:
            status = deployment["status"]
            if status == "ready":
                return Outcome(True, deployment, "ready")
            if status in ENDED:
                return Outcome(status == "succeeded", deployment, deployment.get("error") or status)
            return None

        return self._loop(deployment_id, check)

    def rolled_out(self, deployment_id: str, requested: tuple[str, ...]) -> Outcome:
        """Until the rollout the newest event of a `requested` type started has ended."""

        def check(deployment: dict[str, Any], events: list[dict[str, Any]]) -> Outcome | None:
            newer = _since(events, requested)
            if newer is None:
                return None  # the request's event is not there yet (or scrolled out: keep polling the status)
            for event in reversed(newer):  # oldest first
                if event["event_type"] in FAILED_EVENTS:
                    return Outcome(False, deployment, event["message"])
                if event["event_type"] in DONE_EVENTS or _became(event, "ready"):
                    return Outcome(True, deployment, event["message"])
                if _became(event, "failed"):
                    return Outcome(False, deployment, deployment.get("error") or event["message"])
            if deployment["status"] in ENDED:
                return Outcome(False, deployment, deployment.get("error") or deployment["status"])
            return None

        return self._loop(deployment_id, check)

    def scaled(self, deployment_id: str, replicas: int) -> Outcome:
        """A scale: exactly `replicas` replicas running and ready, and (scaling down) each replica past them
        removed (a `replica_removed` event for each index from the new count up to the old one)."""

        def check(deployment: dict[str, Any], events: list[dict[str, Any]]) -> Outcome | None:
            counts = deployment["replicas"]
            if deployment["status"] in ENDED:
                return Outcome(False, deployment, deployment.get("error") or deployment["status"])
            scaled = next((e for e in events if e["event_type"] == "scaled"), None)
            newer = _since(events, ("scaled",)) or []
            if any(event["event_type"] in FAILED_EVENTS for event in newer):
                failed = next(e for e in reversed(newer) if e["event_type"] in FAILED_EVENTS)
                return Outcome(False, deployment, failed["message"])
            previous = int((scaled or {}).get("data", {}).get("from") or replicas)
            removed = {(e.get("data") or {}).get("replica") for e in newer if e["event_type"] == "replica_removed"}
            if not set(range(replicas, previous)) <= removed:
                return None
            running = [i for i in deployment.get("instances", []) if i.get("status") == "running"]
            if (
                deployment["status"] == "ready"
                and counts["desired"] == counts["running"] == counts["ready"] == replicas
                and len(running) == replicas
            ):
                return Outcome(True, deployment, f"{replicas} replica(s) ready")
            return None

        return self._loop(deployment_id, check)


def _became(event: dict[str, Any], status: str) -> bool:
    return event["event_type"] == "status_changed" and (event.get("data") or {}).get("to") == status


def _since(events: list[dict[str, Any]], requested: tuple[str, ...]) -> list[dict[str, Any]] | None:
    """The events (newest first) after the newest one of a `requested` type; None if there is none."""
    for position, event in enumerate(events):
        if event["event_type"] in requested:
            return events[:position]
    return None
