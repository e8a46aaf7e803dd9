"""The links of each sent message, stored before the mail leaves: the click redirect goes only
to a URL stored for that message and position."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import (
    delete,
    insert,
)
from sqlalchemy.orm import Session, sessionmaker

from nurture.db.models import Link
from nurture.db.session import transaction
from nurture.tracking.links import TrackedLink


def save_links(
    sessions: sessionmaker[Session], links: Mapping[int, Sequence[TrackedLink]], now: datetime
) -> None:
    """Store the links of messages about to be sent, replacing those of an earlier attempt,
    so a click that comes the moment the mail arrives finds its URL."""
    if not links:
        return
    rows = [
        {"message_id": message_id, "position": link.position, "url": link.url, "created_at": now}
        for message_id, message_links in links.items()
        for link in message_links
    ]
    with transaction(sessions) as session:
        session.execute(delete(Link).where(Link.message_id.in_(list(links))))
        if rows:
            session.execute(insert(Link), rows)
