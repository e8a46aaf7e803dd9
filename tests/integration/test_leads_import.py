"""Importing leads from CSV: row errors, idempotent upserts, enrollment, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from support import FIXTURES as ALL_FIXTURES
from support import shipped_funnel
from typer.testing import CliRunner

from nurture.cli import app
from nurture.db.models import Enrollment, Lead, SequenceVersion, Suppression
from nurture.db.session import transaction
from nurture.leads.csv_file import check_file
from nurture.leads.importer import ImportAborted, ImportReport, import_leads
from nurture.leads.schema import LeadIn, lead_context
from nurture.sequences.catalog import Catalog, publish
from nurture.sequences.spec import SequenceSpec
from nurture.sequences.versions import LoadedSequence
from nurture.settings import load_settings

FIXTURES = ALL_FIXTURES / "leads"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HEADER = "email,first_name,persona,journey_stage,lifecycle_stage"


def spec(key: str, persona: str, stage: str, **extra: Any) -> SequenceSpec:
    return SequenceSpec.model_validate(
        {
            "key": key,
            "name": key,
            "audience": {"personas": [persona], "journey_stages": [stage]},
            "steps": [{"id": "welcome", "email": {"template": "t/w", "subject": "Hi"}}],
            **extra,
        }
    )


SPECS = [
    spec("it-awareness", "it-leader", "awareness"),
    spec(
        "finance-consideration",
        "finance-leader",
        "consideration",
        entry={"policy": "again", "cooldown": "30d"},
    ),
]


@pytest.fixture
def catalog(session_factory: sessionmaker[Session]) -> Catalog:
    with transaction(session_factory) as session:
        return publish(session, [LoadedSequence(s, f"{s.key}.yaml") for s in SPECS], NOW)


def run_import(
    path: Path, factory: sessionmaker[Session], catalog: Catalog, **options: Any
) -> ImportReport:
    settings = load_settings(default_timezone="Europe/Berlin")
    return import_leads(path, factory, shipped_funnel(catalog, settings), now=NOW, **options)


def write_csv(tmp_path: Path, name: str, *lines: str) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def leads_by_email(factory: sessionmaker[Session]) -> dict[str, Lead]:
    with factory() as session:
        return {lead.email.lower(): lead for lead in session.scalars(select(Lead))}


def enrollments(factory: sessionmaker[Session]) -> list[tuple[str, str]]:
    with factory() as session:
        rows = session.execute(
            select(Lead.email, Enrollment.sequence_key)
            .join(Enrollment, Enrollment.lead_id == Lead.id)
            .order_by(Lead.email)
        )
        return [(email, key) for email, key in rows]


# --- bad rows -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 500])
def test_bad_rows_are_reported_by_row_and_field_and_good_rows_imported(
    session_factory: sessionmaker[Session], catalog: Catalog, batch_size: int
) -> None:
    report = run_import(FIXTURES / "bad_rows.csv", session_factory, catalog, batch_size=batch_size)

    assert (report.rows, report.created, report.updated, report.skipped) == (10, 4, 1, 5)
    assert [(e.row, e.field) for e in report.errors] == [
        (3, "email"),
        (4, "persona"),
        (5, "timezone"),
        (6, "company_size"),
        (10, "country"),
        (10, "locale"),
    ]
    messages = [str(e) for e in report.errors]
    assert messages[0].startswith("row 3: email: 'not-an-email' is not a valid email address")
    assert "unknown persona 'astronaut'; known personas: finance-leader, it-leader" in messages[1]
    assert "unknown time zone 'Mars/Olympus'" in messages[2]
    assert "expected a whole number like 250 or 1,200, got 'lots'" in messages[3]
    assert report.enrolled == {"it-awareness": 1, "finance-consideration": 1}
    # With one row per batch, ana's second row comes after her enrollment was stored.
    expected_not_enrolled = {"lifecycle_excluded": 1, "no_sequence": 1}
    if batch_size == 1:
        expected_not_enrolled["already_active"] = 1
    assert report.not_enrolled == expected_not_enrolled

    leads = leads_by_email(session_factory)
    assert sorted(leads) == ["ana@acme.io", "frank@beta.io", "gina@beta.io", "ivy@beta.io"]
    ana = leads["ana@acme.io"]
    # The later row for the same address overwrote only what it gave.
    assert (ana.email, ana.title, ana.first_name, ana.company_size) == (
        "ana@acme.io",
        "VP Engineering",
        "Ana",
        1200,
    )
    assert (ana.country, ana.locale, ana.timezone) == ("US", "en-US", "America/New_York")
    assert ana.attributes == {"erp": "SAP", "source": "webinar"}
    gina = leads["gina@beta.io"]
    assert (gina.persona, gina.journey_stage, gina.lifecycle_stage) == (
        "finance-leader",
        "consideration",
        "lead",
    )
    assert (gina.timezone, gina.locale, gina.country) == ("Asia/Seoul", "ko-KR", "KR")
    ivy = leads["ivy@beta.io"]
    assert (ivy.timezone, ivy.persona, ivy.journey_stage, ivy.lifecycle_stage) == (
        "Europe/Berlin",
        "",
        "awareness",
        "lead",
    )
    assert enrollments(session_factory) == [
        ("ana@acme.io", "it-awareness"),
        ("gina@beta.io", "finance-consideration"),
    ]


def test_reimporting_the_same_file_updates_and_enrolls_nobody_twice(
    session_factory: sessionmaker[Session], catalog: Catalog
) -> None:
    first = run_import(FIXTURES / "bad_rows.csv", session_factory, catalog)
    stored = {e: (lead.id, lead.title) for e, lead in leads_by_email(session_factory).items()}
    again = run_import(FIXTURES / "bad_rows.csv", session_factory, catalog)

    assert (again.created, again.updated, again.skipped) == (0, 5, 5)
    assert again.enrolled == {}
    assert again.not_enrolled["already_active"] == 2
    assert len(again.errors) == len(first.errors)
    reloaded = {e: (lead.id, lead.title) for e, lead in leads_by_email(session_factory).items()}
    assert reloaded == stored
    assert len(enrollments(session_factory)) == 2


def test_email_matches_case_insensitively(
    tmp_path: Path, session_factory: sessionmaker[Session], catalog: Catalog
) -> None:
    first = write_csv(tmp_path, "a.csv", HEADER, "Alice@X.COM,Alice,it-leader,awareness,lead")
    second = write_csv(tmp_path, "b.csv", "email,company", "alice@x.com,Initech")
    assert run_import(first, session_factory, catalog).created == 1
    report = run_import(second, session_factory, catalog)

    assert (report.created, report.updated) == (0, 1)
    leads = leads_by_email(session_factory)
    assert list(leads) == ["alice@x.com"]
    # The address keeps the case it was first stored with (the domain is always lower-case).
    assert (leads["alice@x.com"].email, leads["alice@x.com"].company) == ("Alice@x.com", "Initech")
    assert (leads["alice@x.com"].persona, leads["alice@x.com"].first_name) == ("it-leader", "Alice")
    assert len(enrollments(session_factory)) == 1


def test_extra_columns_become_attributes_and_are_merged(
    tmp_path: Path, session_factory: sessionmaker[Session], catalog: Catalog
) -> None:
    first = write_csv(
        tmp_path,
        "a.csv",
        "Email,First Name,persona,ERP,source,budget",
        "ana@acme.io,Ana,it-leader,SAP,webinar,",
    )
    second = write_csv(tmp_path, "b.csv", "email,ERP,budget,source", "ana@acme.io,,50k,")
    run_import(first, session_factory, catalog)
    run_import(second, session_factory, catalog)

    ana = leads_by_email(session_factory)["ana@acme.io"]
    assert ana.first_name == "Ana"  # "First Name" is the first_name column
    assert ana.attributes == {"ERP": "SAP", "source": "webinar", "budget": "50k"}


def test_enrollment_follows_the_audience_rules(
    tmp_path: Path, session_factory: sessionmaker[Session], catalog: Catalog
) -> None:
    with transaction(session_factory) as session:
        session.add(Suppression(email="bo@acme.io", reason="unsubscribed"))
    path = write_csv(
        tmp_path,
        "leads.csv",
        HEADER,
        "ana@acme.io,Ana,it-leader,awareness,lead",
        "Bo@Acme.io,Bo,it-leader,awareness,lead",
        "cy@acme.io,Cy,it-leader,consideration,lead",
        "di@acme.io,Di,it-leader,awareness,disqualified",
        "ed@acme.io,Ed,finance-leader,consideration,sal",
        "fay@acme.io,Fay,finance-leader,consideration,recycled",
    )
    report = run_import(path, session_factory, catalog)

    assert report.enrolled == {"it-awareness": 1, "finance-consideration": 1}
    assert report.not_enrolled == {
        "suppressed": 1,
        "no_sequence": 1,
        "disqualified": 1,
        "lifecycle_excluded": 1,
    }
    assert enrollments(session_factory) == [
        ("ana@acme.io", "it-awareness"),
        ("fay@acme.io", "finance-consideration"),
    ]
    with session_factory() as session:
        enrollment = session.scalars(select(Enrollment).order_by(Enrollment.id)).first()
    assert enrollment is not None
    assert enrollment.sequence_version == catalog.latest("it-awareness").version
    assert (enrollment.current_step, enrollment.next_run_at) == ("welcome", NOW)


def test_entry_policy_again_reenrolls_after_the_cooldown(
    tmp_path: Path, session_factory: sessionmaker[Session], catalog: Catalog
) -> None:
    path = write_csv(tmp_path, "a.csv", HEADER, "fay@acme.io,Fay,finance-leader,consideration,")
    run_import(path, session_factory, catalog)
    with transaction(session_factory) as session:
        enrollment = session.scalars(select(Enrollment)).one()
        enrollment.status, enrollment.exited_at = "completed", NOW + timedelta(days=5)

    def at(day: int) -> ImportReport:
        funnel = shipped_funnel(catalog, load_settings(default_timezone="UTC"))
        return import_leads(path, session_factory, funnel, now=NOW + timedelta(days=day))

    assert at(20).not_enrolled == {"cooling_down": 1}  # 15 days after the exit
    assert at(35).enrolled == {"finance-consideration": 1}  # 30 days after the exit
    assert at(36).not_enrolled == {"already_active": 1}


# --- the file itself ----------------------------------------------------------------------


def test_a_file_without_an_email_column_is_refused_before_any_write(
    tmp_path: Path, session_factory: sessionmaker[Session], catalog: Catalog
) -> None:
    path = write_csv(tmp_path, "a.csv", "mail,name", "ana@acme.io,Ana")
    with pytest.raises(ImportAborted, match="no 'email' column; found 'mail', 'name'"):
        check_file(path)
    with pytest.raises(ImportAborted, match="no 'email' column"):
        run_import(path, session_factory, catalog)
    empty = write_csv(tmp_path, "empty.csv", "")
    with pytest.raises(ImportAborted, match="is empty"):
        run_import(empty, session_factory, catalog)
    twice = write_csv(tmp_path, "twice.csv", "email,Email", "a@acme.io,b@acme.io")
    with pytest.raises(ImportAborted, match="names email twice"):
        run_import(twice, session_factory, catalog)
    with pytest.raises(ImportAborted, match="cannot read"):
        run_import(tmp_path / "missing.csv", session_factory, catalog)
    assert leads_by_email(session_factory) == {}


def test_bom_bad_bytes_and_ragged_rows(
    tmp_path: Path, session_factory: sessionmaker[Session], catalog: Catalog
) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(
        b"\xef\xbb\xbfEmail,First Name,persona,\r\n"
        b"ana@acme.io,Ana,it-leader,\r\n"
        b"bob@acme.io,B\xe9la,it-leader,\r\n"
        b"cy@acme.io,Cy,it-leader,,surplus\r\n"
        b"di@acme.io,Di,it-leader,stray\r\n"
        b'ed@acme.io,"Ed\x00",it-leader\r\n'
    )
    report = run_import(path, session_factory, catalog)

    assert (report.rows, report.created, report.skipped) == (5, 1, 4)
    assert [str(e) for e in report.errors] == [
        "row 3: first_name: is not valid UTF-8 text (save the file as UTF-8)",
        "row 4: 5 values but the header has 4 columns",
        "row 5: column 4: has a value but no header",
        "row 6: first_name: contains a NUL character",
    ]
    assert leads_by_email(session_factory)["ana@acme.io"].first_name == "Ana"


def test_a_database_error_rolls_back_only_its_batch(
    engine: Engine, tmp_path: Path, session_factory: sessionmaker[Session], catalog: Catalog
) -> None:
    path = write_csv(
        tmp_path,
        "leads.csv",
        HEADER,
        "a@acme.io,A,it-leader,awareness,lead",
        "b@acme.io,B,it-leader,awareness,lead",
        "boom@acme.io,Boom,it-leader,awareness,lead",
        "c@acme.io,C,it-leader,awareness,lead",
        "d@acme.io,D,it-leader,awareness,lead",
    )

    def fail(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("INSERT INTO leads") and "boom@acme.io" in repr(parameters):
            raise OperationalError(statement, parameters, Exception("disk I/O error"))

    event.listen(engine, "before_cursor_execute", fail)
    report = run_import(path, session_factory, catalog, batch_size=2)
    event.remove(engine, "before_cursor_execute", fail)

    assert (report.created, report.skipped, report.database_errors) == (3, 2, 1)
    assert [str(e) for e in report.errors] == [
        "row 4: database error, rows 4-5 were not imported: disk I/O error"
    ]
    assert sorted(leads_by_email(session_factory)) == ["a@acme.io", "b@acme.io", "d@acme.io"]
    assert len(enrollments(session_factory)) == 3


def test_a_unique_violation_is_retried_once(
    engine: Engine, tmp_path: Path, session_factory: sessionmaker[Session], catalog: Catalog
) -> None:
    """Another importer inserting the same address at once: the retry finds and updates it."""
    path = write_csv(tmp_path, "a.csv", HEADER, "a@acme.io,A,it-leader,awareness,lead")
    failures = []

    def conflict(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("INSERT INTO leads") and not failures:
            failures.append(statement)
            raise IntegrityError(statement, parameters, Exception("duplicate key"))

    event.listen(engine, "before_cursor_execute", conflict)
    report = run_import(path, session_factory, catalog)
    event.remove(engine, "before_cursor_execute", conflict)

    assert failures and report.errors == [] and report.created == 1
    assert list(leads_by_email(session_factory)) == ["a@acme.io"]


@contextmanager
def counting(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_a_large_file_streams_in_batches_without_a_query_per_row(
    engine: Engine, tmp_path: Path, session_factory: sessionmaker[Session], catalog: Catalog
) -> None:
    rows = 5_000
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as out:
        out.write("email,first_name,persona,journey_stage,lifecycle_stage,country,region\n")
        for n in range(rows):
            persona, stage = (
                ("it-leader", "awareness") if n % 2 else ("finance-leader", "consideration")
            )
            lifecycle = "mql" if n % 10 == 0 else "lead"
            out.write(f"lead{n}@example.com,Lead {n},{persona},{stage},{lifecycle},DE,r{n % 7}\n")
    seen: list[int] = []

    with counting(engine) as statements:
        report = run_import(path, session_factory, catalog, on_progress=seen.append)

    assert (report.rows, report.created, report.skipped) == (rows, rows, 0)
    assert report.enrolled == {"it-awareness": 2_500, "finance-consideration": 2_000}
    assert report.not_enrolled == {"lifecycle_excluded": 500}
    assert seen[:2] == [500, 1_000] and seen[-1] == rows
    # Ten batches of a handful of statements each (with the first stage of each new lead
    # recorded: its score read, the entries inserted); a query per row would be thousands.
    assert len(statements) < 200, len(statements)
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Lead)) == rows
        assert session.scalar(select(func.count()).select_from(Enrollment)) == 4_500

    with counting(engine) as statements:
        again = run_import(path, session_factory, catalog)
    assert (again.created, again.updated) == (0, rows)
    assert len(statements) < 150, len(statements)


# --- LeadIn on its own (the API reuses it) ------------------------------------------------


def test_lead_in_normalizes_and_names_the_field() -> None:
    lead = LeadIn.model_validate(
        {
            "email": "  Ana@ACME.io ",
            "company_size": "12,000",
            "country": "uk",
            "locale": "zh_hant_tw",
        },
        context=lead_context(["it-leader"]),
    )
    assert (lead.email, lead.company_size, lead.country, lead.locale) == (
        "Ana@acme.io",
        12_000,
        "GB",
        "zh-Hant-TW",
    )
    assert lead.provided() == {
        "email": "Ana@acme.io",
        "company_size": 12_000,
        "country": "GB",
        "locale": "zh-Hant-TW",
    }
    with pytest.raises(ValueError, match="persona") as error:
        LeadIn.model_validate(
            {"email": "a@acme.io", "persona": "cfo"}, context=lead_context(["it-leader"])
        )
    assert "unknown persona 'cfo'" in str(error.value)


# --- the CLI ------------------------------------------------------------------------------

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


@pytest.fixture
def sequences_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "sequences"
    folder.mkdir()
    (folder / "it.yaml").write_text(SEQUENCE_YAML, encoding="utf-8")
    return folder


def cli(db_url: str, *args: str) -> Any:
    env = {
        "NURTURE_DATABASE_URL": db_url,
        "NURTURE_DEFAULT_TIMEZONE": "Asia/Seoul",
        "COLUMNS": "200",
    }
    return CliRunner().invoke(app, list(args), env=env)


def test_cli_import_prints_errors_and_a_summary(
    db_url: str, tmp_path: Path, sequences_dir: Path, session_factory: sessionmaker[Session]
) -> None:
    path = write_csv(
        tmp_path,
        "leads.csv",
        HEADER,
        "ana@acme.io,Ana,it-leader,awareness,lead",
        "nope,Bob,it-leader,awareness,lead",
    )
    result = cli(db_url, "leads", "import", str(path), "--sequences", str(sequences_dir))

    assert result.exit_code == 0, result.output
    assert "the header is row 1" in result.stdout
    assert "row 3: email: 'nope' is not a valid email address" in result.stdout
    assert "enrolled in it-awareness" in result.stdout
    with session_factory() as session:
        assert session.scalars(select(SequenceVersion.key)).all() == ["it-awareness"]
        ana = session.scalars(select(Lead)).one()
    assert ana.timezone == "Asia/Seoul"  # NURTURE_DEFAULT_TIMEZONE

    listed = cli(db_url, "leads", "list", "--sequence", "it-awareness")
    assert listed.exit_code == 0, listed.output
    assert "ana@acme.io" in listed.stdout and "welcome" in listed.stdout
    assert "KST" in listed.stdout  # the next run, in the lead's zone
    empty = cli(db_url, "leads", "list", "--sequence", "other")
    assert "ana@acme.io" not in empty.stdout and "0 of 0" in empty.stdout


def test_cli_json_report(db_url: str, tmp_path: Path, sequences_dir: Path) -> None:
    many_bad = [f"bad{n},X,it-leader,awareness,lead" for n in range(60)]
    path = write_csv(tmp_path, "leads.csv", HEADER, "ana@acme.io,Ana,it-leader,,", *many_bad)
    args = ("leads", "import", str(path), "--sequences", str(sequences_dir))

    report = json.loads(cli(db_url, *args, "--json").stdout)
    assert (report["rows"], report["created"], report["skipped"]) == (61, 1, 60)
    assert report["enrolled"] == {"it-awareness": 1}
    assert report["errors"][0] == {
        "row": 3,
        "field": "email",
        "message": report["errors"][0]["message"],
    }
    assert len(report["errors"]) == 60

    human = cli(db_url, *args)
    assert "... and 10 more" in human.stdout
    assert json.loads(cli(db_url, *args, "--json").stdout)["updated"] == 1


def test_cli_refuses_what_it_cannot_import(
    db_url: str, tmp_path: Path, sequences_dir: Path, session_factory: sessionmaker[Session]
) -> None:
    no_email = write_csv(tmp_path, "a.csv", "name", "Ana")
    result = cli(db_url, "leads", "import", str(no_email), "--sequences", str(sequences_dir))
    assert result.exit_code == 1 and "no 'email' column" in result.output
    as_json = cli(
        db_url, "leads", "import", str(no_email), "--sequences", str(sequences_dir), "--json"
    )
    assert as_json.exit_code == 1 and "no 'email' column" in json.loads(as_json.stdout)["error"]

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.yaml").write_text("key: bad\nname: Bad\nsteps: []\n", encoding="utf-8")
    good = write_csv(tmp_path, "b.csv", HEADER, "ana@acme.io,Ana,it-leader,awareness,lead")
    result = cli(db_url, "leads", "import", str(good), "--sequences", str(broken))
    assert result.exit_code == 1 and "bad.yaml:" in result.output

    with session_factory() as session:  # nothing was written
        assert session.scalars(select(SequenceVersion)).all() == []
        assert session.scalars(select(Lead)).all() == []


def test_cli_says_to_migrate_an_empty_database(tmp_path: Path, sequences_dir: Path) -> None:
    path = write_csv(tmp_path, "a.csv", HEADER, "ana@acme.io,Ana,it-leader,awareness,lead")
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = cli(url, "leads", "import", str(path), "--sequences", str(sequences_dir))
    assert result.exit_code == 1
    assert "run `nurture db upgrade`" in result.output
    listed = cli(url, "leads", "list")
    assert listed.exit_code == 1 and "nurture db upgrade" in listed.output


def test_a_name_with_a_control_character_is_a_bad_row() -> None:
    from pydantic import ValidationError

    from nurture.leads.schema import LeadIn

    with pytest.raises(ValidationError, match="control character"):
        LeadIn.model_validate({"email": "a@example.com", "first_name": "A\x0bReply-To: x"})
