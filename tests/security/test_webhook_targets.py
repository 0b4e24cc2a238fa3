"""Webhook targets as attackers: DNS rebinding, redirects, trickled and endless answers, private addresses.

A webhook URL is the one place a user makes the service open a connection of their choosing, so the
sender must reach exactly the address it checked, follow nothing, read little and give up on time.
Everything here stays on loopback: `FakeNetwork` stands in for DNS and routes the one made-up public
address to a loopback receiver, and refuses any other connection that would leave the machine.
Deliveries go through the real `Dispatcher` and its sender.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from deploy_service.extensions import db
from deploy_service.models import WebhookDelivery
from deploy_service.reconciler.dispatch import Dispatcher
from deploy_service.services.webhook_sender import WebhookSender
from deploy_service.settings import Settings, current_settings
from tests.factories import AuthActions
from tests.helpers import Api, Receiver, assert_error, certificates, wait_until

PUBLIC = "93.184.216.34"
"""A public address no test reaches: `FakeNetwork` routes connections to it to a loopback receiver."""


class FakeNetwork:
    """DNS and routing of a made-up internet, on loopback only (patches `socket.getaddrinfo` and
    `socket.create_connection`, which every HTTP client in the process uses).

    `names[host]` lists the answers lookups of `host` get, one per lookup, the last one repeating; an
    answer is one or more addresses separated by spaces. `routes[address]` is the loopback port a
    connection to that address reaches. Any other connection to a non-loopback address is refused.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: dict[str, list[str]] = {}
        self.routes: dict[str, int] = {}
        self.lookups: list[str] = []
        self.connections: list[tuple[str, int]] = []
        real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
            name = host.decode() if isinstance(host, bytes) else str(host)
            if name not in self.names:
                ipaddress.ip_address(name.strip("[]"))  # only literals resolve outside the made-up names
                return real_getaddrinfo(host, port, *args, **kwargs)
            self.lookups.append(name)
            answers = self.names[name]
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
            family = {True: socket.AF_INET6, False: socket.AF_INET}
            return [
                (family[":" in a], socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, int(port))) for a in answer.split()
            ]

        def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
            host, port = address[0], int(address[1])
            self.connections.append((host, port))
            if host in self.routes:
                return real_connect(("127.0.0.1", self.routes[host]), *args, **kwargs)
            if not ipaddress.ip_address(host).is_loopback:
                raise ConnectionRefusedError(f"{host} is outside the test's network")
            return real_connect(address, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket, "create_connection", create_connection)


class RawReceiver:
    """A loopback TCP server for answers no HTTP server library writes: it reads each request (head and
    `Content-Length` body), then `answer(connection)` writes whatever it likes. `hung_up` is set when a
    write fails because the client went away; `sent` counts the bytes written before that."""

    def __init__(self, answer: Callable[[RawReceiver, socket.socket], None], *, reads_request: bool = True) -> None:
        self.answer, self.reads_request = answer, reads_request
        self.requests: list[bytes] = []
        self.sent = 0
        self.hung_up = threading.Event()
        self.closed = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/alerts"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        with connection:
            data = b"" if self.reads_request else b"\r\n\r\n"
            while b"\r\n\r\n" not in data:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:")), 0)
            while len(body) < length:
                body += connection.recv(65536)
            self.requests.append(head)
            try:
                self.answer(self, connection)
            except OSError:
                self.hung_up.set()

    def write(self, connection: socket.socket, data: bytes) -> None:
        connection.sendall(data)
        self.sent += len(data)

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


@pytest.fixture()
def network(monkeypatch: pytest.MonkeyPatch) -> FakeNetwork:
    return FakeNetwork(monkeypatch)


@pytest.fixture()
def api(client: FlaskClient, auth: AuthActions, configure: Callable[..., Settings]) -> Api:
    configure(WEBHOOK_ALLOW_PRIVATE_TARGETS=True, WEBHOOK_MAX_ATTEMPTS=3, WEBHOOK_RETRY_BASE_SECONDS=60.0)
    _, headers = auth.user()
    return Api(client, headers)


@pytest.fixture()
def dispatcher(app: Flask) -> Iterator[Dispatcher]:
    found = Dispatcher(app)
    yield found
    found.pool.shutdown(wait=True)
    found.close()


