"""Terminal escapes in lead data never reach the terminal: every command's output (tables,
lines, --json) is free of ESC sequences, C0 controls but tab and newline, DEL and C1."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import select
from support.funnel import MONDAY, add_lead, behave, make_runtime, use_fixture_folder
from typer.testing import CliRunner, Result

from nurture.cli import app
from nurture.db.models import Enrollment, Lead, Message
from nurture.db.session import transaction
from nurture.runtime import Runtime

EMAIL = "ana@acme.example"
# Window title, hyperlink (OSC 8), colour, clear screen, 8-bit CSI and OSC, bell, DEL,
# backspace, a carriage return that would overwrite the line.
HOSTILE = {
    "first_name": "Ana\x1b]0;pwned\x07",
    "last_name": "\x1b[31mRed\x1b[0m",
    "company": "Acme\x9b31m\x9d0;title\x9c",
    "title": "CFO\x1b[2J\x1b[H",
    "industry": "re\x7ftail\x08\x08",
}
ATTRIBUTES = {
    "note": "\x1b]8;;https://evil.example\x1b\\click me\x1b]8;;\x1b\\",
    "\x1b[5mkey": "line\rfake line",
    "bell": "\x07\x07",
    "c1": "\x85\x90dcs\x9c\x9b2J",
}
FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@pytest.fixture
def rt(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    use_fixture_folder(monkeypatch)
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    monkeypatch.setenv("COLUMNS", "250")
    runtime = make_runtime(db_url)
    yield runtime
    runtime.close()


def hostile_lead(rt: Runtime, mql: bool = False) -> int:
    """A lead whose fields hold terminal escapes (as data from a CRM sync could), stored
    as it is: the output layer must cope with whatever the database holds."""
    lead_id = add_lead(rt, EMAIL, persona="tester", enrolled=not mql)
    if mql:
        for n in range(4):
            behave(rt, lead_id, "page_visit", MONDAY + timedelta(seconds=n))
    with transaction(rt.sessions) as session:
        lead = session.get(Lead, lead_id)
        assert lead is not None
        for name, value in HOSTILE.items():
            setattr(lead, name, value)
        lead.attributes = ATTRIBUTES
        lead.owner = "\x1b]0;owner\x07sam"
    return lead_id


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def assert_inert(output: str) -> None:
    found = sorted({f"U+{ord(c):04X}" for c in FORBIDDEN.findall(output)})
    assert not found, f"control characters in the output: {found}\n{output!r}"


def test_lead_show_prints_no_terminal_escapes(rt: Runtime) -> None:
    hostile_lead(rt)
    output = invoke("lead", "show", EMAIL).output
    assert_inert(output)
    assert "Ana" in output and "Red" in output and "click me" in output  # the text stays


def test_lead_show_json_escapes_what_json_leaves_raw(rt: Runtime) -> None:
    hostile_lead(rt)
    output = invoke("lead", "show", EMAIL, "--json").output
    assert_inert(output)
    shown = json.loads(output)  # still JSON, with the data as stored
    assert shown["lead"]["company"] == HOSTILE["company"]
    assert shown["lead"]["attributes"] == ATTRIBUTES


def test_leads_list_prints_no_terminal_escapes(rt: Runtime) -> None:
    hostile_lead(rt)
    with transaction(rt.sessions) as session:
        lead = session.scalars(select(Lead)).one()
        lead.persona = "tester\x1b[8m"
    for args in (("leads", "list"), ("leads", "list", "--json")):
        output = invoke(*args).output
        assert_inert(output)
        assert "acme.example" in output


def test_sales_status_and_report_print_no_terminal_escapes(rt: Runtime) -> None:
    hostile_lead(rt, mql=True)
    with freeze_time(MONDAY + timedelta(hours=2)):
        for args in (
            ("sales", "status", EMAIL),
            ("sales", "status", EMAIL, "--json"),
            ("report", "sla"),
            ("report", "sla", "--json"),
        ):
            assert_inert(invoke(*args).output)


def test_outbox_prints_no_terminal_escapes(rt: Runtime) -> None:
    lead_id = hostile_lead(rt)
    with transaction(rt.sessions) as session:
        enrollment = session.scalars(select(Enrollment).where(Enrollment.lead_id == lead_id)).one()
        session.add(
            Message(
                enrollment_id=enrollment.id, lead_id=lead_id,
                sequence_key=enrollment.sequence_key,
                sequence_version=enrollment.sequence_version, step_id="welcome",
                status="failed", to_email=EMAIL, attempts=1, created_at=MONDAY,
                error="550 \x1b]0;owned\x07 rejected\x9b",
            )
        )  # fmt: skip
    for args in (("outbox",), ("outbox", "--json")):
        output = invoke(*args).output
        assert_inert(output)
        assert "rejected" in output


def test_clean_removes_whole_sequences_and_keeps_text() -> None:
    from nurture.cli.output import clean

    assert clean("a\x1b]0;title\x07b") == "ab"
    assert clean("a\x1b]8;;https://x.example\x1b\\link\x1b]8;;\x1b\\b") == "alinkb"
    assert clean("\x1b[1;31mred\x1b[0m") == "red"
    assert clean("x\x9b2Jy\x9d0;t\x9cz") == "xyz"
    assert clean("tab\tnew\nline") == "tab\tnew\nline"
    assert clean("del\x7f bs\x08 cr\r nul\x00 c1\x85") == "del bs cr nul c1"
    assert clean("Zoë, 김, ☃") == "Zoë, 김, ☃"


def test_echo_json_escapes_del_and_c1(capsys: pytest.CaptureFixture[str]) -> None:
    from nurture.cli.output import echo_json

    echo_json({"a": "\x9b\x7f\x1b", "b": "é"}, ensure_ascii=False)
    printed = capsys.readouterr().out
    assert_inert(printed)
    assert json.loads(printed) == {"a": "\x9b\x7f\x1b", "b": "é"}


def test_cleaning_never_turns_lead_data_into_markup() -> None:
    import io

    from rich.table import Table

    from nurture.cli.output import SafeConsole, escape

    out = io.StringIO()
    console = SafeConsole(file=out, force_terminal=True, color_system="truecolor", width=200)
    for value in (
        "[\x07link=https://evil.example]x[/link]",  # a control between "[" and the tag
        "\x1b\\[link=https://evil.example]x",  # ESC before the escaping backslash
        "\x1b]0;\x1b[link=https://evil.example]t[/link]",
        "ends with ESC \x1b",  # followed by our own [/] tag
    ):
        console.print(f"[bold]{escape(value)}[/] next")
        console.print(value)  # as a table cell is: markup, not escaped
    table = Table()
    table.add_column("persona")
    table.add_row("[link=https://evil.example]tester[/link] and [/bold]")
    console.print(table)
    printed = out.getvalue()
    assert "\x1b]8;" not in printed  # rich made no hyperlink out of the data
    assert printed.count("next") == 4 and "tester" in printed
