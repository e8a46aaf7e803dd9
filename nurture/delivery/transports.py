"""Transports hand a built message to the world: an SMTP server, a directory, or memory.

Every transport is a context manager. Inside ``with transport:`` all sends share one
connection (a batch); a send outside any ``with`` opens and closes its own. A failed send raises
``TransportError`` saying whether retrying can help; the caller decides what to do about it.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import functools
import os
import re
import smtplib
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self

from nurture.delivery.mime import normalize_address, serialize
from nurture.settings import Settings

Security = Literal["none", "starttls", "ssl"]

# SMTP reply codes a transaction command may get back and still be fine.
_MAIL_OK = (250,)
_RCPT_OK = (250, 251)
_DATA_OK = (250,)
_START_DATA = 354  # "start mail input"
# 421: the server is closing the channel; the connection is gone whatever the command was.
_CLOSING = 421


class TransportError(Exception):
    """A send failed. ``permanent``: retrying this message to this recipient cannot succeed."""

    def __init__(self, message: str, *, permanent: bool = False, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code

    def __repr__(self) -> str:
        return f"TransportError({self.message!r}, permanent={self.permanent}, code={self.code})"

    def __reduce__(self) -> tuple[object, tuple[str]]:
        # Keyword-only arguments are lost by Exception's default pickling (Celery pickles
        # exceptions across processes).
        rebuild = functools.partial(TransportError, permanent=self.permanent, code=self.code)
        return rebuild, (self.message,)


class Transport(Protocol):
    """What the sender needs: a batch context and ``send``."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def send(self, msg: EmailMessage, *, envelope_from: str, to: str) -> None:
        """Deliver ``msg`` to ``to``; raise TransportError on failure."""
        ...


class BatchTransport:
    """Shared batch bookkeeping: nested open()/close() (or ``with``) keep one batch open."""

    def __init__(self) -> None:
        self._depth = 0

    @property
    def in_batch(self) -> bool:
        """True between the outermost open() and its close()."""
        return self._depth > 0

    def open(self) -> None:
        """Start a batch: later sends reuse one connection until the matching close()."""
        self._depth += 1

    def close(self) -> None:
        """End a batch; the outermost close() releases the connection."""
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0:
            self._release()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _release(self) -> None:
        """Drop whatever the batch held (a connection); subclasses override."""


def check_envelope(envelope_from: str, to: str) -> tuple[str, str]:
    """Return the envelope addresses with IDNA domains; reject empty or multi-line ones."""
    for place, value in (("envelope_from", envelope_from), ("to", to)):
        if "\r" in value or "\n" in value or "<" in value or ">" in value:
            raise ValueError(f"{place}: {value!r} must be a bare address without <>, CR or LF")
    return normalize_address(envelope_from, "envelope_from"), normalize_address(to, "to")


# --------------------------------------------------------------------------------------- SMTP


