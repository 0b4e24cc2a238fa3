"""The one way the service calls a webhook URL, shaped so the URL's owner cannot turn the call around.

A webhook URL is the one place a user makes the service open a connection of their choosing. Each
attempt therefore:

- resolves the host once and, unless `WEBHOOK_ALLOW_PRIVATE_TARGETS`, refuses it when any address it
  resolves to is not public (loopback, private, link-local, reserved, multicast...); then connects
  to exactly those checked addresses: nothing looks the name up again, so a name that answers a
  public address to the check and an inside one to the connect (DNS rebinding) reaches nothing inside;
- speaks to the URL's host all the same: the `Host` header is the URL's, and on https the TLS
  handshake names it (SNI) and the certificate is verified for it, not for the address;
- follows no redirect: a 3xx is an answer like any other non-2xx (the delivery policy retries it);
- runs under one deadline (`WEBHOOK_TIMEOUT_SECONDS`) for resolving, connecting, the handshake,
  sending and reading, not one per socket read: when it passes the socket is shut down whatever the
  attempt is doing, so a receiver that trickles bytes cannot hold a dispatcher thread. The status
  line and headers must arrive in time; the body is read until `WEBHOOK_MAX_RESPONSE_BYTES`, its end
  or the deadline, whichever comes first (the status stands either way), and never more.

It is built on `http.client`: urllib3 resolves names itself and its timeouts are per socket
operation. Every failure is a `SendFailed` whose message is what the delivery log shows: it names
no address and repeats nothing the target said, so the log cannot be used to map a network.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from deploy_service.references import InvalidReference, check_webhook_url, is_public_address, resolved_addresses
from deploy_service.settings import WebhookSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PRIVATE = "the target resolves to a private address"
UNRESOLVED = "the host does not resolve"


class UnsafeTarget(ValueError):
    """The URL is not one the service may call; `str()` is the reason, naming no address."""


class Unresolved(UnsafeTarget):
    """The host does not resolve (now: it may later)."""


class SendFailed(Exception):
    """An attempt that got no answer; `str()` is what the delivery log shows."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    """The first `WEBHOOK_MAX_RESPONSE_BYTES` of the body at most."""


@dataclass(frozen=True)
class Target:
    """A webhook URL taken apart: where to connect and what to ask for."""

    https: bool
    host: str
    port: int
    path: str
    """The request target: the path (`/` when empty) and the query; never the fragment."""

    @classmethod
    def parse(cls, url: str) -> Target:
        """Raises: UnsafeTarget: the URL breaks `references.check_webhook_url`."""
        try:
            check_webhook_url(url)
        except InvalidReference as exc:
            raise UnsafeTarget("not a valid webhook URL") from exc
        parts = urlsplit(url)
        https = parts.scheme == "https"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(https=https, host=parts.hostname or "", port=parts.port or (443 if https else 80), path=path)


def resolve(host: str, port: int, *, allow_private: bool) -> list[IPAddress]:
    """Every address `host` resolves to for TCP, in the resolver's order, each one checked.

    Raises:
        Unresolved: the host does not resolve.
        UnsafeTarget: an address is not public and private targets are not allowed.
    """
    addresses = resolved_addresses(host, port)
    if not addresses:
        raise Unresolved(UNRESOLVED)
    if not allow_private and not all(is_public_address(address) for address in addresses):
        raise UnsafeTarget(PRIVATE)
    return addresses


class _Deadline:
    """One deadline for a whole attempt: when it passes, the socket it watches is shut down."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.passed = False
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._timer = threading.Timer(seconds, self._pass)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        """Seconds left. Raises: TimeoutError: none are."""
        left = self.at - time.monotonic()
        if left <= 0 or self.passed:
            raise TimeoutError
        return left

    def watch(self, sock: socket.socket) -> None:
        """Cut `sock` when the deadline passes. Raises: TimeoutError: it has passed (`sock` is closed)."""
        with self._lock:
            if self.passed:
                sock.close()
                raise TimeoutError
            self._socket = sock

    def _pass(self) -> None:
        with self._lock:
            self.passed = True
            if self._socket is not None:
                try:  # the plain socket's shutdown, also under TLS: it unblocks any read or write
                    socket.socket.shutdown(self._socket, socket.SHUT_RDWR)
                except OSError:
                    pass

    def cancel(self) -> None:
        self._timer.cancel()


