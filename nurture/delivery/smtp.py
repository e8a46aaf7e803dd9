"""The SMTP transport: one connection per batch, STARTTLS or implicit TLS, each reply checked,
and every failure classified as worth retrying (4xx, a dropped connection) or not (5xx)."""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage

from nurture.delivery.mime import serialize
from nurture.delivery.transports import BatchTransport, Security, TransportError, check_envelope

# SMTP reply codes a transaction command may get back and still be fine.
_MAIL_OK = (250,)


_RCPT_OK = (250, 251)


_DATA_OK = (250,)


_START_DATA = 354  # "start mail input"


# 421: the server is closing the channel; the connection is gone whatever the command was.
_CLOSING = 421


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
