"""Transports against a real SMTP server on 127.0.0.1 (aiosmtpd), a directory, and memory."""

from __future__ import annotations

import email
import email.policy
import pickle
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from support.smtp_server import SmtpSink, Tls, TlsPair, free_port, make_tls_pair, smtp_sink

from nurture.bootstrap import make_transport
from nurture.delivery.mime import OutgoingEmail, build_message, make_message_id
from nurture.delivery.smtp import SmtpTransport
from nurture.delivery.transports import MemoryTransport, OutboxTransport, Transport, TransportError
from nurture.settings import load_settings

__all__ = ["smtp_sink"]  # the fixture, imported from smtp_server (overridden below)

SENDER = "bounces@nurture.example"
LEAD = "minjun@example.co.kr"
SUBJECT = "리드 육성 가이드: 3단계"
CREDENTIALS = ("mailer", "s3cret")

# aiosmtpd itself touches its deprecated Session.login_data during AUTH.
pytestmark = pytest.mark.filterwarnings("ignore:Session.login_data is deprecated")


def message(n: int = 1, to: str = LEAD) -> EmailMessage:
    return build_message(
        OutgoingEmail(
            to_email=to,
            to_name="김민준",
            from_email="hello@nurture.example",
            from_name="너처 팀",
            subject=SUBJECT,
            html="<style>p{color:#336699}</style><p>3단계 안내 #" + str(n) + "</p>",
            text=f"3단계 안내 #{n}",
            message_id=make_message_id(f"nurture.{n}.abc", "nurture.example"),
            unsubscribe_url=f"https://nurture.example/u/{n}",
            date=datetime(2025, 3, 4, 0, 30, tzinfo=UTC),
        )
    )


def smtp(sink: SmtpSink, **options: object) -> SmtpTransport:
    return SmtpTransport(sink.host, sink.port, timeout=5, **options)  # type: ignore[arg-type]


def send(transport: Transport, n: int = 1, to: str = LEAD) -> None:
    transport.send(message(n, to), envelope_from=SENDER, to=to)


@pytest.fixture(scope="module")
def tls() -> TlsPair:
    return make_tls_pair()


@pytest.fixture(params=["one-command-at-a-time", "pipelining"])
def smtp_sink(request: pytest.FixtureRequest) -> Iterator[SmtpSink]:  # noqa: F811
    """Every SMTP test runs against a server without and with PIPELINING (RFC 2920): the
    transport uses it when offered, and the outcomes must be the same."""
    with SmtpSink(pipelining=request.param == "pipelining") as sink:
        yield sink


def test_pipelining_is_used_when_offered_and_content_is_dot_stuffed(smtp_sink: SmtpSink) -> None:
    transport = smtp(smtp_sink)
    msg = message(1)
    msg.get_payload()[0].set_content(".leading dot\n..two dots\nend\n", cte="7bit")
    with transport:
        transport.send(msg, envelope_from=SENDER, to=LEAD)
        send(transport, 2)
    assert transport.pipelined_sends == (2 if smtp_sink.pipelining else 0)
    first, second = smtp_sink.messages
    text = first.message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text == ".leading dot\n..two dots\nend\n"
    assert second.message["Message-ID"] == "<nurture.2.abc@nurture.example>"
    assert smtp_sink.connections == 1


def test_pipelined_refusal_of_every_recipient_keeps_the_connection_in_step(
    smtp_sink: SmtpSink,
) -> None:
    # The server answers DATA with 503/554 (no valid recipient) after a refused RCPT: every
    # pipelined reply must be read before the next transaction, or the replies shift.
    transport = smtp(smtp_sink)
    with transport:
        smtp_sink.respond_to_rcpt("gone@example.com", "550 5.1.1 no such user")
        for _ in range(2):
            with pytest.raises(TransportError) as caught:
                send(transport, 1, to="gone@example.com")
            assert (caught.value.permanent, caught.value.code) == (True, 550)
        send(transport, 2)
        send(transport, 3)
    assert [m.message["Message-ID"] for m in smtp_sink.messages] == [
        "<nurture.2.abc@nurture.example>",
        "<nurture.3.abc@nurture.example>",
    ]
    assert smtp_sink.connections == 1


# ---------------------------------------------------------------------------------- SMTP


def test_smtp_delivers_both_parts_with_decoded_subject(smtp_sink: SmtpSink) -> None:
    send(smtp(smtp_sink))
    [got] = smtp_sink.messages
    assert got.envelope_from == SENDER
    assert got.recipients == (LEAD,)
    msg = got.message
    assert msg["Subject"] == SUBJECT
    assert msg["Message-ID"] == "<nurture.1.abc@nurture.example>"
    text, html = msg.iter_parts()
    assert text.get_content().strip() == "3단계 안내 #1"
    assert 'style="color: #336699;"' in html.get_content()


def test_batch_reuses_one_connection(smtp_sink: SmtpSink) -> None:
    transport = smtp(smtp_sink)
    with transport:
        for n in range(5):
            send(transport, n)
    assert len(smtp_sink.messages) == 5
    assert smtp_sink.connections == 1
    assert {m.connection for m in smtp_sink.messages} == {1}


