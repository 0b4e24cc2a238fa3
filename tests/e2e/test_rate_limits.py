"""Rate limits on real gunicorn processes: per caller on /v1, tighter per address on login, and with
Redis as storage one limit shared by several workers.

Flask-Limiter keeps one storage per process, so these run the service as real processes; Redis is
Debian's redis-server, started here on a free loopback port (scripts/test.sh installs it).
"""

from __future__ import annotations

from typing import Any

import requests

from tests.helpers import Gunicorn, SlowClient

PASSWORD = "limit-password-1"


def login(base: str, email: str) -> dict[str, str]:
    requests.post(f"{base}/v1/auth/register", json={"email": email, "password": PASSWORD}, timeout=5)
    token = requests.post(f"{base}/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=5).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


def assert_limited(response: Any) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["success"] is False and body["error"] == "rate_limited" and body["message"]
    assert int(response.headers["Retry-After"]) > 0


def test_limits_per_caller_per_address_and_per_key(gunicorn: Gunicorn) -> None:
    base, _ = gunicorn(RATE_LIMIT_PER_MINUTE="5", AUTH_RATE_LIMIT_PER_MINUTE="4")
    alice, bob = login(base, "alice@example.com"), login(base, "bob@example.com")  # 4 auth calls: the limit
    assert_limited(requests.post(f"{base}/v1/auth/login", json={"email": "x@example.com", "password": PASSWORD}))
    statuses = [requests.get(f"{base}/v1/agents", headers=alice, timeout=5).status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert_limited(requests.get(f"{base}/v1/agents", headers=alice, timeout=5))
    assert requests.get(f"{base}/v1/agents", headers=bob, timeout=5).status_code == 200
    assert all(requests.get(f"{base}/health", timeout=5).status_code == 200 for _ in range(20))

    agent = requests.post(f"{base}/v1/agents", headers=bob, json={"name": "a", "image": "busybox"}, timeout=5).json()
    key = requests.post(f"{base}/v1/agents/{agent['id']}/api-key", headers=bob, json={}, timeout=5).json()["key"]
    evaluation = {"prompt": "p", "response": "r"}
    codes = [
        requests.post(f"{base}/v1/evaluations", headers={"X-API-Key": key}, json=evaluation, timeout=5).status_code
        for _ in range(6)
    ]
    assert codes == [201] * 5 + [429]


def test_redis_storage_shares_one_limit_across_workers(gunicorn: Gunicorn, redis_url: str) -> None:
    base, log = gunicorn(
        RATE_LIMIT_PER_MINUTE="10",
        AUTH_RATE_LIMIT_PER_MINUTE="100",
        RATELIMIT_STORAGE_URI=redis_url,
        WEB_CONCURRENCY="2",
        GUNICORN_WORKER_CLASS="sync",  # one request at a time per worker
    )
    headers = login(base, "carol@example.com")

    def call() -> int:
        return requests.get(f"{base}/v1/agents", headers={**headers, "Connection": "close"}, timeout=10).status_code

    # Hold one worker busy (SlowClient returns once a worker accepted it), so the other serves; then
    # swap, so the limit is spent on both.
    hold_first = SlowClient(base, headers)
    statuses = [call() for _ in range(6)]
    hold_second = SlowClient(base, headers)
    statuses.append(hold_first.finish())
    statuses += [call() for _ in range(8)]
    statuses.append(hold_second.finish())
    assert statuses.count(200) == 10 and statuses.count(429) == 6, statuses
    served_by = {line.split()[0] for line in log.read_text().splitlines() if line.endswith(" /v1/agents")}
    assert len(served_by) == 2, "both workers served requests"
