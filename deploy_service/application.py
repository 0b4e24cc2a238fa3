"""The Flask application class: Flask, minus the per-request work an API with no sessions never needs.

`create_app` builds one of these. Two things Flask does on every request cost a JSON API for nothing:

- the cookie session: Flask's default interface reads and verifies the `session` cookie on every
  request and considers writing it on every response, about a quarter of a bare request's time. This
  API authenticates each request by its bearer token or API key, so every request gets the same empty,
  read-only session (`NoSessions`) and nothing is ever written;
- a before-request hook to note when the request began (for the latency histogram): the request
  object notes it as it is made (`TimedRequest.started`);
- `ensure_sync`: Flask asks `inspect.iscoroutinefunction` of every hook, every view and every smorest
  decorator layer on every request (fourteen times for `GET /health`). The answer never changes for a
  function, so it is kept per function.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import NullSession, SessionInterface, SessionMixin


class NoSessions(SessionInterface):
    """No cookie session: `flask.session` is always the same empty session, and a write to it raises
    (as Flask's own null session does without a secret key)."""

    _NULL = NullSession()

    def open_session(self, app: Flask, request: Request) -> SessionMixin:
        return self._NULL

    def is_null_session(self, obj: object) -> bool:
        return True

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        return None


class TimedRequest(Request):
    """Flask's request, noting when it was made (`time.perf_counter`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()
        super().__init__(*args, **kwargs)


class Application(Flask):
    """Flask with `NoSessions`, `TimedRequest` and a kept answer to "is this function a coroutine?"."""

    session_interface = NoSessions()
    request_class = TimedRequest

    SYNC_KEPT_MAX = 4096
    """Functions whose answer is kept; beyond, Flask asks again (a bound that callables made per
    request, if any appeared, could not outgrow)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict[Any, bool] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Flask's `ensure_sync`, asking `iscoroutinefunction` once per function.

        A bound method is kept by its function (a `MethodView` binds a fresh one per request).
        """
        key = getattr(func, "__func__", func)
        sync = self._sync.get(key)
        if sync is None:
            wrapped = super().ensure_sync(func)
            sync = wrapped is func
            if len(self._sync) < self.SYNC_KEPT_MAX:
                self._sync[key] = sync
            return wrapped
        return func if sync else self.async_to_sync(func)
