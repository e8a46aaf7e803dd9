"""``nurture events import``: bulk history from JSON lines or CSV; bad rows are reported
by number and field and skipped, good rows are stored once, through the same ingest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select
from support.engine import MONDAY, SEQUENCES, add_lead, make_runtime
from support.web import count
from typer.testing import CliRunner

from nurture.cli import app
from nurture.db.models import Event, Lead
from nurture.leads.events_import import ImportAborted, import_events

JSONL = [
    '{"email": "ana@example.com", "type": "page_visit", "occurred_at": "2026-02-01T10:00:00Z",'
    ' "url": "https://site.example/blog/a", "dedupe_key": "v1"}',
    "",
    '{"email": "ana@example.com", "type": "webinar_registered",'
    ' "occurred_at": "2026-02-02T10:00:00+09:00"}',
    '{"email": "ana@example.com", "type": "page_visit", "occurred_at": "2026-02-01T10:00:00"}',
    "{not json",
    '{"email": "bo@example", "type": "page_visit"}',
    '["a", "list"]',
    '{"email": "cy@example.com", "type": "demo_requested", "occurred_at": "2026-02-03T09:00:00Z",'
    ' "dedupe_key": "v1"}',
    '{"email": "cy@example.com", "type": "teleported"}',
]


def write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(db_url: str, path: Path, policy: str = "create") -> tuple[object, list[list[int]]]:
    rt = make_runtime(db_url)
    processed: list[list[int]] = []
    try:
        report = import_events(
            path,
            rt.sessions,
            now=MONDAY,
            unknown_email=policy,  # type: ignore[arg-type]
            default_timezone="UTC",
            process=processed.append,
            batch_size=3,
            rules=rt.program.scoring,
        )
    finally:
        rt.close()
    return report, processed


def test_jsonl_bad_rows_are_reported_by_line_and_field(db_url: str, tmp_path: Path) -> None:
    report, processed = run(db_url, write(tmp_path, "events.jsonl", JSONL))
    data = report.to_json()  # type: ignore[attr-defined]
    errors = [(e["line"], e["field"]) for e in data["errors"]]
    assert errors == [(4, "occurred_at"), (5, ""), (6, "email"), (7, ""), (9, "type")]
    messages = {e["line"]: e["message"] for e in data["errors"]}
    assert "timezone" in messages[4] and "not valid JSON" in messages[5]
    assert "JSON object" in messages[7]
    # The first line's dedupe key v1 is reused on line 8: a duplicate, not an error.
    assert (data["rows"], data["created"], data["duplicates"], data["invalid"]) == (8, 2, 1, 5)
    assert data["leads_created"] == 2
    assert sorted(i for batch in processed for i in batch) == _event_ids(db_url)


def _event_ids(db_url: str) -> list[int]:
    rt = make_runtime(db_url)
    with rt.sessions() as session:
        ids = sorted(session.scalars(select(Event.id)))
    rt.close()
    return ids


def test_importing_twice_stores_nothing_new(db_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "events.jsonl", JSONL)
    run(db_url, path)
    report, processed = run(db_url, path)
    assert (report.created, report.duplicates) == (0, 3)  # type: ignore[attr-defined]
    assert processed == [[], []] or all(not batch for batch in processed)


def test_csv_rows_use_spreadsheet_numbers_and_extra_columns_become_properties(
    db_url: str, tmp_path: Path
) -> None:
    lines = [
        "email,type,occurred_at,url,content_stage,campaign,properties",
        "ana@example.com,content_download,2026-02-01T10:00:00Z,https://s.example/e.pdf,"
        'decision,spring,"{""pages"": 12}"',
        "ana@example.com,content_download,2026-02-01T10:00:00Z,,wrong,,",
        ",,,,,,",
        "ana@example.com,pricing_page_view,2026-02-01T11:00:00Z,,,,{oops",
        "ana@example.com,pricing_page_view,2026-02-01T12:00:00Z,,,,,extra",
    ]
    report, _ = run(db_url, write(tmp_path, "events.csv", lines))
    data = report.to_json()  # type: ignore[attr-defined]
    assert [(e["row"], e["field"]) for e in data["errors"]] == [
        (3, "content_stage"),
        (5, ""),
        (6, ""),
    ]
    assert data["created"] == 1
    rt = make_runtime(db_url)
    with rt.sessions() as session:
        stored = session.scalars(select(Event)).one()
    rt.close()
    assert stored.data["properties"] == {"campaign": "spring", "pages": 12}
    assert stored.data["content_stage"] == "decision"


def test_unknown_emails_are_rejected_per_row_when_configured(db_url: str, tmp_path: Path) -> None:
    rt = make_runtime(db_url)
    add_lead(rt, "ana@example.com", enrolled=False)
    rt.close()
    report, _ = run(db_url, write(tmp_path, "events.jsonl", JSONL), policy="reject")
    data = report.to_json()  # type: ignore[attr-defined]
    assert data["rejected"] == 1 and data["leads_created"] == 0
    assert {k: v for k, v in data["errors"][-2].items() if k != "message"} == {
        "line": 8,
        "field": "email",
    }


def test_unusable_files_are_refused_before_anything_is_written(db_url: str, tmp_path: Path) -> None:
    for name, lines, reason in (
        ("events.txt", ["x"], "unknown file type"),
        ("events.csv", ["email,url", "a@example.com,x"], "no 'type' column"),
        ("empty.csv", [], "empty file"),
    ):
        path = tmp_path / name
        path.write_text("\n".join(lines), encoding="utf-8")
        with pytest.raises(ImportAborted, match=reason):
            run(db_url, path)
    with pytest.raises(ImportAborted, match="no such file"):
        run(db_url, tmp_path / "missing.jsonl")
    assert _event_ids(db_url) == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_command_prints_errors_and_a_summary(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("NURTURE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("NURTURE_SEQUENCES_DIR", str(SEQUENCES))
    monkeypatch.setenv("COLUMNS", "200")
    path = write(tmp_path, "events.jsonl", JSONL)
    result = CliRunner().invoke(app, ["events", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert "line 4: occurred_at:" in result.output and "line 9: type:" in result.output
    assert "stored" in result.output and "duplicates" in result.output
    result = CliRunner().invoke(app, ["events", "import", str(path), "--json"])
    report = json.loads(result.output)
    assert report["created"] == 0 and report["duplicates"] == 3
    result = CliRunner().invoke(app, ["events", "import", str(tmp_path / "nope.csv")])
    assert result.exit_code == 1 and "no such file" in result.output
    rt = make_runtime(db_url)
    assert count(rt, Lead) == 2
    rt.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_strict_exits_one_when_rows_were_skipped(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("NURTURE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("NURTURE_SEQUENCES_DIR", str(SEQUENCES))
    mixed = write(tmp_path, "events.jsonl", JSONL)
    clean = write(tmp_path, "clean.jsonl", JSONL[:1])

    lenient = CliRunner().invoke(app, ["events", "import", str(mixed), "--json"])
    strict = CliRunner().invoke(app, ["events", "import", str(mixed), "--strict", "--json"])
    again = CliRunner().invoke(app, ["events", "import", str(clean), "--strict"])

    assert lenient.exit_code == 0, lenient.output
    assert strict.exit_code == 1 and json.loads(strict.output)["invalid"] == 5
    assert again.exit_code == 0, again.output  # a duplicate is stored, not skipped
