"""``nurture leads import --strict``: the good rows are imported all the same, but a script
learns from the exit status that some rows were skipped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from nurture.cli import app
from nurture.db.models import Enrollment, Lead

SEQUENCE_YAML = """\
key: it-awareness
name: IT awareness
audience:
  personas: [it-leader]
  journey_stages: [awareness]
steps:
  - id: welcome
    email: {template: it/welcome, subject: Hello}
"""
HEADER = "email,first_name,persona,journey_stage,lifecycle_stage"


def import_csv(db_url: str, csv: Path, sequences: Path, *options: str) -> Result:
    args = ["leads", "import", str(csv), "--sequences", str(sequences), *options]
    return CliRunner().invoke(app, args, env={"NURTURE_DATABASE_URL": db_url})


@pytest.fixture
def sequences(tmp_path: Path) -> Path:
    folder = tmp_path / "sequences"
    folder.mkdir()
    (folder / "it.yaml").write_text(SEQUENCE_YAML, encoding="utf-8")
    return folder


def write_csv(tmp_path: Path, name: str, *rows: str) -> Path:
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_strict_exits_one_when_rows_were_skipped(
    db_url: str, tmp_path: Path, sequences: Path, session_factory: sessionmaker[Session]
) -> None:
    mixed = write_csv(
        tmp_path,
        "mixed.csv",
        "ana@acme.io,Ana,it-leader,awareness,lead",
        "nope,Bob,it-leader,awareness,lead",
    )
    clean = write_csv(tmp_path, "clean.csv", "cy@acme.io,Cy,it-leader,awareness,lead")

    lenient = import_csv(db_url, mixed, sequences)
    strict = import_csv(db_url, mixed, sequences, "--strict", "--json")
    clean_strict = import_csv(db_url, clean, sequences, "--strict")

    assert lenient.exit_code == 0, lenient.output
    assert strict.exit_code == 1, strict.output
    report = json.loads(strict.stdout)
    assert (report["skipped"], report["updated"]) == (1, 1)  # the good row is imported anyway
    assert "row 3: email" in import_csv(db_url, mixed, sequences, "--strict").stdout
    assert clean_strict.exit_code == 0, clean_strict.output
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Lead)) == 2


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_now_rehearses_the_import_at_another_moment(
    db_url: str, tmp_path: Path, sequences: Path, session_factory: sessionmaker[Session]
) -> None:
    """``--now``, as ``nurture tick --now``: the leads are created and enrolled then, so a
    rehearsal of a day (import, then ticks) runs on one clock."""
    rows = write_csv(tmp_path, "rows.csv", "ana@acme.io,Ana,it-leader,awareness,lead")
    at = "2026-03-02T09:00+09:00"
    result = import_csv(db_url, rows, sequences, "--now", at)
    assert result.exit_code == 0, result.output
    with session_factory() as session:
        lead = session.scalars(select(Lead)).one()
        enrollment = session.scalars(select(Enrollment)).one()
    expected = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    assert (lead.created_at, enrollment.entered_at, enrollment.next_run_at) == (expected,) * 3
    naive = import_csv(db_url, rows, sequences, "--now", "2026-03-02T09:00")
    assert naive.exit_code == 2 and "give a time zone" in naive.output