def test_sends_outside_a_batch_each_use_their_own_connection(smtp_sink: SmtpSink) -> None:
    transport = smtp(smtp_sink)
    for n in range(3):
        send(transport, n)
    assert [m.connection for m in smtp_sink.messages] == [1, 2, 3]


@pytest.mark.parametrize(
    ("script", "permanent", "code"),
    [
        (lambda s: s.respond_to_mail("451 4.3.0 try later"), False, 451),
        (lambda s: s.respond_to_mail("530 5.7.0 authentication required"), False, 530),
        (lambda s: s.respond_to_rcpt(LEAD, "450 4.2.1 mailbox busy"), False, 450),
        (lambda s: s.respond_to_rcpt(LEAD, "550 5.1.1 no such user"), True, 550),
        (lambda s: s.respond_to_data("451 4.3.0 try later"), False, 451),
        (lambda s: s.respond_to_data("554 5.7.1 message refused"), True, 554),
    ],
    ids=["mail-451", "mail-530", "rcpt-450", "rcpt-550", "data-451", "data-554"],
)
def test_only_5xx_to_rcpt_or_data_is_permanent(
    smtp_sink: SmtpSink, script: Callable[[SmtpSink], None], permanent: bool, code: int
) -> None:
    transport = smtp(smtp_sink)
    with transport:
        script(smtp_sink)
        with pytest.raises(TransportError) as caught:
            send(transport, 1)
        # The refused transaction was reset: the same connection carries the next message.
        send(transport, 2, to="other@example.com")
    assert (caught.value.permanent, caught.value.code) == (permanent, code)
    assert str(code) in str(caught.value)
    assert [m.message["Message-ID"] for m in smtp_sink.messages] == [
        "<nurture.2.abc@nurture.example>"
    ]
    assert smtp_sink.connections == 1
    assert smtp_sink.rsets >= 1


def test_connection_refused_is_temporary() -> None:
    transport = SmtpTransport("127.0.0.1", free_port(), timeout=2)
    with pytest.raises(TransportError) as caught:
        send(transport)
    assert caught.value.permanent is False
    assert caught.value.code is None
    assert "cannot connect" in str(caught.value)


def test_silent_server_times_out_as_temporary() -> None:
    with socket.socket() as listener:  # accepts TCP (kernel backlog) but never greets
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        transport = SmtpTransport("127.0.0.1", listener.getsockname()[1], timeout=0.3)
        with pytest.raises(TransportError, match="timed out") as caught:
            send(transport)
    assert caught.value.permanent is False


def test_reconnects_once_when_the_server_dropped_an_idle_connection(smtp_sink: SmtpSink) -> None:
    transport = smtp(smtp_sink)
    with transport:
        send(transport, 1)
        smtp_sink.drop_connections()
        send(transport, 2)
    assert [m.connection for m in smtp_sink.messages] == [1, 2]


def test_reconnects_once_after_421_on_a_reused_connection(smtp_sink: SmtpSink) -> None:
    transport = smtp(smtp_sink)
    with transport:
        send(transport, 1)
        smtp_sink.respond_to_mail("421 4.3.2 shutting down")
        send(transport, 2)
    assert [m.connection for m in smtp_sink.messages] == [1, 2]


def test_421_on_a_fresh_connection_is_not_retried(smtp_sink: SmtpSink) -> None:
    smtp_sink.respond_to_mail("421 4.3.2 shutting down")
    with pytest.raises(TransportError) as caught:
        send(smtp(smtp_sink))
    assert (caught.value.permanent, caught.value.code) == (False, 421)
    assert smtp_sink.connections == 1


def test_421_twice_is_reported_as_temporary(smtp_sink: SmtpSink) -> None:
    transport = smtp(smtp_sink)
    with transport:
        send(transport, 1)
        smtp_sink.respond_to_mail("421 4.3.2 shutting down", times=2)
        with pytest.raises(TransportError) as caught:
            send(transport, 2)
    assert (caught.value.permanent, caught.value.code) == (False, 421)


def test_drop_during_data_is_temporary_and_not_resent(smtp_sink: SmtpSink) -> None:
    # The server may have kept the message: resending on our own could deliver it twice.
    transport = smtp(smtp_sink)
    with transport:
        send(transport, 1)
        smtp_sink.drop_during_data()
        with pytest.raises(TransportError) as caught:
            send(transport, 2)
        send(transport, 3)  # the batch goes on over a new connection
    assert caught.value.permanent is False
    assert smtp_sink.data_attempts == 3
    assert [m.connection for m in smtp_sink.messages] == [1, 2]


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_and_login(security: Tls, tls: TlsPair) -> None:
    with SmtpSink(tls=security, server_context=tls.server, credentials=CREDENTIALS) as sink:
        transport = smtp(
            sink, username="mailer", password="s3cret", security=security, ssl_context=tls.client
        )
        send(transport)
        assert sink.logins == ["mailer"]
        assert sink.messages[0].message["Subject"] == SUBJECT


