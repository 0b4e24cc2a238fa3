"""The rate limiter, and whom a request counts against: the credential that authenticates it, else its address.

The bucket follows the auth check (`api.common.authorize`): a request with a bearer token is the token's,
whatever `X-API-Key` rides along, so it counts in the token's user's bucket when the token's signature and
expiry hold (a cheap HMAC, cached per token in `tokens`); a request with only a key counts in the key's
bucket when the key is live; a personal access token (`dsp_`, as Bearer or `X-API-Key`) counts in its own
bucket (`token:<id>`, not its user's) when it is live. Keys and personal tokens are verified once per
request (`verified_key`, `verified_token` keep the answer on `flask.g` for the auth check), and a mistyped
or made-up one is refused by its checksum before any lookup. Anything unverifiable (a garbage, unknown,
revoked or expired key or token; a forged, expired or refresh JWT) counts against the address, so an
invented header never buys a fresh bucket.
Login and registration are limited per address, more tightly (see `api/auth.py`).

What a request pays (issue 15): flask-limiter hooks its check, its headers and the reset of its
per-request context onto every request of the app, and builds its context and evaluates its filters
even for a route that no limit applies to. Here those three hooks are the blueprints' under `/v1`
(`LIMITED_PREFIX`), so a health check, the spec or a scrape never enters the limiter. A limited
request makes one storage call: the fixed window's increment (`FixedWindow.hit`), whose count answers
`X-RateLimit-Remaining`; the window's reset time (for `X-RateLimit-Reset` and `Retry-After`) is known
when this process opened the window, and is otherwise asked once per window and kept. flask-limiter's
own fixed window asks the storage twice more for the headers (GET and TTL: two more Redis round trips
per request). Each route is one check per request: the default limit, in the blueprint's
before-request hook; login and registration carry their own limit instead, checked by its decorator.

The limiter lives here rather than in `extensions`, because its key function needs the API key service,
which sits above `extensions`; it is created unbound all the same and bound in `create_app`.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

import flask_limiter
from flask import Flask, Response, current_app, g, request
from flask_limiter._compat import request_context
from flask_limiter.constants import HeaderNames
from flask_limiter.errors import RateLimitExceeded
from flask_limiter.util import get_qualified_name, get_remote_address
from limits import RateLimitItem
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter
from limits.util import WindowStats
from werkzeug.http import http_date, parse_date

from deploy_service.services.api_keys import verified_key
from deploy_service.services.personal_tokens import API_KEY_HEADER, presented_token, verified_token
from deploy_service.settings import current_settings
from deploy_service.tokens import TokenRejected, bearer_token, decode_access_token

LIMITED_PREFIX = "/v1/"
"""Every route under this prefix is rate limited (the OpenAPI spec documents its 429 from this): the
limiter runs for the blueprints mounted under it (`Limiter.limit_blueprints`), and for nothing else."""


def caller_key() -> str:
    """The rate-limit bucket of the current request: `user:<id>`, `token:<id>`, `key:<id>` or `ip:<address>`."""
    token = presented_token(request.headers)
    if token is not None:
        caller = verified_token(token)
        return f"token:{caller.token_id}" if caller is not None else _address()
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        try:
            claims = decode_access_token(bearer_token(authorization), current_settings().auth.tokens)
        except TokenRejected:
            return _address()
        return f"user:{claims['sub']}"
    presented = request.headers.get(API_KEY_HEADER)
    if presented is not None:
        key = verified_key(presented)
        if key is not None:
            return f"key:{key.id}"
    return _address()


def _address() -> str:
    return "ip:" + (get_remote_address() or "unknown")


def default_limit() -> str:
    """Every `/v1` route: `RATE_LIMIT_PER_MINUTE` per caller."""
    return f"{current_settings().rate_limits.per_minute}/minute"


def auth_limit() -> str:
    """Login and registration: `AUTH_RATE_LIMIT_PER_MINUTE` per address."""
    return f"{current_settings().rate_limits.auth_per_minute}/minute"


class _Batch:
    """What this process holds of one key's current window: hits taken from the storage, not yet used."""

    __slots__ = ("count", "reset", "served", "units")

    def __init__(self, reset: float) -> None:
        self.reset = reset
        self.units = 0
        """Hits already counted in the storage, for this process to admit without asking it."""
        self.count = 0
        """The storage's count after this process's last increment (others' hits and our units included)."""
        self.served = 0
        """Hits this process admitted in this window."""


