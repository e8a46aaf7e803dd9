"""What a recycled lead re-enters when its cool-down ends (docs/funnel.md, "Recycling"):
the reason's re-nurture sequence for its persona, else the reason's generic one; a reason
with neither sends it back to `lead` and its usual track, which admits it at once: the
cool-down sales gave replaces the track's own re-entry cool-down."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from support.funnel import (
    MONDAY,
    SEQUENCES,
    TEMPLATES,
    active_enrollments,
    add_lead,
    behave,
    lead,
    make_runtime,
    path,
    sent_steps,
    tick_at,
    use_fixture_folder,
)

from nurture.db.models import Lead
from nurture.db.session import transaction
from nurture.funnel.decisions import SalesDecision
from nurture.funnel.sales import apply_decision
from nurture.program.validate import validate_path, validate_paths
from nurture.runtime import Runtime

# The marketing track as shipped tracks have it: 120 days before a lead may enter again.
LONG_COOLDOWN = ("  policy: again\n  cooldown: 1d\n", "  policy: again\n  cooldown: 120d\n")
PERSONA_TRACK = """\
key: renurture-tester
name: Re-nurture for testers
audience:
  personas: [tester]
  journey_stages: [awareness]
  lifecycle_stages: [recycled]
steps:
  - id: tester-comeback
    email: {template: funnel/comeback, subject: "For testers: is now a better time?"}
"""


def program_folder(tmp_path: Path, *edits: tuple[str, str, str]) -> Path:
    """A copy of the funnel fixtures with (file, old, new) text edits."""
    folder = tmp_path / "sequences"
    shutil.copytree(SEQUENCES, folder)
    for name, old, new in edits:
        file = folder / name
        text = file.read_text()
        assert old in text, (name, old)
        file.write_text(text.replace(old, new))
    return folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return program_folder(tmp_path, ("nurture.yaml", *LONG_COOLDOWN))


def runtime_on(db_url: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    use_fixture_folder(monkeypatch)
    return make_runtime(db_url, sequences_dir=folder)


def recycle(rt: Runtime, email: str, code: str, **fields: Any) -> int:
    lead_id = add_lead(rt, email, enrolled=fields.get("persona", "tester") == "tester", **fields)
    tick_at(rt, MONDAY)  # the track's first email
    for n in range(4):
        behave(rt, lead_id, "page_visit", MONDAY + timedelta(minutes=n + 1))
    assert lead(rt, lead_id).lifecycle_stage == "mql"
    at = MONDAY + timedelta(hours=1)
    with transaction(rt.sessions) as session:
        found = session.scalars(select(Lead).where(Lead.id == lead_id)).one()
        decision = SalesDecision(decision="reject", reason_code=code, actor="sam")
        apply_decision(session, found, decision, at, rt.funnel())
    return lead_id


def test_a_reason_without_a_sequence_returns_the_lead_to_its_track_at_once(
    db_url: str, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = runtime_on(db_url, folder, monkeypatch)
    try:
        lead_id = recycle(rt, "hal@acme.example", "no_budget")  # 60 days, no sequence
        tick_at(rt, MONDAY + timedelta(days=59))
        assert active_enrollments(rt, lead_id) == []  # silent during the sales cool-down
        back = MONDAY + timedelta(days=61)
        tick_at(rt, back)
        assert path(rt, lead_id) == ["lead", "mql", "recycled", "lead"]
        # The track's own 120-day re-entry cool-down does not keep the lead out.
        assert [e.sequence_key for e in active_enrollments(rt, lead_id)] == ["nurture"]
        assert sent_steps(rt, lead_id) == ["nurture/welcome", "nurture/welcome"]
    finally:
        rt.close()


def test_a_persona_with_its_own_re_nurture_track_gets_it(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = program_folder(
        tmp_path,
        ("nurture.yaml", *LONG_COOLDOWN),
        (
            "lifecycle.yaml",
            "      sequence: renurture\n",
            "      sequence: renurture\n      by_persona:\n        tester: renurture-tester\n",
        ),
    )
    (folder / "renurture-tester.yaml").write_text(PERSONA_TRACK)
    rt = runtime_on(db_url, folder, monkeypatch)
    try:
        tester = recycle(rt, "tess@acme.example", "timing")
        other = recycle(rt, "otto@acme.example", "timing", persona="other")
        tick_at(rt, MONDAY + timedelta(days=31))
        assert sent_steps(rt, tester)[-1] == "renurture-tester/tester-comeback"
        assert sent_steps(rt, other)[-1] == "renurture/comeback"  # the generic track
        assert lead(rt, tester).lifecycle_stage == "recycled"
    finally:
        rt.close()


def errors_and_warnings(folder: Path) -> list[str]:
    return [str(p) for p in validate_path(folder, TEMPLATES, "en")]


def test_validate_names_the_personas_that_fall_back_to_the_generic_track(tmp_path: Path) -> None:
    folder = program_folder(
        tmp_path,
        (
            "lifecycle.yaml",
            "      sequence: renurture\n",
            "      sequence: renurture\n      by_persona:\n        tester: renurture-tester\n",
        ),
        ("nurture.yaml", "personas: [tester]", "personas: [tester, hr_manager]"),
    )
    (folder / "renurture-tester.yaml").write_text(PERSONA_TRACK)
    report = validate_paths([folder], TEMPLATES, "en")
    assert report.notes == [
        "re-nurture for timing: hr_manager -> renurture (generic), tester -> renurture-tester",
        "re-nurture for no_budget: hr_manager -> its usual track, tester -> its usual track",
    ]
    assert [p for p in report.problems if "reject_reasons" in p.message] == []


def test_validate_warns_when_a_reason_leads_nowhere(tmp_path: Path) -> None:
    folder = program_folder(
        tmp_path, ("nurture.yaml", "  policy: again\n  cooldown: 1d\n", "  policy: once\n")
    )
    shown = [p for p in errors_and_warnings(folder) if "reject_reasons.no_budget" in p]
    assert len(shown) == 1
    assert "warning: sales.reject_reasons.no_budget: no re-nurture sequence" in shown[0]
    assert "tester at awareness (nurture: entry once)" in shown[0]
    assert "consideration" not in shown[0]  # no track there at all: not recycling's doing


def test_a_persona_track_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    folder = program_folder(
        tmp_path,
        (
            "lifecycle.yaml",
            "      sequence: renurture\n",
            "      sequence: renurture\n      by_persona:\n        tester: renurture-testers\n",
        ),
    )
    shown = [p for p in errors_and_warnings(folder) if "by_persona" in p]
    assert any(
        "sales.reject_reasons.timing.by_persona.tester: no sequence 'renurture-testers'" in p
        and "warning" not in p
        for p in shown
    ), shown
