"""The tracking rate limits: per token and per address, in fixed windows, bounded memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nurture.tracking import limits
from nurture.tracking.limits import HitLimiter

T0 = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)  # a window boundary (600 s)


def test_a_token_records_up_to_its_limit_per_window() -> None:
    limiter = HitLimiter(per_token=3, per_address=0, window_seconds=600)
    allowed = [limiter.allow("tok", "10.0.0.1", T0 + timedelta(seconds=n)) for n in range(5)]
    assert allowed == [True, True, True, False, False]
    assert limiter.allow("tok", "10.0.0.1", T0 + timedelta(minutes=10))  # the next window
    assert limiter.allow("other", "10.0.0.1", T0)  # another token: its own count


def test_an_address_records_up_to_its_limit_whatever_the_token() -> None:
    limiter = HitLimiter(per_token=0, per_address=2, window_seconds=60)
    assert [limiter.allow(f"t{n}", "10.0.0.9", T0) for n in range(3)] == [True, True, False]
    assert limiter.allow("t9", "10.0.0.8", T0)
    assert limiter.allow("t9", "", T0)  # no address known: only the token counts


def test_memory_stays_bounded() -> None:
    import pytest

    patch = pytest.MonkeyPatch()
    patch.setattr(limits, "MAX_KEYS", 10)
    try:
        limiter = HitLimiter(per_token=1, per_address=0)
        for n in range(100):
            limiter.allow(f"t{n}", "", T0)
        assert len(limiter._counts) == 10
    finally:
        patch.undo()