class FixedWindow(FixedWindowRateLimiter):
    """limits' fixed window, asking the storage once for many hits of a busy caller, and answering the
    response headers' window from its own hits.

    **Batches.** The storage call is most of what a limited request costs (with Redis, a network round
    trip and redis-py's work: GET by id lost a third of its throughput to it). A process that has
    already admitted `served` hits of a key in the current window takes the next ones from the storage
    in one increment of `min(served // 8, (limit - count) // 8, batch_max)` (at least the hit's cost)
    and admits them locally until they are used. Every admitted hit is counted in the storage before it
    is admitted, so no caller ever gets more than the limit, across any number of processes. What
    batches change is the other way: hits a process took and did not use before the window ends count
    as used, so a caller spreading requests over several workers may be refused a little early. That is
    bounded: a batch is at most an eighth of what its process already served in the window and an
    eighth of what was left of the limit when it was taken, so near the limit every hit asks the storage
    again. Once the storage's count has reached the limit, the rest of the window is refused without
    asking it (the count only grows until the window ends), so a caller hammering past its limit costs
    no storage call either. A caller's first hits in a window (up to 16: a batch needs `served // 8 >= 2`) ask the
    storage one by one. `batch_max=1` asks the storage on every hit.

    **Headers.** The window's reset time is `now + expiry` when this process's increment opened the
    window, else the one this process saw for the key's window, else (another process opened it) asked
    from the storage once and kept until it passes. `X-RateLimit-Remaining` is the limit less the
    storage's count, less nothing for this process's own unused hits (they are still the caller's). The
    last hit of each thread is what `get_window_stats` answers for the same key: flask-limiter asks it
    right after the hit, in the same request.
    """

    PRUNE_FLOOR = 1024
    """Windows are pruned of passed ones when they outgrow this (or twice the last size)."""
    SHARE = 8
    """A batch is at most 1/SHARE of what this process served, and of what was left of the limit."""

    def __init__(self, storage: Storage, *, batch_max: int = 1) -> None:
        super().__init__(storage)
        self.batch_max = max(1, batch_max)
        self._windows: dict[str, _Batch] = {}
        self._prune_at = self.PRUNE_FLOOR
        self._lock = threading.Lock()
        self._last = threading.local()

    def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        key = item.key_for(*identifiers)
        now = time.time()
        with self._lock:
            batch = self._windows.get(key)
            if batch is not None and batch.reset <= now:
                batch = None
            if batch is not None and batch.units >= cost:  # admitted from this process's batch
                batch.units -= cost
                batch.served += cost
                self._admitted(key, item, batch)
                return True
            if batch is not None and batch.count >= item.amount:  # spent: the storage's count only grows
                self._last.window = (key, WindowStats(batch.reset, 0))
                return False
            take = cost
            if batch is not None and self.batch_max > 1:
                share = min(batch.served, item.amount - batch.count) // self.SHARE
                take = max(cost, min(share, self.batch_max))
        expiry = item.get_expiry()
        count = self.storage.incr(key, expiry, amount=take)
        now = time.time()
        within = min(take, item.amount - (count - take))  # of the units taken, those under the limit
        with self._lock:
            batch = self._windows.get(key)
            if count <= take:  # this increment opened the window
                batch = self._windows[key] = _Batch(now + expiry)
            elif batch is None or batch.reset <= now:
                batch = self._windows[key] = _Batch(self.storage.get_expiry(key))
            batch.count = max(batch.count, count)
            if within < cost:
                self._last.window = (key, WindowStats(batch.reset, 0))
                self._prune(now)
                return False
            batch.units += within - cost
            batch.served += cost
            self._admitted(key, item, batch)
            self._prune(now)
            return True

    def _admitted(self, key: str, item: RateLimitItem, batch: _Batch) -> None:
        remaining = max(0, item.amount - batch.count + batch.units)
        self._last.window = (key, WindowStats(batch.reset, remaining))

    def test(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        self._last.window = None
        return super().test(item, *identifiers, cost=cost)

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        last = getattr(self._last, "window", None)
        key = item.key_for(*identifiers)
        if last is not None and last[0] == key:
            stats: WindowStats = last[1]
            return stats
        return super().get_window_stats(item, *identifiers)

    def clear(self, item: RateLimitItem, *identifiers: str) -> None:
        with self._lock:
            self._windows.pop(item.key_for(*identifiers), None)
        super().clear(item, *identifiers)

    def forget(self) -> None:
        """Drop every window this process knows (the storage was reset)."""
        with self._lock:
            self._windows.clear()
        self._last.window = None

    def _prune(self, now: float) -> None:
        """Forget passed windows when there are many (caller holds the lock)."""
        if len(self._windows) > self._prune_at:
            self._windows = {key: batch for key, batch in self._windows.items() if batch.reset > now}
            self._prune_at = max(self.PRUNE_FLOOR, 2 * len(self._windows))


class Limiter(flask_limiter.Limiter):
    """flask-limiter's Limiter, entered by the requests of the limited blueprints only, with one check
    per request (`_check_default_limit`), counting with `FixedWindow`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._defaults: dict[str, Any] = {}
        """`default_limit()`'s value → flask-limiter's parsed limit for it, made once per value."""
        self._own_limits: dict[str, bool] = {}
        """endpoint → whether its view carries a limit of its own (a decorator, which checks it)."""
        self._own_headers: Any = None
        self._own_release: Any = None
        """flask-limiter's own after-request and teardown hooks, for the routes with limits of their own."""

    def init_app(self, app: Flask) -> None:
        """Bind to `app`; take back the three hooks flask-limiter installed for every request.

        `limit_blueprints` installs them again, on the blueprints the limits apply to.

        Raises:
            RuntimeError: flask-limiter no longer installs the hooks this expects (a changed version).
        """
        super().init_app(app)
        if not self.enabled:
            return
        if self._strategy == "fixed-window":
            self._limiter = FixedWindow(self.storage, batch_max=int(app.config.get("RATE_LIMIT_BATCH_MAX", 1)))
        headers = next((hook for hook in app.after_request_funcs[None] if getattr(hook, "args", None) == (self,)), None)
        app.extensions[_HOOKS_KEY] = (
            _take(app.before_request_funcs[None], self._check_request_limit),
            _take(app.after_request_funcs[None], headers),
            _take(app.teardown_request_funcs[None], self._Limiter__release_context),  # type: ignore[attr-defined]
        )

    def limit_blueprints(self, app: Flask) -> None:
        """Run the limiter's hooks for the blueprints whose routes are under `LIMITED_PREFIX` (once they
        are registered; nothing when the limiter is off).

        Raises:
            RuntimeError: a blueprint has routes both under the prefix and outside it.
        """
        hooks = app.extensions.get(_HOOKS_KEY)
        if hooks is None:
            return
        under: dict[str, set[bool]] = {}
        for rule in app.url_map.iter_rules():
            blueprint = rule.endpoint.rpartition(".")[0]
            if blueprint:
                under.setdefault(blueprint, set()).add(rule.rule.startswith(LIMITED_PREFIX))
        mixed = sorted(name for name, places in under.items() if len(places) > 1)
        if mixed:
            raise RuntimeError(f"blueprints {mixed} have routes both under {LIMITED_PREFIX} and outside it")
        _check, headers, release = hooks
        self._own_headers, self._own_release = headers, release
        for name in (name for name, places in under.items() if places == {True}):
            app.before_request_funcs.setdefault(name, []).insert(0, self._check_default_limit)
            app.after_request_funcs.setdefault(name, []).insert(0, self._inject_headers)
            app.teardown_request_funcs.setdefault(name, []).insert(0, self._release)

    def _check_default_limit(self) -> None:
        """The one check of a request to a limited route: its default limit, one storage call.

        flask-limiter's own check resolves every kind of limit it supports (application, meta, blueprint,
        decorated, exemptions, fallbacks) on every request; a /v1 route has exactly one, the default
        (`RATE_LIMIT_PER_MINUTE` per caller, scoped to the route), so that one is hit directly. A route
        with a limit of its own (login, registration: `limiter.shared_limit`) is left to its decorator,
        which flask-limiter's check would also have done (it applies no default there).

        Raises:
            RateLimitExceeded: over the limit (answered 429 with `Retry-After` by `errors`).
        """
        endpoint = request.endpoint
        if endpoint is None or not self.enabled or self._has_own_limit(endpoint):
            return
        value = default_limit()
        limit = self._defaults.get(value)
        if limit is None:
            limit = self._defaults[value] = next(iter(self.limit_manager.default_limits))
        args = [caller_key(), endpoint]
        if self._key_prefix:
            args.insert(0, self._key_prefix)
        counted = flask_limiter.RequestLimit(self, limit.limit, args, False, limit.shared)
        g._default_rate_limit = counted  # for `_inject_headers`: flask-limiter's own context is not made
        if not self.limiter.hit(limit.limit, *args, cost=limit.deduction_amount):
            counted.breached = True
            self.logger.info("ratelimit %s (%s) exceeded at endpoint: %s", limit.limit, args[-2], endpoint)
            raise RateLimitExceeded(limit)

    def _inject_headers(self, response: Response) -> Response:
        """The rate-limit headers of a limited request's response, as flask-limiter writes them.

        A request checked by `_check_default_limit` carries its one limit on `flask.g`, and its window is
        the one `FixedWindow` kept from the hit, so the headers cost no storage call and none of
        flask-limiter's per-request context (a dict, a dataclass and four lookups of it per request). A
        route with a limit of its own is left to flask-limiter's hook, which its decorator fed.
        """
        counted: flask_limiter.RequestLimit | None = g.pop("_default_rate_limit", None)
        if counted is None:
            headers: Response = self._own_headers(response)
            return headers
        if not (self.enabled and self._headers_enabled and self._header_mapping):
            return response
        mapping = self._header_mapping
        reset_at = counted.reset_at
        headers_out = response.headers
        headers_out.add(mapping[HeaderNames.LIMIT], str(counted.limit.amount))
        headers_out.add(mapping[HeaderNames.REMAINING], str(counted.remaining))
        headers_out.add(mapping[HeaderNames.RESET], str(reset_at))
        existing = headers_out.get("Retry-After")
        if existing is not None:  # a later time than the window's end, given by the view: kept
            retry_after: float | datetime | None = parse_date(existing)
            if retry_after is None:
                retry_after = time.time() + int(existing)
            if isinstance(retry_after, datetime):
                retry_after = time.mktime(retry_after.timetuple())
            reset_at = max(int(retry_after), reset_at)
        headers_out.set(
            mapping[HeaderNames.RETRY_AFTER],
            http_date(reset_at) if self._retry_after == "http-date" else str(int(reset_at - time.time())),
        )
        return response

    def _release(self, error: BaseException | None = None) -> None:
        """Reset flask-limiter's per-request context, only where a decorated limit made one."""
        if hasattr(request_context(), "_limiter_request_context"):
            self._own_release(error)

    def _has_own_limit(self, endpoint: str) -> bool:
        own = self._own_limits.get(endpoint)
        if own is None:
            view = current_app.view_functions.get(endpoint)
            own = view is not None and get_qualified_name(view) in self._marked_for_limiting
            self._own_limits[endpoint] = own
        return own

    def reset(self) -> None:
        super().reset()
        if isinstance(self._limiter, FixedWindow):
            self._limiter.forget()


_HOOKS_KEY = "deploy_service.ratelimit.hooks"


def _take(hooks: list[Any], hook: Any) -> Any:
    if hook is None or hook not in hooks:
        raise RuntimeError("flask-limiter's request hooks are not where deploy_service.ratelimit expects them")
    hooks.remove(hook)
    return hook


limiter = Limiter(key_func=caller_key, default_limits=[default_limit], headers_enabled=True)
