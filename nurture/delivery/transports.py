"""Transports hand a built message to the world: an SMTP server, a directory, or memory.

Every transport is a context manager. Inside ``with transport:`` all sends share one
connection (a batch); a send outside any ``with`` opens and closes its own. A failed send raises
``TransportError`` saying whether retrying can help; the caller decides what to do about it.
"""

from __future__ import annotations

import email
import email.policy
import functools
import os
import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self

from nurture.delivery.headers import normalize_address
from nurture.delivery.mime import serialize

Security = Literal["none", "starttls", "ssl"]


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
