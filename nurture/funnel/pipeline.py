"""What happens to stored events, in the caller's transaction: scoring, then the funnel.
Events are stored before they get here; this part is derived and can always be run again
(``nurture events process``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from nurture.db.batches import chunks, one_of
from nurture.db.models import Event
from nurture.funnel.funnel import Funnel
from nurture.funnel.loading import LifecycleConfigError
from nurture.funnel.promotion import evaluate_leads
from nurture.scoring.ledger import StoredEvent, score_claimed, score_events

log = logging.getLogger(__name__)


def process_events(
    session: Session, event_ids: Sequence[int], now: datetime, funnel: Funnel
) -> None:
    """Score the events, then evaluate the leads they touched."""
    if not event_ids:
        return
    affected = score_events(session, event_ids, now, rules=funnel.rules)
    log.debug("scored %d events of %d leads", len(event_ids), len(affected))
    evaluate_leads(session, sorted(affected), now, _evaluable(funnel))


def process_stored(
    session: Session, events: Sequence[StoredEvent], now: datetime, funnel: Funnel
) -> None:
    """Process events stored in this transaction with ``scored_at`` already set: no claim,
    no second commit. Processing runs in a savepoint: when it fails, the events stay stored
    and are marked unscored again (``process_unscored`` catches them up), as when
    processing after the commit fails."""
    if not events:
        return
    try:
        with session.begin_nested():
            affected = score_claimed(session, events, now, rules=funnel.rules)
            evaluate_leads(session, sorted(affected), now, _evaluable(funnel))
    except Exception:  # stored is what counts
        log.exception("processing %d stored events failed; they stay unscored", len(events))
        for chunk in chunks(sorted(event.id for event in events)):
            session.execute(
                update(Event)
                .where(one_of(session, Event.id, chunk))
                .values(scored_at=None)
                .execution_options(synchronize_session=False)
            )


def _evaluable(funnel: Funnel) -> Funnel | None:
    """The funnel leads are evaluated with; None when lifecycle.yaml has errors (scoring
    stands; `nurture validate` says why)."""
    try:
        funnel.spec  # noqa: B018 (raises when lifecycle.yaml never loaded)
    except LifecycleConfigError as exc:
        log.error("lifecycle.yaml has errors, leads not evaluated: %s", exc)
        return None
    return funnel
