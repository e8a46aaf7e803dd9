"""How an address is found on the suppression list: lower-cased, or, once its lead was
erased, only by a hash of it (the list must not keep the address itself)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

HASH_PREFIX = "sha256:"


def email_hash(email: str) -> str:
    """The suppression key that stands for ``email`` once its lead is erased."""
    digest = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()
    return HASH_PREFIX + digest


def suppression_keys(emails: Iterable[str]) -> dict[str, str]:
    """Every suppression key that can hold one of ``emails`` (the lower-cased address and
    its hash), mapped to the lower-cased address."""
    keys: dict[str, str] = {}
    for email in emails:
        lowered = email.lower()
        keys[lowered] = lowered
        keys[email_hash(lowered)] = lowered
    return keys
