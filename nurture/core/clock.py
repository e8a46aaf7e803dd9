"""The one clock type: edges read the time through a ``Clock``; decisions take ``now``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current instant, timezone-aware (UTC)."""
    return datetime.now(UTC)
