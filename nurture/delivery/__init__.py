"""The delivery edge: build MIME messages (``mime``) and hand them to a transport (``transports``).

Building is separate from sending: ``build_message`` is a pure function of an ``OutgoingEmail``;
a ``Transport`` only moves bytes and says, through ``TransportError.permanent``, whether a
failure is worth retrying.
"""

from nurture.delivery.mime import OutgoingEmail, build_message, make_message_id, serialize
from nurture.delivery.transports import (
    MemoryTransport,
    OutboxTransport,
    SentMessage,
    SmtpTransport,
    Transport,
    TransportError,
    make_transport,
)

__all__ = [
    "MemoryTransport",
    "OutboxTransport",
    "OutgoingEmail",
    "SentMessage",
    "SmtpTransport",
    "Transport",
    "TransportError",
    "build_message",
    "make_message_id",
    "make_transport",
    "serialize",
]
