"""A real SMTP server (aiosmtpd) on 127.0.0.1 for delivery tests, with scriptable replies.

Use the ``smtp_sink`` fixture (``from smtp_server import smtp_sink``, or list this module in
``pytest_plugins``), or ``with SmtpSink(...) as sink:`` for TLS and AUTH variants::

    sink.respond_to_rcpt("gone@example.com", "550 5.1.1 no such user")
    sink.respond_to_data("451 4.3.0 try later", times=1)
    ...send...
    assert sink.connections == 1
    assert sink.messages[0].message["Subject"] == "..."
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Literal

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"
# The greeting name; set explicitly because aiosmtpd's default (getfqdn) can block on DNS.
SERVER_NAME = "sink.nurture.test"

Tls = Literal["none", "starttls", "ssl"]


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the sink accepted, with its envelope and the connection that carried it."""

    envelope_from: str
    recipients: tuple[str, ...]
    raw: bytes
    connection: int

    @property
    def message(self) -> EmailMessage:
        """The message as a mail client parses it."""
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class TlsPair:
    """A throwaway CA: the server's context and a client context that trusts it."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def make_tls_pair() -> TlsPair:
    """Issue a certificate for 127.0.0.1 from a fresh CA (trustme)."""
    ca = trustme.CA()
    cert = ca.issue_cert(HOST, "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return TlsPair(server=server, client=client)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class _Script:
    """Scripted replies; consumed in the server thread, set from the test thread."""

    mail: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    rcpt: dict[str, str] = field(default_factory=dict)
    drops_in_data: int = 0


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 and a random free port that records what it receives."""

    def __init__(
        self,
        *,
        tls: Tls = "none",
        server_context: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
        idle_timeout: float = 300.0,
        pipelining: bool = False,
    ) -> None:
        if tls != "none" and server_context is None:
            raise ValueError(f"tls={tls!r} needs a server_context (see make_tls_pair)")
        self.host = HOST
        self.port = 0
        self.tls: Tls = tls
        self.messages: list[ReceivedMessage] = []
        self.connections = 0
        self.rsets = 0
        self.data_attempts = 0
        self.logins: list[str] = []
        self._server_context = server_context
        self._credentials = credentials
        self._idle_timeout = idle_timeout
        # Advertise PIPELINING (RFC 2920); aiosmtpd reads pipelined commands in order anyway.
        self.pipelining = pipelining
        self._script = _Script()
        self._live: list[SMTP] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    # -------------------------------------------------------------- scripting (test thread)

    def respond_to_rcpt(self, address: str, response: str) -> None:
        """Answer every RCPT TO ``address`` with ``response`` (e.g. "550 5.1.1 no such user")."""
        with self._lock:
            self._script.rcpt[address.lower()] = response

    def respond_to_mail(self, response: str, *, times: int = 1) -> None:
        """Answer the next ``times`` MAIL FROM commands with ``response``."""
        with self._lock:
            self._script.mail.extend([response] * times)

    def respond_to_data(self, response: str, *, times: int = 1) -> None:
        """Answer the next ``times`` messages (after their content) with ``response``."""
        with self._lock:
            self._script.data.extend([response] * times)

    def drop_during_data(self, *, times: int = 1) -> None:
        """Close the connection after receiving the next ``times`` messages, without a reply."""
        with self._lock:
            self._script.drops_in_data += times

    def drop_connections(self) -> None:
        """Close every open client connection from the server side, silently (idle drop)."""
        assert self._controller is not None, "sink not started"

        async def drop() -> None:
            for server in self._live:
                if server.transport is not None:
                    server.transport.close()
            self._live.clear()
            await asyncio.sleep(0.05)  # let the FIN reach the client

        asyncio.run_coroutine_threadsafe(drop(), self._controller.loop).result(timeout=5)

    # ------------------------------------------------------------------------ lifecycle

    def start(self) -> SmtpSink:
        """Listen on 127.0.0.1 and a free port (retrying if another process grabbed it)."""
        for attempt in range(5):
            self.port = free_port()
            self._controller = self._make_controller()
            try:
                self._controller.start()
                return self
            except OSError:
                self._controller = None
                if attempt == 4:
                    raise
        return self

    def stop(self) -> None:
        """Stop the server thread; safe to call twice."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _make_controller(self) -> Controller:
        options: dict[str, Any] = {
            "hostname": HOST,  # the bind address: never the default "::1"/all interfaces
            "port": self.port,
            "server_hostname": SERVER_NAME,
            "timeout": self._idle_timeout,
        }
        if self.tls == "ssl":
            options["ssl_context"] = self._server_context
        if self.tls == "starttls":
            options["tls_context"] = self._server_context
        if self._credentials is not None:
            options["authenticator"] = self._authenticate
            # With implicit TLS aiosmtpd does not know the channel is encrypted.
            options["auth_require_tls"] = self.tls == "starttls"
        return Controller(_Handler(self), **options)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert self._credentials is not None
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        ok = (login, password) == self._credentials
        if ok:
            self.logins.append(login)
        return AuthResult(success=ok, handled=False)

    # ------------------------------------------------------------- hooks (server thread)

    def _greeted(self, server: SMTP) -> None:
        # One SMTP protocol object per TCP connection; EHLO again after STARTTLS is the same one.
        if getattr(server, "sink_connection", None) is None:
            with self._lock:
                self.connections += 1
                server.sink_connection = self.connections  # type: ignore[attr-defined]
            self._live.append(server)

    def _next(self, queue: list[str]) -> str | None:
        with self._lock:
            return queue.pop(0) if queue else None

    def _rcpt_response(self, address: str) -> str | None:
        with self._lock:
            return self._script.rcpt.get(address.lower())

    def _take_drop(self) -> bool:
        with self._lock:
            if self._script.drops_in_data == 0:
                return False
            self._script.drops_in_data -= 1
            return True


class _Handler:
    """aiosmtpd handler: each hook records or answers as the sink's script says."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.sink._greeted(server)
        session.host_name = hostname
        if self.sink.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        self.sink._greeted(server)
        session.host_name = hostname
        return f"250 {SERVER_NAME}"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.sink._lock:
            self.sink.rsets += 1
        return "250 OK"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        scripted = self.sink._next(self.sink._script.mail)
        if scripted is not None:
            return scripted
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        scripted = self.sink._rcpt_response(address)
        if scripted is not None:
            return scripted
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        sink = self.sink
        with sink._lock:
            sink.data_attempts += 1
        if sink._take_drop():
            assert server.transport is not None
            server.transport.close()
            return "421 4.4.2 dropped"  # never reaches the client: the socket is closed
        scripted = sink._next(sink._script.data)
        if scripted is not None:
            return scripted
        raw = envelope.original_content or b""
        received = ReceivedMessage(
            envelope_from=envelope.mail_from or "",
            recipients=tuple(envelope.rcpt_tos),
            raw=raw if isinstance(raw, bytes) else raw.encode(),
            connection=getattr(server, "sink_connection", 0),
        )
        with sink._lock:
            sink.messages.append(received)
        return "250 2.0.0 OK queued"


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A started plain-SMTP sink on 127.0.0.1, stopped after the test."""
    with SmtpSink() as sink:
        yield sink
