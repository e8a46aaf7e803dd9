"""The frequency cap counts each message once: the message just sent is not counted a
second time when the next email step is decided in the same run (it was, so a second
email waited a whole period with one send in it)."""

from __future__ import annotations

from datetime import timedelta

from support import FIXTURES
from support.engine import MONDAY, TEMPLATES, add_lead, make_runtime, messages, tick_at

from nurture.delivery.transports import MemoryTransport

SEQUENCES = FIXTURES / "cap" / "sequences"


def sent_at(db_url: str, cap_max: int, cap_period: str) -> list[tuple[str, object]]:
    rt = make_runtime(
        db_url,
        MemoryTransport(),
        sequences_dir=SEQUENCES,
        templates_dir=TEMPLATES,
        cap_max_messages=cap_max,
        cap_period=cap_period,
    )
    try:
        add_lead(rt, "ana@acme.example")
        for hours in (0, 24, 48, 49, 72, 24 * 7, 24 * 8):
            tick_at(rt, MONDAY + timedelta(hours=hours))
        return [(m.step_id, m.sent_at) for m in messages(rt, status="sent")]
    finally:
        rt.close()


def test_two_per_two_days_sends_two_at_once_and_the_third_two_days_later(db_url: str) -> None:
    assert sent_at(db_url, 2, "2d") == [
        ("first", MONDAY),
        ("second", MONDAY),
        ("third", MONDAY + timedelta(days=2)),
    ]


def test_the_default_three_per_week_sends_a_back_to_back_trio_at_once(db_url: str) -> None:
    assert sent_at(db_url, 3, "7d") == [("first", MONDAY), ("second", MONDAY), ("third", MONDAY)]


def test_one_per_day_spaces_them_a_day_apart(db_url: str) -> None:
    assert sent_at(db_url, 1, "1d") == [
        ("first", MONDAY),
        ("second", MONDAY + timedelta(days=1)),
        ("third", MONDAY + timedelta(days=2)),
    ]