def test_wrong_password_is_temporary_not_a_bounce(tls: TlsPair) -> None:
    with SmtpSink(tls="starttls", server_context=tls.server, credentials=CREDENTIALS) as sink:
        transport = smtp(
            sink, username="mailer", password="nope", security="starttls", ssl_context=tls.client
        )
        with pytest.raises(TransportError) as caught:
            send(transport)
    assert (caught.value.permanent, caught.value.code) == (False, 535)


def test_untrusted_certificate_is_refused(tls: TlsPair) -> None:
    with SmtpSink(tls="starttls", server_context=tls.server) as sink:
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED") as caught:
            send(smtp(sink, security="starttls"))  # default context: the test CA is unknown
        assert sink.messages == []
    assert caught.value.permanent is False


def test_starttls_required_but_not_offered(smtp_sink: SmtpSink) -> None:
    with pytest.raises(TransportError, match="STARTTLS") as caught:
        send(smtp(smtp_sink, security="starttls"))
    assert caught.value.permanent is False
    assert smtp_sink.messages == []


def test_transport_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(TransportError("550 gone", permanent=True, code=550)))
    assert (str(error), error.permanent, error.code) == ("550 gone", True, 550)


def test_password_not_in_repr() -> None:
    transport = SmtpTransport("127.0.0.1", 25, "mailer", "s3cret")
    assert "s3cret" not in repr(transport)


# -------------------------------------------------------------------------------- Outbox


def test_outbox_writes_one_parseable_eml_per_message(tmp_path: Path) -> None:
    directory = tmp_path / "outbox" / "nested"
    moments = iter(
        [
            datetime(2025, 3, 4, 9, 30, 0, 1, tzinfo=UTC),
            datetime(2025, 3, 4, 9, 30, 0, 2, tzinfo=UTC),
        ]
    )
    transport = OutboxTransport(directory, clock=lambda: next(moments))
    with transport:
        send(transport, 1)
        send(transport, 2, to="other@example.com")
    files = sorted(directory.iterdir())
    assert [f.name for f in files] == [
        "20250304T093000.000001Z-nurture.1.abc@nurture.example.eml",
        "20250304T093000.000002Z-nurture.2.abc@nurture.example.eml",
    ]
    raw = files[1].read_bytes()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == SUBJECT
    assert parsed["Return-Path"] == f"<{SENDER}>"
    assert parsed["Delivered-To"] == "other@example.com"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]


def test_outbox_sanitizes_the_message_id_in_file_names(tmp_path: Path) -> None:
    msg = message(1)
    msg.replace_header("Message-ID", "<../../etc/passwd@evil>")
    transport = OutboxTransport(tmp_path, clock=lambda: datetime(2025, 1, 1, tzinfo=UTC))
    transport.send(msg, envelope_from=SENDER, to=LEAD)
    [written] = list(tmp_path.iterdir())
    assert written.name == "20250101T000000.000000Z-etc_passwd@evil.eml"


def test_outbox_failure_is_a_temporary_transport_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(TransportError, match="outbox") as caught:
        send(OutboxTransport(blocker / "outbox"))
    assert caught.value.permanent is False


# -------------------------------------------------------------------------------- Memory


def test_memory_transport_records_what_the_recipient_would_see() -> None:
    transport = MemoryTransport()
    with transport:
        send(transport, 1)
        send(transport, 2)
    send(transport, 3)
    assert [s.to for s in transport.sent] == [LEAD] * 3
    assert transport.sent[0].envelope_from == SENDER
    assert transport.messages[0]["Subject"] == SUBJECT
    assert transport.connections_opened == 2  # one batch, one lone send


def test_memory_transport_scripted_failures() -> None:
    transport = MemoryTransport()
    transport.fail_next(TransportError("451 try later", code=451), times=2)
    transport.fail_recipient("gone@example.com", TransportError("550", permanent=True, code=550))
    for _ in range(2):
        with pytest.raises(TransportError, match="451"):
            send(transport, 1)
    send(transport, 1)
    with pytest.raises(TransportError) as caught:
        send(transport, 2, to="Gone@example.com")
    assert caught.value.permanent is True
    assert transport.attempts == 4
    assert [m["Message-ID"] for m in transport.messages] == ["<nurture.1.abc@nurture.example>"]


def test_envelope_with_line_break_is_rejected() -> None:
    with pytest.raises(ValueError, match="to"):
        MemoryTransport().send(message(), envelope_from=SENDER, to="a@example.com\r\nRCPT TO:<b@x>")


# ------------------------------------------------------------------------------- Factory


def test_make_transport_picks_by_settings(tmp_path: Path) -> None:
    outbox = make_transport(load_settings(transport="outbox", outbox_dir=tmp_path))
    assert isinstance(outbox, OutboxTransport) and outbox.directory == tmp_path
    assert isinstance(make_transport(load_settings(transport="memory")), MemoryTransport)
    smtp_transport = make_transport(
        load_settings(transport="smtp", smtp_host="127.0.0.1", smtp_port=2525, smtp_security="ssl")
    )
    assert isinstance(smtp_transport, SmtpTransport)
    assert (smtp_transport.port, smtp_transport.security) == (2525, "ssl")
