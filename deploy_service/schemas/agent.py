"""Agent request and response bodies.

The request schemas carry no defaults: the service fills them (some come from configuration), so
the same schema validates both a create (`POST`, required fields enforced) and a partial update
(`PATCH`, `partial=True`), where each given top-level field replaces the stored one. Nested objects
come in two schemas: `XInputSchema` (what a client sends, fields with defaults optional) and `XSchema`
(what the API returns, every default filled in by the service before the agent is stored).
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates, validates_schema

from deploy_service.models import AgentKind, AgentStatus, RestartPolicy
from deploy_service.schemas.common import Choice, JsonBodySchema, PaginationArgs, ResponseSchema, page_schema
from deploy_service.schemas.validators import (
    AGENT_NAME,
    ENV_NAME,
    REGISTRY_USERNAME,
    SECRET_NAME,
    FullMatch,
    image_reference,
    ref_name,
    registry_name,
    repo_path,
    run_as_user_spec,
    url_path,
    validate_git_origin,
    validate_git_url,
    validate_image_origin,
)
from deploy_service.settings import current_settings

RESERVED_ENV = frozenset({"PORT", "REPLICA_INDEX"})
MAX_ENV_ENTRIES = 200
MAX_ENV_VALUE = 32 * 1024
MAX_JOB_TIMEOUT_SECONDS = 7 * 24 * 3600
# What `check_env_names` accepts, for the spec's `propertyNames` (the check itself words the errors).
ENV_KEY_PATTERN = rf"^(?!(?:{'|'.join(sorted(RESERVED_ENV))})$){ENV_NAME.pattern[1:]}"
# Cross-field rules that field-by-field conversion cannot put in the spec (see `_image_xor_source`):
# exactly one of `image` and `source` is a non-null value. Both are said with `not` alone: client
# generators ignore `not` (an `anyOf` of partial objects made openapi-python-client build clashing
# models), while validators and fuzzers honour it, so generated bodies are only the ones the service takes.
_BOTH: dict[str, Any] = {
    "required": ["image", "source"],
    "properties": {"image": {"type": "string"}, "source": {"type": "object"}},
}
_NEITHER: dict[str, Any] = {"properties": {"image": {"type": "null"}, "source": {"type": "null"}}}
# Only a job has a timeout (`_check_job_fields`): a new agent's `kind` defaults to `service`; a patch without
# `kind` keeps the stored one, which only the service knows (409 there), so the spec says the patch with both.
TIMEOUT_WITHOUT_JOB: dict[str, Any] = {
    "required": ["timeout_seconds"],
    "properties": {"timeout_seconds": {"type": "number"}},
    "not": {"required": ["kind"], "properties": {"kind": {"const": "job"}}},
}
_TIMEOUT_ON_A_SERVICE: dict[str, Any] = {
    "required": ["timeout_seconds", "kind"],
    "properties": {"timeout_seconds": {"type": "number"}, "kind": {"not": {"const": "job"}}},
}
OPENAPI_RULES: dict[str, dict[str, Any]] = {
    "AgentInput": {"not": {"anyOf": [_BOTH, _NEITHER, TIMEOUT_WITHOUT_JOB]}},
    "AgentPatch": {"not": {"anyOf": [_BOTH, _TIMEOUT_ON_A_SERVICE]}},
}
ENV_KEYS = {"property_names": {"pattern": ENV_KEY_PATTERN}, "maxProperties": MAX_ENV_ENTRIES}


class SourceInputSchema(JsonBodySchema):
    """A git repository to clone and build."""

    git_url = fields.String(
        required=True,
        metadata={
            "format": "git-url",
            "description": "https:// URL of the repository (no credentials). Not on a loopback or private-range "
            "host (`https://10.1.2.3/x.git`, `https://localhost/x.git`) unless the host is in `ALLOWED_GIT_HOSTS`, "
            "else 400; a name that resolves to such an address fails the build.",
            "example": "https://github.com/acme/agent.git",
        },
    )
    branch = fields.String(validate=ref_name(), metadata={"description": "Branch or tag; default `main`."})
    dockerfile = fields.String(
        validate=repo_path(), metadata={"description": "Dockerfile path in the repo; default `Dockerfile`."}
    )
    context = fields.String(validate=repo_path(), metadata={"description": "Build context; default `.`."})

    @validates("git_url")
    def _git_url(self, value: str, **_: Any) -> None:
        settings = current_settings()
        validate_git_url(value, allow_local=settings.agents.allow_local_git_sources)
        validate_git_origin(value, allowed_hosts=settings.runner.allowed_git_hosts)


class HealthCheckInputSchema(JsonBodySchema):
    """An HTTP GET health check; 2xx is healthy. `{}` is a check with every default."""

    path = fields.String(validate=url_path(), metadata={"description": "Default `/health`."})
    interval_seconds = fields.Float(validate=validate.Range(min=0.1, max=3600), metadata={"description": "Default 10."})
    timeout_seconds = fields.Float(validate=validate.Range(min=0.1, max=300), metadata={"description": "Default 5."})
    retries = fields.Integer(validate=validate.Range(min=1, max=100), metadata={"description": "Default 3."})


class ResourcesInputSchema(JsonBodySchema):
    """CPU (cores, may be fractional) and memory limits; defaults and maxima come from configuration."""

    cpu = fields.Float(validate=validate.Range(min=0.01, min_inclusive=True))
    memory_mb = fields.Integer(validate=validate.Range(min=6))

    @validates_schema
    def _within_maxima(self, data: dict[str, Any], **_: Any) -> None:
        agents = current_settings().agents
        errors: dict[str, list[str]] = {}
        if "cpu" in data and data["cpu"] > agents.max_cpu:
            errors["cpu"] = [f"Must be at most {agents.max_cpu} cores."]
        if "memory_mb" in data and data["memory_mb"] > agents.max_memory_mb:
            errors["memory_mb"] = [f"Must be at most {agents.max_memory_mb} MB."]
        if errors:
            raise ValidationError(errors)


class RegistryAuthSchema(JsonBodySchema):
    """Credentials for a private registry: a login name and the name of one of your stored secrets (its value is
    the password or token). Used for the pull of an image agent, and for the FROM images of a git agent's build;
    sent to that one registry only, never returned or logged."""

    username = fields.String(
        required=True,
        validate=FullMatch(REGISTRY_USERNAME, error="1-255 printable characters, without spaces or ':'."),
        metadata={"description": "The registry login name.", "example": "robot$ci"},
    )
    password_secret = fields.String(
        required=True,
        validate=FullMatch(SECRET_NAME, error="Not a valid secret name."),
        metadata={
            "description": "Name of your stored secret holding the password or token (`POST /v1/secrets`); it must "
            "exist (else 400), and it cannot be deleted while an agent's registry_auth names it (409).",
            "example": "ghcr-token",
        },
    )
    registry = fields.String(
        allow_none=True,
        validate=registry_name(),
        metadata={
            "description": "`host[:port]` of the registry the credentials are for. Null or absent: the image's "
            "registry for an image agent (given, it must be that registry), Docker Hub (`docker.io`) for a git "
            "agent, whose build sends them for the FROM images of this registry only.",
            "example": "ghcr.io",
        },
    )


class RegistryAuthInfoSchema(ResponseSchema):
    """An agent's registry credentials as the API shows them: the secret by name, never its value."""

    username = fields.String(metadata={"example": "robot$ci"})
    password_secret = fields.String(metadata={"description": "The stored secret's name.", "example": "ghcr-token"})
    registry = fields.String(
        allow_none=True,
        metadata={"description": "Null: the image's registry (image agents) or Docker Hub (git agents)."},
    )


