"""The engine's commands as an operator runs them: ``nurture tick``, ``outbox``, ``demo``
and ``run`` (in a real process, stopped with Ctrl-C)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from support.engine import (
    MONDAY,
    REPO_ROOT,
    SEQUENCES,
    TEMPLATES,
    add_lead,
    make_runtime,
    messages,
)
from typer.testing import CliRunner, Result

from nurture.cli import app
from nurture.db.models import Lead, Message
from nurture.db.session import transaction
from nurture.runtime import Runtime
from nurture.sequences.enrollment import enroll_many

# The process tests need one database, not both.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
BROKEN_SEQUENCES = REPO_ROOT / "tests" / "fixtures" / "authoring" / "broken"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No NURTURE_* from the machine; a wide terminal so tables are not folded."""
    for name in list(os.environ):
        if name.startswith("NURTURE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")
    return monkeypatch


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    return tmp_path / "outbox"


@pytest.fixture
def rt(db_url: str, clean_env: pytest.MonkeyPatch, outbox: Path) -> Iterator[Runtime]:
    """The prepared database, and the environment the commands read it from."""
    for name, value in {
        "NURTURE_DATABASE_URL": db_url,
        "NURTURE_SEQUENCES_DIR": str(SEQUENCES),
        "NURTURE_TEMPLATES_DIR": str(TEMPLATES),
        "NURTURE_TRANSPORT": "outbox",
        "NURTURE_OUTBOX_DIR": str(outbox),
    }.items():
        clean_env.setenv(name, value)
    runtime = make_runtime(db_url)
    yield runtime
    runtime.close()


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_tick_sends_what_is_due_and_prints_the_count(rt: Runtime, outbox: Path) -> None:
    add_lead(rt, "alex@acme.example")
    add_lead(rt, "sam@acme.example")

    result = invoke("tick", "--now", "2026-03-02T10:00:00+00:00")

    assert result.exit_code == 0, result.output
    assert "tick at 2026-03-02T10:00:00+00:00: 2 sent, 0 deferred, 0 finished" in result.output
    assert "welcome" in result.output  # the sent-by-step table
    assert len(list(outbox.glob("*.eml"))) == 2
    assert {m.sent_at for m in messages(rt)} == {MONDAY}

    again = invoke("tick", "--now", "2026-03-02T10:00:00+00:00")
    assert "0 sent" in again.output
    assert len(list(outbox.glob("*.eml"))) == 2


def test_tick_now_in_another_zone_is_the_same_instant(rt: Runtime) -> None:
    add_lead(rt, "alex@acme.example")
    result = invoke("tick", "--now", "2026-03-02T19:00:00+09:00")
    assert result.exit_code == 0, result.output
    assert "tick at 2026-03-02T10:00:00+00:00: 1 sent" in result.output


@pytest.mark.parametrize(
    ("value", "says"),
    [("2026-03-02T10:00:00", "give a time zone"), ("next tuesday", "not an ISO time")],
)
def test_tick_rejects_a_bad_now_without_a_traceback(rt: Runtime, value: str, says: str) -> None:
    add_lead(rt, "alex@acme.example")

    result = invoke("tick", "--now", value)

    assert result.exit_code != 0
    assert says in result.output
    assert "--now" in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, (ValueError, TypeError))
    assert messages(rt) == []


