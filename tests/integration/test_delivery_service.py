"""The engine's services end to end on a real database: what is sent, when, and what a mail
client sees. Service-level tests use the in-memory transport; delivery tests a real SMTP
server (aiosmtpd) on loopback. Time is always explicit (and frozen while a tick runs)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from support.engine import (
    BASE_URL,
    MONDAY,
    SECRET,
    add_lead,
    enrollment,
    enrollments,
    events,
    make_runtime,
    messages,
    tick_at,
)
from support.smtp_server import SmtpSink, smtp_sink

from nurture.db.models import Enrollment, Event, Lead, Link, Message, Suppression
from nurture.db.session import transaction
from nurture.delivery.transports import MemoryTransport, TransportError
from nurture.runtime import Runtime
from nurture.sequences.enrollment import enroll
from nurture.tracking.tokens import verify

__all__ = ["smtp_sink"]  # the fixture, imported so pytest finds it

GUIDE = "https://docs.example.com/guide?step=1"
KO_GUIDE = "https://docs.example.com/ko/guide"


def subjects(transport: MemoryTransport) -> list[str]:
    return [str(m["Subject"]) for m in transport.messages]


# ------------------------------------------------------------------ scheduling (memory)


def test_due_step_goes_out_at_once_then_the_next_after_the_wait(
    rt: Runtime, memory: MemoryTransport
) -> None:
    lead = add_lead(rt, "alex@acme.example")

    report = tick_at(rt, MONDAY)

    assert report.total_sent == 1
    assert subjects(memory) == ["Alex, welcome aboard"]
    [welcome] = messages(rt)
    assert (welcome.step_id, welcome.status, welcome.sent_at) == ("welcome", "sent", MONDAY)
    waiting = enrollment(rt, lead)
    assert waiting.current_step == "followup"
    assert waiting.next_run_at == MONDAY + timedelta(days=3)

    assert tick_at(rt, MONDAY + timedelta(days=3) - timedelta(seconds=1)).total_sent == 0
    assert tick_at(rt, MONDAY + timedelta(days=3)).total_sent == 1
    assert subjects(memory) == ["Alex, welcome aboard", "A follow-up for Acme"]
    assert enrollment(rt, lead).status == "completed"


def test_due_outside_the_window_is_deferred_to_the_opening_with_the_reason(
    rt: Runtime, memory: MemoryTransport
) -> None:
    early = MONDAY.replace(hour=7)  # 07:00 UTC: the window opens at 09:00 in the lead's zone
    lead = add_lead(rt, "early@acme.example", early)

    report = tick_at(rt, early)

    assert report.total_sent == 0
    assert report.deferred == {("drip", "welcome", "window"): 1}
    opening = MONDAY.replace(hour=9)
    assert enrollment(rt, lead).next_run_at == opening
    [deferral] = events(rt, "deferred")
    assert deferral.data["reason"] == "window"
    assert deferral.data["until"] == opening.isoformat()
    assert memory.sent == []

    assert tick_at(rt, opening).total_sent == 1
    assert messages(rt)[0].sent_at == opening


@pytest.mark.parametrize("opened", [True, False])
def test_branch_on_opened_reads_the_events_table(
    rt: Runtime, memory: MemoryTransport, opened: bool
) -> None:
    lead = add_lead(rt, "bea@acme.example", persona="brancher")
    tick_at(rt, MONDAY)
    [welcome] = messages(rt)
    if opened:
        with transaction(rt.sessions) as session:
            session.add(
                Event(
                    lead_id=lead,
                    message_id=welcome.id,
                    type="opened",
                    occurred_at=MONDAY + timedelta(hours=2),
                    dedupe_key=f"test-open:{welcome.id}",
                    data={},
                )
            )

    tick_at(rt, MONDAY + timedelta(days=1))

    expected = "hot" if opened else "cold"
    assert [m.step_id for m in messages(rt)] == ["welcome", expected]
    assert subjects(memory)[-1] == ("Glad you liked it" if opened else "Still interested?")


def test_frequency_cap_defers_to_the_release_and_sends_then(
    rt: Runtime, memory: MemoryTransport
) -> None:
    # Three emails from another sequence in the last 7 days: the cap (3 per 7d) is full.
    sent = [datetime(2026, 2, 24, 12, tzinfo=UTC), MONDAY - timedelta(days=2), MONDAY]
    lead = add_lead(rt, "busy@acme.example", enrolled=False)
    _add_past_sends(rt, lead, sent)
    with transaction(rt.sessions) as session:
        enroll(session, session.get_one(Lead, lead), rt.catalog, MONDAY)

    report = tick_at(rt, MONDAY)

    release = sent[0] + timedelta(days=7)  # the oldest send ages out
    assert report.total_sent == 0
    assert report.deferred == {("drip", "welcome", "cap"): 1}
    [deferral] = events(rt, "deferred")
    assert (deferral.data["reason"], deferral.data["until"]) == ("cap", release.isoformat())
    assert enrollment(rt, lead).next_run_at == release
    assert enrollment(rt, lead).last_deferral.startswith("cap until")

    assert tick_at(rt, release - timedelta(seconds=1)).total_sent == 0
    assert tick_at(rt, release).total_sent == 1
    [welcome] = messages(rt, sequence_key="drip")
    assert (welcome.status, welcome.sent_at) == ("sent", release)
    assert len(memory.sent) == 1


def _add_past_sends(rt: Runtime, lead_id: int, sent: list[datetime]) -> None:
    with transaction(rt.sessions) as session:
        past = Enrollment(
            lead_id=lead_id,
            sequence_key="other",
            sequence_version=rt.catalog.latest("other").version,
            current_step="note",
            status="completed",
            entered_at=sent[0],
            step_started_at=sent[0],
            exited_at=sent[-1],
        )
        session.add(past)
        session.flush()
        for n, at in enumerate(sent):
            session.add(
                Message(
                    enrollment_id=past.id,
                    lead_id=lead_id,
                    sequence_key="other",
                    sequence_version=past.sequence_version,
                    step_id=f"past-{n}",
                    status="sent",
                    to_email="busy@acme.example",
                    created_at=at,
                    sent_at=at,
                )
            )


def test_a_suppression_is_checked_before_every_send(rt: Runtime, memory: MemoryTransport) -> None:
    lead = add_lead(rt, "Leaving@Acme.example")
    tick_at(rt, MONDAY)
    with transaction(rt.sessions) as session:  # unsubscribed after the welcome
        session.add(Suppression(email="leaving@acme.example", reason="unsubscribed"))

    assert tick_at(rt, MONDAY + timedelta(days=3)).total_sent == 0

    assert [m.step_id for m in messages(rt)] == ["welcome"]
    gone = enrollment(rt, lead)
    assert (gone.status, gone.exit_reason) == ("exited", "suppressed: unsubscribed")
    assert len(memory.sent) == 1


def test_reentry_only_after_the_cooldown(rt: Runtime, memory: MemoryTransport) -> None:
    lead = add_lead(rt, "again@acme.example")
    tick_at(rt, MONDAY)
    finished_at = MONDAY + timedelta(days=3)
    tick_at(rt, finished_at)
    assert enrollment(rt, lead).status == "completed"
    assert enrollment(rt, lead).exited_at == finished_at

    cooled = finished_at + timedelta(days=30)  # entry: again, cooldown 30d
    assert _enroll_at(rt, lead, cooled - timedelta(seconds=1)) is False
    assert _enroll_at(rt, lead, cooled) is True
    assert [e.status for e in enrollments(rt, lead)] == ["completed", "active"]

    # 2026-04-04 is a Saturday: the new welcome waits for Monday's window, then goes out.
    tick_at(rt, cooled)
    monday = datetime(2026, 4, 6, 9, tzinfo=UTC)
    assert enrollment(rt, lead).next_run_at == monday
    tick_at(rt, monday)
    assert [m.step_id for m in messages(rt)] == ["welcome", "followup", "welcome"]
    assert len({m.enrollment_id for m in messages(rt)}) == 2


def _enroll_at(rt: Runtime, lead_id: int, now: datetime) -> bool:
    with transaction(rt.sessions) as session:
        lead = session.get_one(Lead, lead_id)
        return enroll(session, lead, rt.catalog, now) is not None


def test_send_window_follows_the_lead_zone_across_dst(rt: Runtime, memory: MemoryTransport) -> None:
    # New York springs forward on Sunday 2026-03-08: 09:00 local is 14:00 UTC before, 13:00 after.
    saturday = datetime(2026, 3, 7, 20, tzinfo=UTC)  # 15:00 EST, a Saturday
    weekend = add_lead(rt, "weekend@ny.example", saturday, timezone="America/New_York")
    friday = datetime(2026, 3, 6, 21, tzinfo=UTC)  # 16:00 EST, inside Friday's window
    late = add_lead(rt, "late@ny.example", friday, timezone="America/New_York")

    assert tick_at(rt, friday).total_sent == 1  # late's welcome
    # 3d later is Monday 21:00 UTC = 17:00 EDT (16:00 had the clocks not changed): closed.
    assert enrollment(rt, late).next_run_at == friday + timedelta(days=3)
    tick_at(rt, saturday)
    monday_open = datetime(2026, 3, 9, 13, tzinfo=UTC)
    assert enrollment(rt, weekend).next_run_at == monday_open

    assert tick_at(rt, monday_open - timedelta(seconds=1)).total_sent == 0
    assert tick_at(rt, monday_open).total_sent == 1
    assert tick_at(rt, friday + timedelta(days=3)).total_sent == 0
    tuesday_open = datetime(2026, 3, 10, 13, tzinfo=UTC)
    assert enrollment(rt, late).next_run_at == tuesday_open
    assert enrollment(rt, late).last_deferral == f"window until {tuesday_open.isoformat()}"
    assert tick_at(rt, tuesday_open).total_sent == 1
    sent = {(m.to_email, m.step_id): m.sent_at for m in messages(rt)}
    assert sent == {
        ("late@ny.example", "welcome"): friday,
        ("weekend@ny.example", "welcome"): monday_open,
        ("late@ny.example", "followup"): tuesday_open,
    }


# ------------------------------------------------------------------------- SMTP delivery

# 10:00 in Seoul on a Monday: inside the window for a lead there.
SEOUL_MORNING = datetime(2026, 3, 2, 1, tzinfo=UTC)


@pytest.fixture
def smtp_rt(db_url: str, smtp_sink: SmtpSink) -> Iterator[Runtime]:
    runtime = make_runtime(
        db_url,
        transport="smtp",
        smtp_host=smtp_sink.host,
        smtp_port=smtp_sink.port,
        smtp_timeout=5.0,
        sender_name="너처 팀",
        sender_email="hello@nurture.example",
        unsubscribe_mailto="unsubscribe@nurture.example",
    )
    yield runtime
    runtime.close()


def test_smtp_delivers_what_a_mail_client_expects(smtp_rt: Runtime, smtp_sink: SmtpSink) -> None:
    add_lead(
        smtp_rt,
        "minjun@hanbit.example",
        SEOUL_MORNING,
        first_name="민준",
        locale="ko",
        timezone="Asia/Seoul",
    )

    assert tick_at(smtp_rt, SEOUL_MORNING).total_sent == 1

    [received] = smtp_sink.messages
    [row] = messages(smtp_rt)
    assert received.recipients == ("minjun@hanbit.example",)
    assert received.envelope_from == "hello@nurture.example"
    assert received.raw.isascii() and b"\r\n" in received.raw
    msg = received.message
    assert msg["Subject"] == "(광고) 민준님, 환영합니다"
    assert msg["From"].addresses[0].display_name == "너처 팀"
    assert msg["Message-ID"] == row.message_id
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    assert "민준님, 안녕하세요." in text.get_content()
    _assert_link(smtp_rt, text.get_content(), html.get_content(), row.id, KO_GUIDE)
    assert 'style="color: #333333' in html.get_content()  # CSS inlined
    _assert_unsubscribe(msg["List-Unsubscribe"], msg["List-Unsubscribe-Post"], row.id)
    unsubscribe = _unsubscribe_url(msg["List-Unsubscribe"])
    assert f'href="{unsubscribe}"' in html.get_content()
    assert f"Unsubscribe: {unsubscribe}" in text.get_content()
    assert (row.status, row.attempts, row.subject) == ("sent", 1, "(광고) 민준님, 환영합니다")


def _assert_link(rt: Runtime, text: str, html: str, message_id: int, original: str) -> None:
    """The template's link is in both parts, as one signed click URL that the click
    redirect resolves (through the stored link) to the template's URL."""
    clicks = set(re.findall(rf"{re.escape(BASE_URL)}/c/[\w.-]+", html + text))
    assert len(clicks) == 1, clicks
    [click] = clicks
    assert f'href="{click}"' in html and click in text
    assert verify(SECRET, "click", click.rsplit("/", 1)[1]) == {"m": message_id, "l": 1}
    with rt.sessions() as session:
        [link] = session.scalars(select(Link).where(Link.message_id == message_id)).all()
    assert link.position == 1
    assert link.url.startswith(original)
    assert "utm_source=nurture" in link.url