class SourceSchema(ResponseSchema):
    """A git repository the agent is built from, with its defaults filled in."""

    git_url = fields.String(metadata={"format": "git-url", "example": "https://github.com/acme/agent.git"})
    branch = fields.String(metadata={"example": "main"})
    dockerfile = fields.String(metadata={"example": "Dockerfile"})
    context = fields.String(metadata={"example": "."})


class HealthCheckSchema(ResponseSchema):
    """The agent's HTTP GET health check, with its defaults filled in; 2xx is healthy."""

    path = fields.String(metadata={"example": "/health"})
    interval_seconds = fields.Float(metadata={"example": 10.0})
    timeout_seconds = fields.Float(metadata={"example": 5.0})
    retries = fields.Integer(metadata={"example": 3})


class ResourcesSchema(ResponseSchema):
    """CPU (cores, may be fractional) and memory (MB) limits, defaults filled in from configuration."""

    cpu = fields.Float(metadata={"example": 0.5})
    memory_mb = fields.Integer(metadata={"example": 512})


def check_env_names(value: dict[str, Any], field: str) -> None:
    if len(value) > MAX_ENV_ENTRIES:
        raise ValidationError(f"At most {MAX_ENV_ENTRIES} entries.")
    bad = {}
    for name in value:
        if not ENV_NAME.fullmatch(name):
            bad[name] = ["Not a valid environment variable name."]
        elif name in RESERVED_ENV:
            bad[name] = [f"{name} is set by the service and cannot be overridden."]
    if bad:
        raise ValidationError(bad, field)