def test_tick_refuses_sequences_with_errors(rt: Runtime, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NURTURE_SEQUENCES_DIR", str(BROKEN_SEQUENCES))
    result = invoke("tick", "--now", "2026-03-02T10:00:00+00:00")
    assert result.exit_code == 1
    assert "the sequences have errors" in result.output
    assert ".yaml:" in result.output  # problems name file:line
    assert "Traceback" not in result.output


def test_outbox_lists_messages_by_status(rt: Runtime) -> None:
    add_lead(rt, "alex@acme.example")
    add_lead(rt, "sam@acme.example")
    assert invoke("tick", "--now", "2026-03-02T10:00:00+00:00").exit_code == 0
    with transaction(rt.sessions) as session:
        session.execute(
            update(Message)
            .where(Message.to_email == "sam@acme.example")
            .values(status="unknown", error="outcome unknown: the process stopped")
        )

    unknown = invoke("outbox", "--status", "unknown")
    everything = invoke("outbox")

    assert unknown.exit_code == 0, unknown.output
    assert "sam@acme.example" in unknown.output
    assert "outcome unknown" in unknown.output
    assert "alex@acme.example" not in unknown.output
    assert "alex@acme.example" in everything.output
    assert "sam@acme.example" in everything.output


def test_demo_runs_a_simulated_week_and_fills_the_outbox(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.chdir(REPO_ROOT)
    workdir = tmp_path / "demo"

    result = invoke("demo", "--weeks", "1", "--workdir", str(workdir))

    assert result.exit_code == 0, result.output
    for title in ("Sent, by sequence and step", "Deferred, and why", "Left a sequence"):
        assert title in result.output
    emls = list((workdir / "outbox").glob("*.eml"))
    assert emls
    assert f"{len(emls)} emails written to" in result.output
    assert (workdir / "nurture.db").is_file()
    first = emls[0].read_bytes()
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in first


def test_demo_outside_the_project_says_what_it_needs(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.chdir(tmp_path)
    result = invoke("demo", "--weeks", "1")
    assert result.exit_code == 2
    assert "nurture demo needs data/sample_leads.csv, sequences, templates" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "demo").exists()


@SQLITE_ONLY
def test_run_ticks_until_ctrl_c_with_a_log_line_per_batch(
    db_url: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    rt = make_runtime(db_url, now=now)
    add_lead(rt, "alex@acme.example", now - timedelta(minutes=1), persona="other")
    rt.close()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from nurture.cli import main; main()", "run"],
        env=_run_env(db_url, tmp_path / "outbox"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for(lambda: list((tmp_path / "outbox").glob("*.eml")), seconds=15)
        time.sleep(1.2)  # a few more (empty) passes
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 0, output
    assert "engine running" in output
    assert "batch: 1 enrollments, 1 sent" in output
    assert "stopping after the current batch (SIGINT)" in output
    assert "engine stopped" in output
    assert "Traceback" not in output
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1


def _wait_for(check: Callable[[], object], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing happened within {seconds}s")


@SQLITE_ONLY
def test_ctrl_c_during_a_batch_finishes_the_batch_and_loses_nothing(
    db_url: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    rt = make_runtime(db_url, now=now)
    _add_due_leads(rt, 150, now - timedelta(minutes=1))
    outbox = tmp_path / "outbox"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from nurture.cli import main; main()", "run"],
        env={**_run_env(db_url, outbox), "NURTURE_BATCH_SIZE": "150"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for(lambda: list(outbox.glob("*.eml")), seconds=15)
        proc.send_signal(signal.SIGINT)  # in the middle of the batch's sends
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    statuses = Counter(m.status for m in messages(rt))
    rt.close()
    assert proc.returncode == 0, output
    assert statuses == {"sent": 150}, output
    assert len(list(outbox.glob("*.eml"))) == 150


def _run_env(db_url: str, outbox: Path) -> dict[str, str]:
    return {
        **os.environ,
        "NURTURE_DATABASE_URL": db_url,
        "NURTURE_SEQUENCES_DIR": str(SEQUENCES),
        "NURTURE_TEMPLATES_DIR": str(TEMPLATES),
        "NURTURE_TRANSPORT": "outbox",
        "NURTURE_OUTBOX_DIR": str(outbox),
        "NURTURE_TICK_SECONDS": "0.5",
        "NURTURE_WEB_PORT": "0",  # should `run` serve the web app too: any free port
    }


def _add_due_leads(rt: Runtime, count: int, now: datetime) -> None:
    with transaction(rt.sessions) as session:
        leads = [
            Lead(email=f"lead{n}@acme.example", first_name="Alex", persona="other")
            for n in range(count)
        ]
        session.add_all(leads)
        outcomes = enroll_many(session, leads, rt.catalog, now)
    assert all(o.enrollment is not None for o in outcomes)