def _unsubscribe_url(header: str) -> str:
    urls = re.findall(r"<([^>]+)>", str(header))
    return next(u for u in urls if u.startswith("https://"))


def _assert_unsubscribe(header: str, post: str, message_id: int) -> None:
    urls = re.findall(r"<([^>]+)>", str(header))
    assert urls[1] == "mailto:unsubscribe@nurture.example"
    assert urls[0].startswith(f"{BASE_URL}/u/")
    token = urls[0].rsplit("/", 1)[1]
    assert verify(SECRET, "unsubscribe", token) == {"m": message_id}
    assert post == "List-Unsubscribe=One-Click"


def test_smtp_english_lead_gets_the_default_template_and_its_links(
    smtp_rt: Runtime, smtp_sink: SmtpSink
) -> None:
    add_lead(smtp_rt, "alex@acme.example")
    tick_at(smtp_rt, MONDAY)
    [received] = smtp_sink.messages
    msg = received.message
    assert msg["Subject"] == "Alex, welcome aboard"
    html = msg.get_body(("html",))
    text = msg.get_body(("plain",))
    assert html is not None and text is not None
    [row] = messages(smtp_rt)
    _assert_link(smtp_rt, text.get_content(), html.get_content(), row.id, GUIDE)


@pytest.mark.parametrize("stage", ["data", "mail"])
def test_smtp_4xx_is_retried_and_delivered_once(
    smtp_rt: Runtime, smtp_sink: SmtpSink, stage: str
) -> None:
    lead = add_lead(smtp_rt, "grey@acme.example")
    if stage == "data":
        smtp_sink.respond_to_data("451 4.3.0 greylisted, try later", times=1)
    else:
        smtp_sink.respond_to_mail("451 4.3.0 busy, try later", times=1)

    first = tick_at(smtp_rt, MONDAY)

    assert first.total_sent == 0
    assert smtp_sink.messages == []
    [row] = messages(smtp_rt)
    assert (row.status, row.attempts) == ("retry", 1)
    assert "451" in row.error
    [deferral] = events(smtp_rt, "deferred")
    assert deferral.data["reason"] == "smtp temporary failure"
    retry_at = enrollment(smtp_rt, lead).next_run_at
    assert retry_at is not None and MONDAY < retry_at <= MONDAY + timedelta(hours=1)

    assert tick_at(smtp_rt, retry_at).total_sent == 1
    assert len(smtp_sink.messages) == 1
    [row] = messages(smtp_rt)
    assert (row.status, row.attempts, row.sent_at, row.error) == ("sent", 2, retry_at, "")
    assert enrollment(smtp_rt, lead).current_step == "followup"