class AgentInputSchema(JsonBodySchema):
    """Fields a client may send to create or update an agent."""

    name = fields.String(
        required=True,
        validate=FullMatch(
            AGENT_NAME, error="1-100 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit."
        ),
    )
    description = fields.String(allow_none=True, validate=validate.Length(max=2000))
    image = fields.String(
        allow_none=True,
        validate=image_reference(),
        metadata={
            "description": "An image reference. Not on a loopback or private-range registry (`localhost:5000/x`, "
            "`10.1.2.3/x`) unless the registry is in `ALLOWED_REGISTRIES`, and never an image this service "
            "built (`deploy-service/...`: a built agent runs through its git `source`); else 400.",
            "example": "ghcr.io/acme/agent:1.2",
        },
    )
    source = fields.Nested(SourceInputSchema, allow_none=True)
    port = fields.Integer(validate=validate.Range(min=1, max=65535), metadata={"description": "Default 8080."})
    invoke_path = fields.String(validate=url_path(), metadata={"description": "Default `/invoke`."})
    command = fields.List(
        fields.String(validate=validate.Length(max=4096)),
        allow_none=True,
        validate=validate.Length(min=1, max=100),
        metadata={"description": 'Exec-form command overriding the image\'s, e.g. `["python", "main.py"]`.'},
    )
    env = fields.Dict(
        keys=fields.String(),
        values=fields.String(validate=validate.Length(max=MAX_ENV_VALUE)),
        metadata=ENV_KEYS,
    )
    secrets = fields.Dict(
        keys=fields.String(),
        values=fields.String(validate=FullMatch(SECRET_NAME, error="Not a valid secret name.")),
        metadata={
            "description": "`{ENV_NAME: secret name}`: stored secrets injected as variables. A variable may not "
            "be in both `env` and `secrets` (400).",
            **ENV_KEYS,
        },
    )
    health_check = fields.Nested(
        HealthCheckInputSchema, allow_none=True, metadata={"description": "Null or absent: no health check."}
    )
    resources = fields.Nested(ResourcesInputSchema)
    read_only_rootfs = fields.Boolean(
        metadata={"description": "Run with a read-only root filesystem (a tmpfs on /tmp); default true."}
    )
    run_as_user = fields.String(
        allow_none=True,
        validate=run_as_user_spec(),
        metadata={
            "description": "Numeric `uid` or `uid:gid` the replicas run as (uid 1 to 2147483647, gid 0 to "
            "2147483647; never uid 0), over the image's user. Null or absent: the image's user when it is a "
            "non-zero number, else `CONTAINER_DEFAULT_UID:CONTAINER_DEFAULT_GID` (65532:65532).",
            "example": "1000:1000",
        },
    )

    registry_auth = fields.Nested(
        RegistryAuthSchema,
        allow_none=True,
        metadata={"description": "Credentials for a private registry; null or absent: pulls and builds are anonymous."},
    )
    kind = Choice(
        AgentKind,
        metadata={
            "description": "`service` (default): runs until stopped and serves `interact`. `job`: runs to "
            "completion; the deployment ends `succeeded` when every replica exited 0, and gets no `interact`."
        },
    )
    restart_policy = Choice(
        RestartPolicy,
        metadata={
            "description": "What an exit of a replica leads to. `always` (default for services) and `on-failure` "
            "(default for jobs): a non-zero exit is restarted within the restart budget (a job's exit 0 is done "
            "under either; a service is not meant to exit, so for it both restart every exit). `never`: the first "
            "non-zero exit (any exit of a service) fails the deployment at once."
        },
    )
    timeout_seconds = fields.Float(
        allow_none=True,
        validate=validate.Range(min=0.1, max=MAX_JOB_TIMEOUT_SECONDS),
        metadata={
            "description": "Jobs only (else 400): the longest a run may take, counted from its deploy or restart; "
            "past it the run is `failed` and its containers are stopped. Null or absent: no limit."
        },
    )

    @validates("image")
    def _image(self, value: str | None, **_: Any) -> None:
        if value is not None:
            settings = current_settings()
            validate_image_origin(
                value,
                allowed_registries=settings.agents.allowed_registries,
                built_registry=settings.runner.registry,
            )

    @validates("env")
    def _env(self, value: dict[str, str], data_key: str, **_: Any) -> None:
        check_env_names(value, data_key)

    @validates("secrets")
    def _secrets(self, value: dict[str, str], data_key: str, **_: Any) -> None:
        check_env_names(value, data_key)

    @validates_schema
    def _image_xor_source(self, data: dict[str, Any], *, partial: Any = None, **_: Any) -> None:
        has_image, has_source = bool(data.get("image")), bool(data.get("source"))
        if has_image and has_source:
            raise ValidationError("Give either image or source, not both.", "image")
        if not partial and not (has_image or has_source):
            raise ValidationError("Give an image or a git source.", "image")
        overlap = sorted(set(data.get("env") or {}) & set(data.get("secrets") or {}))
        if overlap:
            raise ValidationError(f"Variables set in both env and secrets: {', '.join(overlap)}.", "secrets")
        if data.get("timeout_seconds") is not None and data.get("kind", None if partial else AgentKind.SERVICE) == (
            AgentKind.SERVICE
        ):
            raise ValidationError("Only a job (kind `job`) has a timeout.", "timeout_seconds")