class _PinnedConnection(http.client.HTTPConnection):
    """An `HTTPConnection` to the URL's host that connects to the checked addresses, never looking
    the host up; over TLS (given a context) it names the host in the handshake and verifies the
    certificate for it."""

    def __init__(
        self,
        target: Target,
        addresses: list[IPAddress],
        deadline: _Deadline,
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(target.host, target.port, timeout=deadline.remaining())
        self._addresses, self._deadline, self._tls = addresses, deadline, tls

    def connect(self) -> None:
        self.sock = sock = self._connect_any()  # set at once: `close()` closes it whatever fails next
        self._deadline.watch(sock)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            self.sock = tls = self._tls.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
            self._deadline.watch(tls)  # before the handshake, so a trickled handshake is cut too
            tls.do_handshake()

    def _connect_any(self) -> socket.socket:
        error: OSError = ConnectionError("no address to connect to")
        for address in self._addresses:
            try:
                return socket.create_connection((str(address), self.port), timeout=self._deadline.remaining())
            except TimeoutError:
                raise
            except OSError as exc:
                error = exc
        raise error


class WebhookSender:
    """Sends one attempt (see the module docstring); holds the TLS context that verifies receivers."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context or ssl.create_default_context()

    def post(self, url: str, *, body: bytes, headers: Mapping[str, str], settings: WebhookSettings) -> Answer:
        """POST `body` to `url` under one deadline; returns the answer, whatever its status.

        Raises:
            SendFailed: refused, unresolved, timed out, or no HTTP answer; the message says which.
        """
        deadline = _Deadline(settings.timeout)
        try:
            target = Target.parse(url)
            addresses = resolve(target.host, target.port, allow_private=settings.allow_private_targets)
            connection = _PinnedConnection(target, addresses, deadline, self.ssl_context if target.https else None)
            try:
                connection.request("POST", target.path, body=body, headers=dict(headers))
                response = connection.getresponse()
                deadline.remaining()  # a cut can end the headers early, as if they were complete
                return Answer(status=response.status, body=_read_some(response, settings.max_response_bytes))
            finally:
                connection.close()
        except Exception as exc:
            raise SendFailed(_reason(exc, passed=deadline.passed, timeout=settings.timeout)) from exc
        finally:
            deadline.cancel()


def _read_some(response: http.client.HTTPResponse, limit: int) -> bytes:
    """Up to `limit` bytes of the body: what arrived before its end, the limit or the deadline."""
    body = b""
    try:
        while len(body) < limit:
            chunk = response.read1(limit - len(body))
            if not chunk:
                break
            body += chunk
    except (OSError, http.client.HTTPException, ValueError):
        pass  # the deadline cut the body short, or it ended early: the status stands
    return body


def _reason(exc: BaseException, *, passed: bool, timeout: float) -> str:
    """What the delivery log says about a failed attempt, naming no address."""
    reasons: list[tuple[type[BaseException] | tuple[type[BaseException], ...], str]] = [
        (Unresolved, f"dns: {UNRESOLVED}"),
        (UnsafeTarget, f"refused: {exc}"),
        (ssl.SSLCertVerificationError, "tls: the certificate is not valid for the host"),
        (ssl.SSLError, "tls: the handshake failed"),
        (ConnectionRefusedError, "connection refused"),
        (http.client.HTTPException, "not an HTTP answer"),
        (OSError, "connection failed"),
    ]
    if passed or isinstance(exc, TimeoutError):
        return f"timeout: no answer within {timeout:g} s"
    return next((reason for kind, reason in reasons if isinstance(exc, kind)), "send failed")
