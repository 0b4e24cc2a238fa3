"""HTTP health checks of replicas: a GET that answers 2xx in time is healthy."""

from __future__ import annotations

import http.client


def http_check(host: str, port: int, path: str, *, timeout: float) -> tuple[bool, str]:
    """GET `http://host:port/path`; returns (healthy, short reason). Never raises."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"User-Agent": "deploy-service-healthcheck", "Connection": "close"})
        response = connection.getresponse()
        response.read(64 * 1024)
        healthy = 200 <= response.status < 300
        return healthy, f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as exc:
        return False, type(exc).__name__
    finally:
        connection.close()