class SmtpTransport(BatchTransport):
    """Send over SMTP with smtplib; one connection per batch, opened at the first send.

    ``permanent`` is True only for a 5xx reply to RCPT TO (the recipient bounced) or to DATA
    (this message was refused). Everything else is temporary, 5xx included: connection, TLS,
    EHLO, AUTH and MAIL FROM refusals (530 "authentication required", 550 "sender rejected")
    are about our side, not the lead, would hit every message alike, and an operator can fix
    them before the retries run out. When the server offers PIPELINING (RFC 2920), a message
    costs two round trips instead of four (see ``_pipelined``). Not thread-safe: use one
    instance per worker thread.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str = "",
        password: str = "",
        security: Security = "none",
        timeout: float = 30.0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        super().__init__()
        if security not in ("none", "starttls", "ssl"):
            raise ValueError(f"security must be 'none', 'starttls' or 'ssl', got {security!r}")
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.security: Security = security
        self.timeout = timeout
        self._ssl_context = ssl_context
        self._local_hostname = local_hostname
        self._conn: smtplib.SMTP | None = None
        self.connections_opened = 0
        self.pipelined_sends = 0  # sends that used PIPELINING (the server offered it)

    def __repr__(self) -> str:
        return (
            f"SmtpTransport(host={self.host!r}, port={self.port}, security={self.security!r}, "
            f"username={self.username!r})"
        )

    def send(self, msg: EmailMessage, *, envelope_from: str, to: str) -> None:
        """Deliver ``msg`` to ``to``; raise TransportError (permanent or not) on failure."""
        envelope_from, to = check_envelope(envelope_from, to)
        data = serialize(msg)
        if self.in_batch:
            self._send_in_batch(envelope_from, to, data)
            return
        with self:
            self._transaction(self._connection(), envelope_from, to, data, fresh=True)

    def _send_in_batch(self, envelope_from: str, to: str, data: bytes) -> None:
        fresh = self._conn is None
        try:
            self._transaction(self._connection(), envelope_from, to, data, fresh=fresh)
        except _StaleConnection:
            # The server dropped the idle batch connection before our MAIL FROM: nothing was
            # sent, so one more try on a new connection cannot deliver twice.
            self._transaction(self._connection(), envelope_from, to, data, fresh=True)

    def _connection(self) -> smtplib.SMTP:
        if self._conn is None:
            self._conn = self._connect()
            self.connections_opened += 1
        return self._conn

    def _connect(self) -> smtplib.SMTP:
        where = f"{self.host}:{self.port}"
        conn: smtplib.SMTP | None = None
        try:
            conn = self._dial()
            conn.ehlo_or_helo_if_needed()
            if self.security == "starttls":
                conn.starttls(context=self._context())
                conn.ehlo()
            if self.username:
                conn.login(self.username, self._password)
            return conn
        except smtplib.SMTPResponseException as exc:
            _quietly_close(conn)
            text = _reply_text(exc.smtp_error)
            raise TransportError(
                f"SMTP {where}: setup refused: {exc.smtp_code} {text}", code=exc.smtp_code
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            _quietly_close(conn)
            raise TransportError(f"SMTP {where}: cannot connect: {_describe(exc)}") from exc

    def _dial(self) -> smtplib.SMTP:
        if self.security == "ssl":
            return smtplib.SMTP_SSL(
                self.host,
                self.port,
                local_hostname=self._local_hostname,
                timeout=self.timeout,
                context=self._context(),
            )
        return smtplib.SMTP(
            self.host, self.port, local_hostname=self._local_hostname, timeout=self.timeout
        )

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def _transaction(
        self, conn: smtplib.SMTP, envelope_from: str, to: str, data: bytes, *, fresh: bool
    ) -> None:
        if conn.does_esmtp and conn.has_extn("pipelining"):
            self._pipelined(conn, envelope_from, to, data, fresh=fresh)
            self.pipelined_sends += 1
            return
        try:
            reply = conn.mail(envelope_from)
        except (smtplib.SMTPException, OSError) as exc:
            self._release()
            if not fresh and isinstance(exc, smtplib.SMTPServerDisconnected):
                raise _StaleConnection(str(exc)) from exc
            raise self._error("MAIL FROM", exc) from exc
        if reply[0] == _CLOSING and not fresh:
            self._release()
            raise _StaleConnection(_reply_text(reply[1]))
        self._expect(conn, "MAIL FROM", reply, _MAIL_OK, bounce=False)
        rcpt = self._command(lambda: conn.rcpt(to))
        self._expect(conn, f"RCPT TO <{to}>", rcpt, _RCPT_OK, bounce=True)
        self._expect(conn, "DATA", self._command(lambda: conn.data(data)), _DATA_OK, bounce=True)

    def _pipelined(
        self, conn: smtplib.SMTP, envelope_from: str, to: str, data: bytes, *, fresh: bool
    ) -> None:
        """RFC 2920: MAIL, RCPT and DATA go in one write and their replies are read in order,
        then the content: two round trips per message instead of four. Every reply is read
        before any refusal is acted on, so the connection stays in step; the outcomes and
        errors are those of the one-command-at-a-time exchange."""
        commands = f"MAIL FROM:{smtplib.quoteaddr(envelope_from)}\r\n"
        commands += f"RCPT TO:{smtplib.quoteaddr(to)}\r\nDATA\r\n"
        try:
            conn.send(commands.encode("ascii"))
            mail = conn.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            self._release()
            if not fresh and isinstance(exc, smtplib.SMTPServerDisconnected):
                raise _StaleConnection(str(exc)) from exc
            raise self._error("MAIL FROM", exc) from exc
        if mail[0] == _CLOSING:  # the server is going away: no further reply will come
            self._release()
            if not fresh:
                raise _StaleConnection(_reply_text(mail[1]))
            self._expect(conn, "MAIL FROM", mail, _MAIL_OK, bounce=False)
        rcpt = self._command(conn.getreply)
        start = self._command(conn.getreply)
        refused = mail[0] not in _MAIL_OK or rcpt[0] not in _RCPT_OK
        if start[0] == _START_DATA and refused:  # DATA taken anyway: end the empty message
            self._command(lambda: _send_and_reply(conn, b".\r\n"))
        self._expect(conn, "MAIL FROM", mail, _MAIL_OK, bounce=False)
        self._expect(conn, f"RCPT TO <{to}>", rcpt, _RCPT_OK, bounce=True)
        self._expect(conn, "DATA", start, (_START_DATA,), bounce=True)
        done = self._command(lambda: _send_and_reply(conn, _content(data)))
        self._expect(conn, "DATA", done, _DATA_OK, bounce=True)

    def _command(self, command: Callable[[], tuple[int, bytes]]) -> tuple[int, bytes]:
        try:
            return command()
        except smtplib.SMTPResponseException as exc:  # DATA refused before the content
            return exc.smtp_code, _as_bytes(exc.smtp_error)
        except (smtplib.SMTPException, OSError) as exc:
            self._release()
            raise self._error("transaction", exc) from exc

    def _expect(
        self,
        conn: smtplib.SMTP,
        what: str,
        reply: tuple[int, bytes],
        ok: tuple[int, ...],
        *,
        bounce: bool,
    ) -> None:
        """Raise TransportError unless ``reply`` is OK; ``bounce``: a 5xx here is permanent."""
        code, text = reply
        if code in ok:
            return
        self._reset(conn, code)
        raise TransportError(
            f"SMTP {self.host}:{self.port}: {what} refused: {code} {_reply_text(text)}",
            permanent=bounce and 500 <= code < 600,
            code=code,
        )

    def _reset(self, conn: smtplib.SMTP, code: int) -> None:
        """After a refusal, leave the connection ready for the next send, or drop it."""
        if code == _CLOSING:
            self._release()
            return
        try:
            if conn.rset()[0] == 250:
                return
        except (smtplib.SMTPException, OSError):
            pass
        self._release()

    def _error(self, stage: str, exc: BaseException) -> TransportError:
        return TransportError(f"SMTP {self.host}:{self.port}: {stage} failed: {_describe(exc)}")

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            _quietly_close(conn)


def _send_and_reply(conn: smtplib.SMTP, payload: bytes) -> tuple[int, bytes]:
    conn.send(payload)
    return conn.getreply()


# A line starting with "." is sent as ".." (RFC 5321 4.5.2), as smtplib's data() does.
_LEADING_DOT = re.compile(rb"(?m)^\.")


def _content(data: bytes) -> bytes:
    """The message content as sent after DATA: dot-stuffed, ending with CRLF "." CRLF."""
    stuffed = _LEADING_DOT.sub(b"..", data)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


class _StaleConnection(Exception):
    """A reused connection turned out dead before anything was sent on it."""


def _quietly_close(conn: smtplib.SMTP | None) -> None:
    if conn is not None:
        with contextlib.suppress(OSError):
            conn.close()


def _reply_text(text: bytes | str) -> str:
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else text


def _as_bytes(text: bytes | str) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8", "replace")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ------------------------------------------------------------------------------------- Outbox


_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._@+-]+")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class OutboxTransport(BatchTransport):
    """Write each message to ``<directory>/<UTC timestamp>-<message-id>.eml`` (embedded mode).

    The file is the wire bytes (CRLF) preceded by ``Return-Path`` and ``Delivered-To`` lines
    carrying the envelope, as a mail server's delivery agent would add them. Written to a
    temporary file first and renamed, so a reader never sees half a message.
    """

    def __init__(self, directory: Path, *, clock: Callable[[], datetime] = _utc_now) -> None:
        super().__init__()
        self.directory = Path(directory)
        self._clock = clock

    def send(self, msg: EmailMessage, *, envelope_from: str, to: str) -> None:
        """Write ``msg`` to the outbox directory; raise TransportError if the disk refuses."""
        envelope_from, to = check_envelope(envelope_from, to)
        envelope = f"Return-Path: <{envelope_from}>\r\nDelivered-To: {to}\r\n".encode()
        path = self.directory / self.filename(msg)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, envelope + serialize(msg))
        except OSError as exc:
            message = f"outbox {self.directory}: cannot write {path.name}: {exc}"
            raise TransportError(message) from exc

    def filename(self, msg: EmailMessage) -> str:
        """Return the file name for ``msg``: sortable UTC time, then the sanitized Message-ID."""
        stamp = self._clock().astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        message_id = str(msg.get("Message-ID", "")).strip().strip("<>")
        safe = _UNSAFE_FILENAME.sub("_", message_id)[:120].strip("._") or "no-message-id"
        return f"{stamp}-{safe}.eml"


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".eml.tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------- Memory


@dataclass(frozen=True)
class SentMessage:
    """One message a MemoryTransport accepted, as the recipient would parse it."""

    message: EmailMessage
    envelope_from: str
    to: str
    raw: bytes


class MemoryTransport(BatchTransport):
    """Keep messages in ``sent`` instead of sending them; tests script failures.

    Shipped in the package (like dramatiq's stub broker) so everything above the transport is
    testable without SMTP. Each accepted message is serialized and parsed back, so tests see
    exactly what a mail client would.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[SentMessage] = []
        self.attempts = 0
        self.connections_opened = 0
        self._connected = False
        self._failures: list[Exception] = []
        self._recipient_failures: dict[str, Exception] = {}
        self._lock = threading.Lock()

    def fail_next(self, error: Exception, *, times: int = 1) -> None:
        """Make the next ``times`` sends raise ``error`` (queued after earlier scripts); any
        exception, to test what the caller does with one that is not a TransportError."""
        with self._lock:
            self._failures.extend([error] * times)

    def fail_recipient(self, address: str, error: Exception) -> None:
        """Make every send to ``address`` raise ``error`` (e.g. a permanent 550 bounce)."""
        with self._lock:
            self._recipient_failures[address.lower()] = error

    @property
    def messages(self) -> list[EmailMessage]:
        """The accepted messages, in order."""
        return [sent.message for sent in self.sent]

    def send(self, msg: EmailMessage, *, envelope_from: str, to: str) -> None:
        """Record ``msg``, or raise the scripted TransportError."""
        envelope_from, to = check_envelope(envelope_from, to)
        raw = serialize(msg)
        with self._lock:
            self.attempts += 1
            if not self._connected:
                self.connections_opened += 1
                self._connected = self.in_batch
            error = self._recipient_failures.get(to.lower())
            if error is None and self._failures:
                error = self._failures.pop(0)
            if error is not None:
                raise error
            parsed = email.message_from_bytes(raw, policy=email.policy.default)
            self.sent.append(SentMessage(parsed, envelope_from, to, raw))

    def _release(self) -> None:
        self._connected = False


# ------------------------------------------------------------------------------------ Factory


def make_transport(settings: Settings) -> Transport:
    """Build the transport ``settings.transport`` names (outbox, smtp or memory)."""
    if settings.transport == "outbox":
        return OutboxTransport(settings.outbox_dir)
    if settings.transport == "smtp":
        return SmtpTransport(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_username,
            settings.smtp_password,
            settings.smtp_security,
            settings.smtp_timeout,
        )
    if settings.transport == "memory":
        return MemoryTransport()
    raise ValueError(f"settings.transport: unknown transport {settings.transport!r}")