@pytest.fixture()
def receivers() -> Iterator[Callable[..., Any]]:
    """Make receivers (`Receiver` by default, or `RawReceiver` given an answer), closed after the test."""
    made: list[Any] = []

    def make(answer: Callable[[RawReceiver, socket.socket], None] | None = None, **kwargs: Any) -> Any:
        made.append(RawReceiver(answer, **kwargs) if answer else Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def send_one(app: Flask, api: Api, dispatcher: Dispatcher, webhook_id: str) -> dict[str, Any]:
    """Queue one delivery to `webhook_id`, let the dispatcher make its first attempt, return its log entry."""
    with app.app_context():
        delivery = WebhookDelivery(webhook_id=webhook_id, event="alert.raised", payload={"type": "alert.raised"})
        db.session.add(delivery)
        db.session.commit()
        delivery_id = delivery.id
        dispatcher.dispatch_due()

    def attempted() -> dict[str, Any] | None:
        items = api.get(f"/v1/webhooks/{webhook_id}/deliveries?limit=100").get_json()["items"]
        found = next(item for item in items if item["id"] == delivery_id)
        return dict(found) if found["attempts"] == 1 else None

    found: dict[str, Any] = wait_until(attempted, 30, what="the first attempt")
    return found


def test_the_sender_connects_to_the_address_it_checked_never_looking_the_name_up_again(
    app: Flask,
    api: Api,
    configure: Callable[..., Settings],
    network: FakeNetwork,
    dispatcher: Dispatcher,
    receivers: Callable[..., Any],
) -> None:
    configure(WEBHOOK_ALLOW_PRIVATE_TARGETS=False)
    outside, inside = receivers(), receivers()  # the receiver the name's owner runs; a service inside
    inside_port = int(inside.url.split(":")[2].split("/")[0])
    network.routes[PUBLIC] = int(outside.url.split(":")[2].split("/")[0])
    network.names["hooks.example.com"] = [PUBLIC]
    created = api.post("/v1/webhooks", {"url": f"http://hooks.example.com:{inside_port}/alerts"})
    assert created.status_code == 201, created.get_json()
    network.names["hooks.example.com"] = [PUBLIC, "127.0.0.1"]  # rebinding: public to the check, then inside
    network.lookups.clear()

    found = send_one(app, api, dispatcher, created.get_json()["id"])

    assert inside.received == []
    assert (found["status"], found["response_status"]) == ("succeeded", 204), found
    [(headers, _)] = outside.received
    assert headers["host"] == f"hooks.example.com:{inside_port}"  # the name, not the address
    assert network.lookups == ["hooks.example.com"]
    assert network.connections == [(PUBLIC, inside_port)]


def test_https_names_the_url_host_in_sni_host_header_and_certificate_check(
    app: Flask,
    api: Api,
    network: FakeNetwork,
    dispatcher: Dispatcher,
    receivers: Callable[..., Any],
    tmp_path: Path,
) -> None:
    ca_file, issued = certificates(tmp_path, "hooks.example.com", "other.example.com")

    def tls(name: str) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*issued[name])
        return context

    dispatcher.sender = WebhookSender(ssl_context=ssl.create_default_context(cafile=str(ca_file)))
    network.names["hooks.example.com"] = ["127.0.0.1"]
    good = receivers(tls=tls("hooks.example.com"), host="hooks.example.com")
    hook = api.post("/v1/webhooks", {"url": good.url}).get_json()
    found = send_one(app, api, dispatcher, hook["id"])
    assert (found["status"], found["response_status"], found["error"]) == ("succeeded", 204, None)
    assert good.server_names == ["hooks.example.com"]
    assert good.received[0][0]["host"] == good.url.split("/")[2]

    wrong = receivers(tls=tls("other.example.com"), host="hooks.example.com")  # a certificate for another name
    hook = api.post("/v1/webhooks", {"url": wrong.url}).get_json()
    found = send_one(app, api, dispatcher, hook["id"])
    assert (found["status"], found["response_status"]) == ("pending", None)
    assert found["error"] == "tls: the certificate is not valid for the host"
    assert wrong.received == []


def test_a_redirect_is_an_answer_never_followed(
    app: Flask, api: Api, dispatcher: Dispatcher, receivers: Callable[..., Any]
) -> None:
    elsewhere = receivers()
    redirecting = receivers(status=302)
    redirecting.headers["Location"] = elsewhere.url
    hook = api.post("/v1/webhooks", {"url": redirecting.url}).get_json()
    found = send_one(app, api, dispatcher, hook["id"])
    assert (found["status"], found["response_status"], found["error"]) == ("pending", 302, "HTTP 302")
    assert len(redirecting.received) == 1
    assert elsewhere.received == []


def _trickle(start: bytes) -> Callable[[RawReceiver, socket.socket], None]:
    """An answer that writes `start`, then one byte every 0.2 s for up to 10 s (so a sender without a
    deadline is held that long rather than for ever)."""

    def answer(receiver: RawReceiver, connection: socket.socket) -> None:
        receiver.write(connection, start)
        until = time.monotonic() + 10
        while time.monotonic() < until and not receiver.closed.wait(0.2):
            receiver.write(connection, b"a")

    return answer


