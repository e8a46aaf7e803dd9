"""How many opens and clicks one token, or one client address, may record in a window.

Beyond the limit a hit is answered as usual (the pixel, the redirect: a real reader never
sees an error page) and recorded nowhere: replaying a tracking link a thousand times adds
a thousand nothings. Counts are kept in memory, per web process, in fixed windows, for a
bounded number of keys. Pure apart from that state: the time is passed in."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

# Keys tracked at most (oldest forgotten first): bounds the memory a flood of tokens takes.
MAX_KEYS = 100_000


class LimitSettings(Protocol):
    """What the limiter reads of the settings (``nurture.settings.Settings`` has it)."""

    track_limit_per_token: int
    track_limit_per_address: int
    track_limit_seconds: float


@dataclass
class HitLimiter:
    """Fixed-window counters per token and per address; 0 turns a limit off."""

    per_token: int = 20
    per_address: int = 600
    window_seconds: float = 600.0
    _counts: OrderedDict[tuple[str, str, int], int] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: LimitSettings) -> HitLimiter:
        return cls(
            settings.track_limit_per_token,
            settings.track_limit_per_address,
            settings.track_limit_seconds,
        )

    def allow(self, token: str, address: str, at: datetime) -> bool:
        """Count one hit of ``token`` from ``address``; False once either is over its limit."""
        window = int(at.timestamp() // self.window_seconds) if self.window_seconds > 0 else 0
        with self._lock:
            by_token = self._count(("token", token, window), self.per_token)
            by_address = self._count(("address", address, window), self.per_address)
        return by_token and by_address

    def _count(self, key: tuple[str, str, int], limit: int) -> bool:
        if limit <= 0 or not key[1]:
            return True
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count  # most recent last
        while len(self._counts) > MAX_KEYS:
            self._counts.popitem(last=False)
        return count <= limit
