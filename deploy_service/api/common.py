"""What every blueprint shares: the argument parser, the auth decorators and the current user.

Validation errors are 400 with the contract's body (webargs' default is 422), and authentication is
checked before arguments are parsed, so an anonymous request is a 401 whatever its body.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, cast

import flask_smorest
import orjson
from flask import Response, current_app, g, request
from flask_jwt_extended import get_jwt, verify_jwt_in_request
from webargs.core import missing
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.routing import BaseConverter

from deploy_service import strict_json
from deploy_service.errors import Forbidden, NotFound, PayloadTooLarge, Unauthorized, ValidationFailed
from deploy_service.models import ApiKey, Principal
from deploy_service.permissions import Action, Permission, permission_for, role_actions, token_actions
from deploy_service.ratelimit import API_KEY_HEADER
from deploy_service.schemas.common import ErrorSchema
from deploy_service.services.api_keys import verified_key
from deploy_service.services.auth import authenticate_access
from deploy_service.services.personal_tokens import presented_token, verified_token
from deploy_service.settings import current_settings

F = TypeVar("F", bound=Callable[..., Any])

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def refuse_oversized_streamed_body() -> None:
    """A body without Content-Length (chunked, as gunicorn passes it) over MAX_CONTENT_LENGTH is a 413.

    Werkzeug refuses a too-large declared Content-Length at once, but silently truncates a streamed
    body at the limit, which would turn an oversized request into a 400 (or, with a valid prefix, into a
    request that is quietly cut short). Reading one byte past the limit tells the two apart.
    """
    if request.method not in BODY_METHODS or request.content_length is not None:
        return
    if not request.environ.get("wsgi.input_terminated"):
        return  # no Content-Length and an unterminated stream: Werkzeug reads no body at all
    limit = current_settings().http.max_request_bytes
    request.max_content_length = limit + 1
    if len(request.get_data(cache=True)) > limit:
        raise PayloadTooLarge()


def refuse_nul_in_path(_endpoint: str | None, values: dict[str, Any] | None) -> None:
    """A path segment with a NUL character (`/v1/agents/%00`) names nothing: 404, before any lookup.

    PostgreSQL refuses NUL in text, so the lookup itself would fail (a 500) rather than find nothing.
    """
    if values and any(isinstance(value, str) and "\x00" in value for value in values.values()):
        raise NotFound()


def json_body(raw: bytes) -> Any:
    """A request body parsed by `strict_json` with `MAX_JSON_DEPTH`; what it refuses is a 400 saying why.

    Raises:
        ValidationFailed: not JSON, nested too deeply, or a number the service cannot take.
    """
    try:
        return strict_json.loads(raw, max_depth=current_settings().http.max_json_depth)
    except strict_json.InvalidJson as exc:
        raise ValidationFailed(str(exc), details={"json": [str(exc)]}) from exc


class ResourceIdConverter(BaseConverter):
    """A resource id in a path (`<id:agent_id>`): any segment except the literal sub-paths beside it.

    `/v1/deployments/metrics` and `/v1/agents/deploy` are routes of their own; without this, the id rule
    also matched them, so `DELETE /v1/deployments/metrics` answered 404 instead of 405 and `Allow` listed
    methods those URLs do not have. Ids are UUID4 strings, so no real id is ever one of these words.
    """

    RESERVED = ("alerts", "deploy", "metrics")
    regex = rf"(?!(?:{'|'.join(RESERVED)})(?:/|$))[^/]+"


def links(status: int, parameter: str, source: str, *targets: tuple[str, str, str]) -> dict[str, Any]:
    """`blp.doc(**links(...))`: OpenAPI links from a response to the operations on the resource it made.

    Each target is `(link name, method, path)`; the path parameter `parameter` takes the response body's
    `source` field (e.g. `agent_id` ← `$response.body#/id`), which is what stateful fuzzing follows.
    """
    documented = {
        name: {
            "operationRef": "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method,
            "parameters": {parameter: f"$response.body#/{source}"},
        }
        for name, method, path in targets
    }
    return {"responses": {status: {"links": documented}}}


def property_names(_converter: Any, field: Any, **_: Any) -> dict[str, Any]:
    """apispec attribute function: a Dict field's `property_names` metadata becomes `propertyNames`."""
    names = field.metadata.get("property_names")
    return {"propertyNames": names} if names else {}


_IMMUTABLE = (str, int, float, bool, datetime, type(None))
"""What a kept parse may hold (an `int`'s and a `str`'s subclasses, so enums, included)."""


