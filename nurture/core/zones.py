"""Time zones by their IANA names, as leads and sequences give them."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def is_valid_timezone(name: str) -> bool:
    """True if ``name`` is an IANA time zone this machine knows (``Europe/Berlin``, ``UTC``)."""
    if not isinstance(name, str) or not name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True