def test_smtp_5xx_bounces_suppresses_and_never_retries(
    smtp_rt: Runtime, smtp_sink: SmtpSink
) -> None:
    lead = add_lead(smtp_rt, "Gone@Acme.example")
    smtp_sink.respond_to_rcpt("gone@acme.example", "550 5.1.1 no such user")

    tick_at(smtp_rt, MONDAY)

    [row] = messages(smtp_rt)
    assert (row.status, row.attempts) == ("bounced", 1)
    assert "550" in row.error
    gone = enrollment(smtp_rt, lead)
    assert (gone.status, gone.exit_reason, gone.next_run_at) == (
        "exited",
        "suppressed: bounced",
        None,
    )
    with smtp_rt.sessions() as session:
        [suppression] = session.scalars(select(Suppression)).all()
    assert (suppression.email, suppression.reason) == ("gone@acme.example", "bounced")
    assert [e.data["error"] for e in events(smtp_rt, "bounced")] == [row.error]

    connections = smtp_sink.connections
    for days in (0, 1, 3, 10):
        assert tick_at(smtp_rt, MONDAY + timedelta(days=days, minutes=5)).total_sent == 0
    assert smtp_sink.connections == connections  # nothing even tried
    assert len(messages(smtp_rt)) == 1
    # Another sequence will not take the address either.
    with transaction(smtp_rt.sessions) as session:
        moved = session.get_one(Lead, lead)
        moved.persona = "other"
        assert enroll(session, moved, smtp_rt.catalog, MONDAY + timedelta(days=1)) is None
    assert len(enrollments(smtp_rt, lead)) == 1


def test_temporary_failures_past_the_retry_limit_fail_the_message(
    db_url: str, memory: MemoryTransport
) -> None:
    rt = make_runtime(db_url, memory, send_max_retries=2)
    try:
        lead = add_lead(rt, "flaky@acme.example")
        memory.fail_next(TransportError("451 4.3.0 try later"), times=5)

        tick_at(rt, MONDAY)
        retry_at = enrollment(rt, lead).next_run_at
        assert retry_at is not None
        tick_at(rt, retry_at)

        [row] = messages(rt)
        assert (row.status, row.attempts) == ("failed", 2)
        gone = enrollment(rt, lead)
        assert gone.status == "exited" and gone.exit_reason.startswith("delivery failed")
        assert tick_at(rt, retry_at + timedelta(hours=2)).total_sent == 0
        assert memory.attempts == 2 and memory.sent == []
    finally:
        rt.close()