class Parser(FlaskParser):
    """webargs parser answering 400 (not 422) for invalid input."""

    DEFAULT_VALIDATION_STATUS = 400
    # webargs excludes unknown query arguments whatever the schema says; let the schema decide (they raise).
    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": None, "querystring": None}

    PARSED_KEPT = 512
    """Query strings whose parsed arguments a process keeps, per parser (then it starts again)."""
    PARSED_QUERY_MAX = 512
    """Longer query strings are parsed every time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parsed: dict[tuple[Any, bytes], dict[str, Any]] = {}

    def parse(self, argmap: Any, req: Any = None, *, location: str | None = None, **kwargs: Any) -> Any:
        """webargs' parse; query arguments of a schema that says they depend on nothing but the query string
        (`PURE_QUERY`) are parsed once per distinct query string and kept.

        A dashboard polls the same few URLs: a page's `?limit=50` went through marshmallow's load (its
        hooks, fields, validators and the clamp) on every request, a twentieth of the list's cost. Only
        valid arguments are kept (an invalid one raises before), only when every value is immutable, and each
        request gets its own copy of the dict.
        """
        if location != "query" or not getattr(argmap, "PURE_QUERY", False) or kwargs.get("validate"):
            return super().parse(argmap, req, location=location, **kwargs)
        query = (req if req is not None else request).query_string
        key = (argmap, query)
        found = self._parsed.get(key)
        if found is not None:
            return dict(found)
        data = super().parse(argmap, req, location=location, **kwargs)
        if len(query) <= self.PARSED_QUERY_MAX and all(isinstance(value, _IMMUTABLE) for value in data.values()):
            if len(self._parsed) >= self.PARSED_KEPT:
                self._parsed = {}
            self._parsed[key] = dict(data)
        return data

    def _raw_load_json(self, req: Any) -> Any:
        """The body through `json_body` (webargs' own `json.loads` lets deep nesting reach a RecursionError)."""
        if not is_json_request(req):
            return missing
        raw = req.get_data(cache=True)
        if not raw:
            return missing
        return json_body(raw)


def _documentation_only(decorator: Callable[[F], Any]) -> Callable[[F], F]:
    """A smorest decorator that only documents, without its runtime layer.

    smorest's `doc` and `alt_response` wrap the view in a function that does nothing but call it
    (through `ensure_sync`), to hang the documentation (`_apidoc`) on the wrapper; a route with its
    auth check and four error statuses ran six such layers on every request. The documentation goes on
    the view itself instead (a copy, as smorest makes it), and the view is returned unwrapped.
    """

    def apply(view: F) -> F:
        documented = decorator(view)
        view._apidoc = documented._apidoc  # type: ignore[attr-defined]
        return view

    return apply


class Blueprint(flask_smorest.Blueprint):
    """A smorest blueprint with our parser and auth decorators that document themselves."""

    ARGUMENTS_PARSER = Parser()

    def arguments(self, schema: Any, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        """smorest's `arguments`, with a schema class instantiated once here instead of by webargs on
        every request (a query schema's fields are deep-copied each time it is built)."""
        if isinstance(schema, type):
            schema = schema()
        return cast(Callable[[F], F], super().arguments(schema, *args, **kwargs))

    @staticmethod
    def doc(**kwargs: Any) -> Callable[[F], F]:
        """smorest's `doc`, adding the documentation to the view itself rather than a wrapper around it."""
        return _documentation_only(flask_smorest.Blueprint.doc(**kwargs))

    def alt_response(self, status_code: int, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        """smorest's `alt_response`, adding the documentation to the view itself rather than a wrapper."""
        return _documentation_only(super().alt_response(status_code, *args, **kwargs))

    def response(self, status_code: int, *args: Any, prebuilt: bool = False, **kwargs: Any) -> Callable[[F], F]:
        """smorest's `response`; with `prebuilt`, for a view that always returns its own `Response`
        (`json_response`), the schema documents the body and the runtime layer is left out (smorest's
        passes a `Response` through untouched, after four calls of its own)."""
        decorator = super().response(status_code, *args, **kwargs)
        return _documentation_only(decorator) if prebuilt else decorator

    def error(self, status: int, description: str) -> Callable[[F], F]:
        """Document an error status the route answers: the contract's `Error` body, and when it happens."""
        return self.alt_response(status, schema=ErrorSchema, description=description)

    def auth_required(self, *, refresh: bool = False) -> Callable[[F], F]:
        """Require a credential that may call the route, as the permission table says (`permissions`).

        A valid access JWT (with `refresh`, a refresh JWT) of a user whose role holds the route's action; or a
        personal token (`Bearer dsp_...` or `X-API-Key: dsp_...`) within its scopes and its user's role, on a
        route that takes tokens; or, on a route whose row names an agent-key scope, the agent's key with it.
        """

        def decorator(view: F) -> F:
            @functools.wraps(view)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                authorize(refresh=refresh)
                return view(*args, **kwargs)

            documented = self.error(401, "`unauthorized`: no valid credentials.")(wrapper)
            documented = self.error(
                403,
                "`forbidden`: the credential may not call this route: the role, the token's scopes or the key's "
                "scopes do not open it (`x-required-scope`, `x-required-roles`).",
            )(documented)
            return cast(F, documented)

        return decorator


def request_permission() -> Permission:
    """The permission table's row for the current request's route.

    Raises:
        Forbidden: the table has no row for it (closed by default; a test keeps every route in the table).
    """
    rule = request.url_rule
    method = "GET" if request.method == "HEAD" else request.method
    permission = permission_for(method, rule.rule) if rule is not None else None
    if permission is None:
        raise Forbidden("This route has no entry in the permission table.")
    return permission


def authorize(*, refresh: bool = False) -> None:
    """Authenticate the request and check it against the permission table; the caller lands on `flask.g`.

    Raises:
        Unauthorized: no credential, or an invalid, expired or revoked one (or its user deactivated).
        Forbidden: a valid credential that the route's row does not open.
    """
    permission = request_permission()
    token = presented_token(request.headers)
    if token is not None:
        caller = verified_token(token)
        if caller is None:
            raise Unauthorized("The personal access token is invalid, revoked or expired.")
        if not permission.takes_tokens:
            raise Forbidden("Personal access tokens cannot be used for this route; log in instead.")
        if permission.action not in token_actions(caller.user.role, caller.scopes):
            if permission.action not in role_actions(caller.user.role):
                raise Forbidden(f"Your role ({caller.user.role}) may not do this.")
            needed = " or ".join(repr(str(scope)) for scope in permission.token_scopes)
            raise Forbidden(f"The personal access token lacks the {needed} scope.")
        g.current_user, g.personal_token = caller.user, caller
        return
    presented = request.headers.get(API_KEY_HEADER)
    if presented is not None and "Authorization" not in request.headers:
        if permission.key_scope is None:
            raise Forbidden("API keys cannot be used for this route; log in instead.")
        key = verified_key(presented)
        if key is None:
            raise Unauthorized("The API key is invalid, revoked or expired.")
        if permission.key_scope not in key.scopes:
            raise Forbidden(f"The API key lacks the {str(permission.key_scope)!r} scope.")
        g.api_key = key
        return
    if refresh:
        verify_jwt_in_request(refresh=True)
    else:
        g.current_user, g.jwt_claims = authenticate_access(request.headers.get("Authorization"))
    user = current_user()
    if permission.action not in role_actions(user.role):
        raise Forbidden(
            "This needs an admin." if permission.action == Action.ADMIN else f"Your role ({user.role}) may not do this."
        )


def current_user() -> Principal:
    """The user the verified token speaks for (set by the token check of this request)."""
    user: Principal | None = g.get("current_user")
    if user is None:
        raise Unauthorized()
    return user


def current_caller() -> Principal | ApiKey:
    """The agent's API key when the request came with one, else the logged-in user."""
    key: ApiKey | None = g.get("api_key")
    return key if key is not None else current_user()


def current_session_id() -> str:
    """The login session of the verified token."""
    claims = g.get("jwt_claims")
    return str((claims if claims is not None else get_jwt())["sid"])


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, orjson.Fragment):
        return json.loads(value.contents)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_response(body: Any, status: int = 200) -> Response:
    """A JSON response of a body the view already built (smorest passes a `Response` through undumped).

    For the hot read paths whose services build the contract's body themselves; the route keeps its
    `@blp.response(..., prebuilt=True)` schema, which documents the body in the OpenAPI spec. orjson
    writes it (a tenth of the stdlib's time for a page of deployments) and writes `datetime`s as ISO 8601 exactly as
    `datetime.isoformat` does; anything orjson refuses (an integer beyond 64 bits) goes the stdlib way.
    """
    try:
        payload = orjson.dumps(body)
    except TypeError:
        payload = json.dumps(body, default=_json_default).encode()
    return current_app.response_class(payload, status=status, mimetype="application/json")
