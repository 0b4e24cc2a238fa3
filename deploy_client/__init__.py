"""deploy_client: a Python client of Deploy Service's HTTP contract, and `deployctl`, its command line.

`from deploy_client import Client` for scripts; `deployctl --help` (or `python -m deploy_client`) for people.
"""

from deploy_client.client import Client
from deploy_client.errors import (
    ApiError,
    ClientError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidState,
    NotFound,
    NotLoggedIn,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)

__version__ = "0.1.0"
__all__ = [
    "ApiError",
    "Client",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "InvalidState",
    "NotFound",
    "NotLoggedIn",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
]
