"""Publishing sequences to the database, and the catalog of every version leads are in.

A sequence's version is derived from its content (:func:`nurture.sequences.versions.spec_version`).
Publishing stores each version once; leads already enrolled finish the version they started,
unless the new version says ``versioning: {on_change: move}``: then active enrollments on
older versions continue in the new one at the step with the same id (or the one
``step_map`` names). An enrollment whose step has no counterpart stays where it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import CursorResult, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nurture.db.models import Enrollment, SequenceVersion
from nurture.sequences.spec import SequenceSpec
from nurture.sequences.versions import LoadedSequence, spec_document, spec_from_document

log = logging.getLogger(__name__)

# "Latest" is the most recently published version; ties in loaded_at would make it ambiguous.
_TICK = timedelta(microseconds=1)


class UnknownSequenceVersion(LookupError):
    """A (key, version) that is neither loaded nor stored (or no longer readable)."""


@dataclass(frozen=True)
class MovedGroup:
    """Active enrollments moved to a new version, from one step of one old version."""

    sequence_key: str
    from_version: str
    to_version: str
    from_step: str
    to_step: str
    count: int


@dataclass(frozen=True)
class LeftBehind:
    """Active enrollments a ``move`` sequence could not move (they finish their version)."""

    sequence_key: str
    version: str
    step: str
    count: int
    reason: str


@dataclass
class PublishReport:
    """What a publish changed: versions stored, enrollments moved and left behind."""

    stored: list[tuple[str, str]] = field(default_factory=list)
    moved: list[MovedGroup] = field(default_factory=list)
    left: list[LeftBehind] = field(default_factory=list)

    @property
    def moved_count(self) -> int:
        return sum(g.count for g in self.moved)


class Catalog:
    """The latest version of each sequence, plus any stored version by (key, version)."""

    def __init__(
        self,
        latest: Iterable[LoadedSequence],
        stored: Mapping[tuple[str, str], SequenceSpec] | None = None,
        report: PublishReport | None = None,
    ) -> None:
        self._latest = {loaded.spec.key: loaded for loaded in latest}
        self._specs: dict[tuple[str, str], SequenceSpec] = dict(stored or {})
        self._specs.update({(k, ld.version): ld.spec for k, ld in self._latest.items()})
        self.report = report or PublishReport()

    def latest(self, key: str) -> LoadedSequence:
        """The current version of sequence ``key`` (KeyError if there is none)."""
        return self._latest[key]

    def specs(self) -> list[SequenceSpec]:
        """The latest spec of every sequence, by key."""
        return [self._latest[key].spec for key in sorted(self._latest)]

    def personas(self) -> frozenset[str]:
        """Every persona some current sequence is for."""
        return frozenset(p for spec in self.specs() for p in spec.audience.personas)

    def __contains__(self, key: object) -> bool:
        return key in self._latest

    def __len__(self) -> int:
        return len(self._latest)

    def spec(self, key: str, version: str, session: Session | None = None) -> SequenceSpec:
        """The spec of any version: loaded, cached, or read from its stored snapshot
        (which needs ``session`` unless it was in use when the catalog was built)."""
        cached = self._specs.get((key, version))
        if cached is not None:
            return cached
        if session is None:
            raise UnknownSequenceVersion(f"sequence {key} version {version} is not loaded")
        row = session.execute(
            select(SequenceVersion.spec).where(
                SequenceVersion.key == key, SequenceVersion.version == version
            )
        ).scalar_one_or_none()
        if row is None:
            raise UnknownSequenceVersion(f"sequence {key} version {version} was never published")
        spec = _read_snapshot(key, version, row)
        self._specs[(key, version)] = spec
        return spec

    @classmethod
    def from_db(cls, session: Session) -> Catalog:
        """The most recently published version of every stored sequence (for workers that
        have no sequences folder), plus every version that active enrollments are in."""
        order = select(SequenceVersion.id, SequenceVersion.key).order_by(
            SequenceVersion.key, SequenceVersion.loaded_at, SequenceVersion.id
        )
        latest_ids = {key: row_id for row_id, key in session.execute(order)}
        rows = session.scalars(
            select(SequenceVersion).where(SequenceVersion.id.in_(latest_ids.values()))
        )
        latest = [
            LoadedSequence(_read_snapshot(r.key, r.version, r.spec), r.source_path, r.version)
            for r in rows
        ]
        return cls(latest, _specs_in_use(session))


def publish(session: Session, loaded: Sequence[LoadedSequence], now: datetime) -> Catalog:
    """Store every version not stored yet, move enrollments of ``move`` sequences, and
    return the catalog of these sequences. Publishing the same content again changes nothing."""
    keys = [ld.spec.key for ld in loaded]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"two sequences share the key {', '.join(duplicates)}")
    report = PublishReport()
    stored = _stored_versions(session, keys)
    for ld in loaded:
        if _store(session, ld, stored.get(ld.spec.key, []), now):
            report.stored.append((ld.spec.key, ld.version))
    for ld in loaded:
        if ld.spec.versioning.on_change == "move":
            _move_enrollments(session, ld, now, report)
    return Catalog(loaded, _specs_in_use(session), report)


@dataclass(frozen=True)
class _StoredRow:
    id: int
    version: str
    loaded_at: datetime


def _stored_versions(session: Session, keys: Sequence[str]) -> dict[str, list[_StoredRow]]:
    query = select(
        SequenceVersion.id, SequenceVersion.key, SequenceVersion.version, SequenceVersion.loaded_at
    ).where(SequenceVersion.key.in_(keys))
    found: dict[str, list[_StoredRow]] = {}
    for row_id, key, version, loaded_at in session.execute(query):
        found.setdefault(key, []).append(_StoredRow(row_id, version, loaded_at))
    return found


def _store(session: Session, ld: LoadedSequence, rows: list[_StoredRow], now: datetime) -> bool:
    """Make ``ld`` the latest stored version of its key; True if it was a new version."""
    latest = max(rows, key=lambda r: (r.loaded_at, r.id), default=None)
    if latest is not None and latest.version == ld.version:
        return False
    # Strictly after the current latest, even if this machine's clock is behind.
    loaded_at = max(now, latest.loaded_at + _TICK) if latest else now
    existing = next((r for r in rows if r.version == ld.version), None)
    if existing is not None:
        # Back to content published before (a revert): it becomes the latest again.
        session.execute(
            update(SequenceVersion)
            .where(SequenceVersion.id == existing.id)
            .values(loaded_at=loaded_at, source_path=ld.path)
        )
        return False
    return _insert_version(session, ld, loaded_at)


def _insert_version(session: Session, ld: LoadedSequence, loaded_at: datetime) -> bool:
    row = SequenceVersion(
        key=ld.spec.key,
        version=ld.version,
        spec=spec_document(ld.spec),
        source_path=ld.path,
        loaded_at=loaded_at,
    )
    try:
        # A savepoint: another process publishing the same version at once is not an error.
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        log.info("sequence %s version %s was stored concurrently", ld.spec.key, ld.version)
        return False
    return True


def _move_enrollments(
    session: Session, ld: LoadedSequence, now: datetime, report: PublishReport
) -> None:
    """Move active enrollments on older versions of ``ld``'s key into ``ld``'s version."""
    key, new = ld.spec.key, ld.version
    groups = session.execute(
        select(Enrollment.sequence_version, Enrollment.current_step, func.count())
        .where(
            Enrollment.sequence_key == key,
            Enrollment.status == "active",
            Enrollment.sequence_version != new,
        )
        .group_by(Enrollment.sequence_version, Enrollment.current_step)
        .order_by(Enrollment.sequence_version, Enrollment.current_step)
    ).all()
    for old, step, count in groups:
        target = ld.spec.versioning.step_map.get(step, step)
        if ld.spec.step(target) is None:
            reason = f"step {step!r} is not in version {new} and step_map does not map it"
            _leave(report, LeftBehind(key, old, step, count, reason))
            continue
        moved = _move_group(session, key, old, step, new, target, now)
        if moved:
            report.moved.append(MovedGroup(key, old, new, step, target, moved))
        if moved < count:
            reason = "claimed by a worker while publishing; moves at the next publish"
            _leave(report, LeftBehind(key, old, step, count - moved, reason))


def _move_group(
    session: Session, key: str, old: str, step: str, new: str, target: str, now: datetime
) -> int:
    # Waits were already turned into next_run_at, so the schedule is kept as it is.
    # Enrollments a worker holds right now are left for the next publish.
    statement = (
        update(Enrollment)
        .where(
            Enrollment.sequence_key == key,
            Enrollment.sequence_version == old,
            Enrollment.current_step == step,
            Enrollment.status == "active",
            or_(Enrollment.claimed_until.is_(None), Enrollment.claimed_until < now),
        )
        .values(sequence_version=new, current_step=target)
        .execution_options(synchronize_session=False)
    )
    result = cast(CursorResult[Any], session.execute(statement))
    return result.rowcount


def _leave(report: PublishReport, left: LeftBehind) -> None:
    log.warning(
        "%d enrollment(s) of %s stay on version %s at step %s: %s",
        left.count,
        left.sequence_key,
        left.version,
        left.step,
        left.reason,
    )
    report.left.append(left)


def _specs_in_use(session: Session) -> dict[tuple[str, str], SequenceSpec]:
    """The stored spec of every version that active enrollments are in (one query)."""
    in_use = (
        select(Enrollment.sequence_key, Enrollment.sequence_version)
        .where(Enrollment.status == "active")
        .distinct()
        .subquery()
    )
    query = select(SequenceVersion.key, SequenceVersion.version, SequenceVersion.spec).join(
        in_use,
        and_(
            in_use.c.sequence_key == SequenceVersion.key,
            in_use.c.sequence_version == SequenceVersion.version,
        ),
    )
    specs = {}
    for key, version, document in session.execute(query):
        try:
            specs[(key, version)] = _read_snapshot(key, version, document)
        except UnknownSequenceVersion as exc:
            log.error("%s", exc)  # spec() raises it again if an enrollment needs it
    return specs


def _read_snapshot(key: str, version: str, document: dict[str, Any]) -> SequenceSpec:
    try:
        return spec_from_document(document)
    except ValidationError as exc:
        raise UnknownSequenceVersion(
            f"stored sequence {key} version {version} no longer reads as a sequence: {exc}"
        ) from exc
