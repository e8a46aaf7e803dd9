"""Publishing the scoring and lifecycle rules to the database, and reading the latest.

Like sequences (:mod:`nurture.sequences.catalog`): each version is stored once; the latest
is the most recently published. Publishing the same content again changes nothing;
publishing content published before (a revert) makes that version the latest again."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nurture.db.models import RuleVersion
from nurture.program.program import RulesDocument

# "Latest" is the most recently published version; ties in loaded_at would make it ambiguous.
_TICK = timedelta(microseconds=1)


def publish_rules(session: Session, documents: Sequence[RulesDocument], now: datetime) -> int:
    """Make each document the latest of its kind; return how many were new versions."""
    stored = 0
    for document in documents:
        stored += _publish(session, document, now)
    return stored


def _publish(session: Session, document: RulesDocument, now: datetime) -> bool:
    latest = latest_row(session, document.kind)
    if latest is not None and latest.version == document.version:
        return False
    # Strictly after the current latest, even if this machine's clock is behind.
    loaded_at = max(now, latest.loaded_at + _TICK) if latest else now
    existing = session.scalar(
        select(RuleVersion.id).where(
            RuleVersion.kind == document.kind, RuleVersion.version == document.version
        )
    )
    if existing is not None:
        session.execute(
            update(RuleVersion)
            .where(RuleVersion.id == existing)
            .values(loaded_at=loaded_at, source_path=document.path[:500])
        )
        return False
    row = RuleVersion(
        kind=document.kind,
        version=document.version,
        document=document.document,
        source_path=document.path[:500],
        loaded_at=loaded_at,
    )
    try:
        # A savepoint: another process publishing the same version at once is not an error.
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True


def latest_row(session: Session, kind: str) -> RuleVersion | None:
    """The most recently published version of ``kind`` (None: never published)."""
    query = (
        select(RuleVersion)
        .where(RuleVersion.kind == kind)
        .order_by(RuleVersion.loaded_at.desc(), RuleVersion.id.desc())
        .limit(1)
    )
    return session.scalar(query)


def latest_versions(session: Session) -> dict[str, str]:
    """The version in force of each published kind: one cheap query, for refreshes."""
    newest = (
        select(RuleVersion.kind, func.max(RuleVersion.loaded_at).label("at"))
        .group_by(RuleVersion.kind)
        .subquery()
    )
    rows = session.execute(
        select(RuleVersion.kind, RuleVersion.version)
        .join(newest, (newest.c.kind == RuleVersion.kind) & (newest.c.at == RuleVersion.loaded_at))
        .order_by(RuleVersion.id)
    )
    return {kind: version for kind, version in rows}
