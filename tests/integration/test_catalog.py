"""Publishing sequence versions, and what happens to enrolled leads when a sequence changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from nurture.db.models import Enrollment, Lead, SequenceVersion
from nurture.db.session import transaction
from nurture.sequences.catalog import Catalog, UnknownSequenceVersion, publish
from nurture.sequences.spec import SequenceSpec
from nurture.sequences.versions import LoadedSequence

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=7)


def email(step_id: str, subject: str = "Hi") -> dict[str, Any]:
    return {"id": step_id, "email": {"template": f"t/{step_id}", "subject": subject}}


def loaded(steps: list[dict[str, Any]], key: str = "it-awareness", **extra: Any) -> LoadedSequence:
    document = {
        "key": key,
        "name": "IT awareness",
        "audience": {"personas": ["it-leader"], "journey_stages": ["awareness"]},
        "steps": steps,
        **extra,
    }
    return LoadedSequence(SequenceSpec.model_validate(document), f"sequences/{key}.yaml")


V1 = loaded([email("welcome"), {"id": "pause", "wait": "3d"}, email("offer"), email("old-only")])
# Same steps, a new subject: a new version.
V2_FINISH = loaded(
    [email("welcome", "Hello"), {"id": "pause", "wait": "3d"}, email("offer"), email("old-only")]
)
V2_MOVE = loaded(
    [email("welcome", "Hello"), {"id": "pause", "wait": "5d"}, email("offer-v2")],
    versioning={"on_change": "move", "step_map": {"offer": "offer-v2"}},
)


def do_publish(factory: sessionmaker[Session], *sequences: LoadedSequence, at: datetime) -> Catalog:
    with transaction(factory) as session:
        return publish(session, list(sequences), at)


def stored_versions(factory: sessionmaker[Session]) -> list[tuple[str, str]]:
    with factory() as session:
        rows = session.execute(
            select(SequenceVersion.key, SequenceVersion.version).order_by(SequenceVersion.id)
        )
        return [(key, version) for key, version in rows]


def enroll_at(factory: sessionmaker[Session], version: str, step: str, **extra: Any) -> int:
    """A lead active in it-awareness at ``step`` of ``version``; returns the enrollment id."""
    with transaction(factory) as session:
        lead = Lead(email=f"{step}-{extra.get('claimed_until', '')}-{version}@acme.io")
        session.add(lead)
        session.flush()
        enrollment = Enrollment(
            lead_id=lead.id,
            sequence_key="it-awareness",
            sequence_version=version,
            current_step=step,
            step_started_at=NOW,
            next_run_at=NOW + timedelta(days=3),
            entered_at=NOW,
            **extra,
        )
        session.add(enrollment)
        session.flush()
        return enrollment.id


def position(
    factory: sessionmaker[Session], enrollment_id: int
) -> tuple[str, str, datetime | None]:
    with factory() as session:
        e = session.get_one(Enrollment, enrollment_id)
        return e.sequence_version, e.current_step, e.next_run_at


def test_publishing_the_same_sequence_twice_stores_one_version(
    session_factory: sessionmaker[Session],
) -> None:
    first = do_publish(session_factory, V1, at=NOW)
    again = do_publish(
        session_factory, loaded(V1.spec.model_dump(by_alias=True)["steps"]), at=LATER
    )
    assert first.report.stored == [("it-awareness", V1.version)]
    assert again.report.stored == []
    assert stored_versions(session_factory) == [("it-awareness", V1.version)]
    with session_factory() as session:
        row = session.scalars(select(SequenceVersion)).one()
        assert row.loaded_at == NOW and row.source_path == "sequences/it-awareness.yaml"
        assert row.spec["steps"][0]["email"]["subject"] == "Hi"


def test_a_changed_sequence_is_a_new_version_and_enrolled_leads_finish_theirs(
    session_factory: sessionmaker[Session],
) -> None:
    do_publish(session_factory, V1, at=NOW)
    enrolled = enroll_at(session_factory, V1.version, "offer")
    catalog = do_publish(session_factory, V2_FINISH, at=LATER)
    assert V2_FINISH.version != V1.version
    assert stored_versions(session_factory) == [
        ("it-awareness", V1.version),
        ("it-awareness", V2_FINISH.version),
    ]
    assert position(session_factory, enrolled)[:2] == (V1.version, "offer")
    assert catalog.report.moved == [] and catalog.report.left == []
    # New leads get the new version; the enrolled lead's version is still readable.
    assert catalog.latest("it-awareness").version == V2_FINISH.version
    assert catalog.spec("it-awareness", V1.version) == V1.spec
    with session_factory() as session:
        from_db = Catalog.from_db(session)
    assert from_db.latest("it-awareness").version == V2_FINISH.version
    assert from_db.spec("it-awareness", V1.version) == V1.spec
    assert from_db.personas() == frozenset({"it-leader"})


def test_move_policy_moves_active_enrollments_by_step_id_or_step_map(
    session_factory: sessionmaker[Session],
) -> None:
    do_publish(session_factory, V1, at=NOW)
    same_id = enroll_at(session_factory, V1.version, "welcome")
    mapped = enroll_at(session_factory, V1.version, "offer")
    gone = enroll_at(session_factory, V1.version, "old-only")
    claimed = enroll_at(
        session_factory, V1.version, "welcome", claimed_until=LATER + timedelta(minutes=5)
    )
    done = enroll_at(session_factory, V1.version, "pause", status="completed")
    before = position(session_factory, same_id)

    catalog = do_publish(session_factory, V2_MOVE, at=LATER)

    new = V2_MOVE.version
    assert position(session_factory, same_id) == (new, "welcome", before[2])  # schedule kept
    assert position(session_factory, mapped)[:2] == (new, "offer-v2")
    assert position(session_factory, gone)[:2] == (V1.version, "old-only")
    assert position(session_factory, claimed)[:2] == (V1.version, "welcome")
    assert position(session_factory, done)[:2] == (V1.version, "pause")
    report = catalog.report
    assert report.moved_count == 2
    assert {(g.from_step, g.to_step, g.count) for g in report.moved} == {
        ("welcome", "welcome", 1),
        ("offer", "offer-v2", 1),
    }
    left = {(item.step, item.count): item.reason for item in report.left}
    assert "not in version" in left[("old-only", 1)]
    assert "claimed by a worker" in left[("welcome", 1)]
    # The lead left behind can still finish: its version is in the catalog.
    assert catalog.spec("it-awareness", V1.version).step("old-only") is not None


def test_the_claimed_enrollment_moves_at_the_next_publish(
    session_factory: sessionmaker[Session],
) -> None:
    do_publish(session_factory, V1, at=NOW)
    claimed = enroll_at(session_factory, V1.version, "welcome", claimed_until=LATER)
    assert do_publish(session_factory, V2_MOVE, at=LATER - timedelta(minutes=1)).report.left
    catalog = do_publish(session_factory, V2_MOVE, at=LATER + timedelta(minutes=1))
    assert catalog.report.moved_count == 1 and catalog.report.stored == []
    assert position(session_factory, claimed)[:2] == (V2_MOVE.version, "welcome")


def test_reverting_to_an_earlier_content_makes_it_the_latest_again(
    session_factory: sessionmaker[Session],
) -> None:
    do_publish(session_factory, V1, at=NOW)
    do_publish(session_factory, V2_FINISH, at=LATER)
    # Even with a clock behind the last publish, the one published last is the latest.
    reverted = do_publish(session_factory, V1, at=NOW)
    assert reverted.report.stored == []
    assert len(stored_versions(session_factory)) == 2
    with session_factory() as session:
        assert Catalog.from_db(session).latest("it-awareness").version == V1.version


def test_old_versions_load_from_the_database_on_demand(
    session_factory: sessionmaker[Session],
) -> None:
    do_publish(session_factory, V1, at=NOW)
    catalog = do_publish(session_factory, V2_FINISH, at=LATER)
    # No lead is in V1, so it was not preloaded: it needs a session, and then is cached.
    with pytest.raises(UnknownSequenceVersion, match="not loaded"):
        catalog.spec("it-awareness", V1.version)
    with session_factory() as session:
        assert catalog.spec("it-awareness", V1.version, session) == V1.spec
        with pytest.raises(UnknownSequenceVersion, match="never published"):
            catalog.spec("it-awareness", "000000000000", session)
    assert catalog.spec("it-awareness", V1.version) == V1.spec


def test_catalog_lists_the_latest_specs_and_their_personas(
    session_factory: sessionmaker[Session],
) -> None:
    other = loaded([email("hello")], key="finance-consideration")
    other = LoadedSequence(
        other.spec.model_copy(
            update={"audience": other.spec.audience.model_copy(update={"personas": ["cfo"]})}
        ),
        other.path,
    )
    catalog = do_publish(session_factory, V1, other, at=NOW)
    assert [s.key for s in catalog.specs()] == ["finance-consideration", "it-awareness"]
    assert catalog.personas() == frozenset({"it-leader", "cfo"})
    assert "it-awareness" in catalog and len(catalog) == 2
    with pytest.raises(KeyError):
        catalog.latest("nope")


def test_two_sequences_with_one_key_are_refused(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(ValueError, match="share the key it-awareness"):
        do_publish(session_factory, V1, V2_FINISH, at=NOW)
    assert stored_versions(session_factory) == []