class AgentPatchSchema(AgentInputSchema):
    """A partial update: load it with `partial=True`; each given field replaces the stored one."""


class AgentSchema(ResponseSchema):
    """An agent as the API returns it."""

    id = fields.String()
    owner_id = fields.String()
    name = fields.String()
    description = fields.String(allow_none=True)
    image = fields.String(allow_none=True, metadata={"description": "Null when the agent is built from `source`."})
    source = fields.Nested(SourceSchema, allow_none=True, metadata={"description": "Null for an image agent."})
    port = fields.Integer()
    invoke_path = fields.String()
    command = fields.List(fields.String(), allow_none=True)
    env = fields.Dict(keys=fields.String(), values=fields.String())
    secrets = fields.Dict(
        keys=fields.String(), values=fields.String(), metadata={"description": "`{ENV_NAME: secret name}`."}
    )
    health_check = fields.Nested(HealthCheckSchema, allow_none=True, metadata={"description": "Null: none."})
    resources = fields.Nested(ResourcesSchema)
    read_only_rootfs = fields.Boolean()
    run_as_user = fields.String(
        allow_none=True,
        metadata={
            "description": "`uid[:gid]` the replicas run as; null: the image's non-zero numeric user or the "
            "default one.",
            "example": "1000:1000",
        },
    )
    registry_auth = fields.Nested(
        RegistryAuthInfoSchema, allow_none=True, metadata={"description": "Null: pulls and builds are anonymous."}
    )
    kind = Choice(AgentKind)
    restart_policy = Choice(RestartPolicy)
    timeout_seconds = fields.Float(allow_none=True, metadata={"description": "Jobs only; null: no limit."})
    status = Choice(AgentStatus)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class AgentListArgs(PaginationArgs):
    status = Choice(AgentStatus)
    q = fields.String(validate=validate.Length(max=100), metadata={"description": "Case-insensitive match on name."})
    owner_id = fields.String(
        metadata={"description": "Admins only: agents of this owner (another user's id is 403 for others)."}
    )


AgentPageSchema = page_schema(AgentSchema, "AgentPage")