@pytest.mark.parametrize(
    ("start", "outcome"),
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Slow: ", ("pending", None, "timeout: no answer within 1 s"), id="head"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", ("succeeded", 200, None), id="body"),
        # https: a TLS handshake record of 16 KiB announced, its bytes trickled
        pytest.param(b"\x16\x03\x03\x40\x00", ("pending", None, "timeout: no answer within 1 s"), id="tls-handshake"),
    ],
)
def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_one_deadline(
    app: Flask,
    api: Api,
    configure: Callable[..., Settings],
    dispatcher: Dispatcher,
    receivers: Callable[..., Any],
    start: bytes,
    outcome: tuple[Any, ...],
) -> None:
    configure(WEBHOOK_TIMEOUT_SECONDS=1.0)
    tls = start.startswith(b"\x16")
    slow = receivers(_trickle(start), reads_request=not tls)
    hook = api.post("/v1/webhooks", {"url": slow.url.replace("http:", "https:") if tls else slow.url}).get_json()
    began = time.monotonic()
    found = send_one(app, api, dispatcher, hook["id"])
    took = time.monotonic() - began
    assert (found["status"], found["response_status"], found["error"]) == outcome
    assert took < 1.0 + 2.0, f"the attempt took {took:.1f} s"
    wait_until(slow.hung_up.is_set, 5, what="the sender to hang up")  # the connection was let go too


def test_at_most_64_kib_of_an_answer_are_read(
    app: Flask, api: Api, dispatcher: Dispatcher, receivers: Callable[..., Any]
) -> None:
    total = 32 * 1024 * 1024

    def endless(receiver: RawReceiver, connection: socket.socket) -> None:
        receiver.write(connection, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        while receiver.sent < total:
            receiver.write(connection, b"x" * 65536)

    big = receivers(endless)
    hook = api.post("/v1/webhooks", {"url": big.url}).get_json()
    found = send_one(app, api, dispatcher, hook["id"])
    assert (found["status"], found["response_status"], found["error"]) == ("succeeded", 200, None)
    wait_until(big.hung_up.is_set, 10, what="the sender to hang up")
    assert big.sent < total // 2  # what the kernel buffers took, not what the sender read

    with app.app_context():
        answer = WebhookSender().post(
            big.url, body=b"{}", headers={"Content-Type": "application/json"}, settings=current_settings().webhooks
        )
    assert (answer.status, len(answer.body)) == (200, 64 * 1024)


def test_a_target_that_resolves_to_a_private_address_is_refused_and_the_log_says_only_that(
    app: Flask,
    api: Api,
    configure: Callable[..., Settings],
    network: FakeNetwork,
    dispatcher: Dispatcher,
    receivers: Callable[..., Any],
) -> None:
    configure(WEBHOOK_ALLOW_PRIVATE_TARGETS=False)
    receiver = receivers()
    port = int(receiver.url.split(":")[2].split("/")[0])
    network.routes[PUBLIC] = port
    network.names["hooks.example.com"] = [PUBLIC]
    network.names["mixed.example.com"] = [f"{PUBLIC} 10.20.30.40"]
    refused = assert_error(api.post("/v1/webhooks", {"url": "http://mixed.example.com/x"}), 400, "validation_error")
    assert "10.20.30.40" not in str(refused)  # every address is checked; none is told
    hook = api.post("/v1/webhooks", {"url": f"http://hooks.example.com:{port}/alerts"}).get_json()
    assert send_one(app, api, dispatcher, hook["id"])["status"] == "succeeded"

    for answer in ("127.0.0.1", "10.20.30.40", f"{PUBLIC} 192.168.1.1", "::1", "169.254.169.254"):
        network.names["hooks.example.com"] = [answer]  # the name now points inside
        found = send_one(app, api, dispatcher, hook["id"])
        assert (found["status"], found["response_status"]) == ("pending", None)
        assert found["error"] == "refused: the target resolves to a private address"
    assert len(receiver.received) == 1  # nothing more was sent
    assert network.connections == [(PUBLIC, port)]


def test_a_receivers_huge_garbage_answer_is_logged_as_a_short_reason_not_as_its_text(
    app: Flask, api: Api, dispatcher: Dispatcher, receivers: Callable[..., Any]
) -> None:
    def garbage(receiver: RawReceiver, connection: socket.socket) -> None:
        receiver.write(connection, b"HTTP/1.1 " + b"\x1b[31mforged\nline " * 3000 + b"\r\n\r\n")

    liar = receivers(garbage)
    hook = api.post("/v1/webhooks", {"url": liar.url}).get_json()
    found = send_one(app, api, dispatcher, hook["id"])
    assert (found["status"], found["response_status"], found["error"]) == ("pending", None, "not an HTTP answer")
