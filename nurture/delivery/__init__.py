"""Delivery: compose an email for a lead, build its MIME message and hand it to a transport.

Building is separate from sending: ``build_message`` is a pure function of an ``OutgoingEmail``;
a ``Transport`` only moves bytes and says, through ``TransportError.permanent``, whether a
failure is worth retrying."""
