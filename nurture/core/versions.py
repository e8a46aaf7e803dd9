"""Versions derived from content: the same meaning gives the same version everywhere."""

from __future__ import annotations

import hashlib
import json
from typing import Any

VERSION_LENGTH = 12


def content_version(document: Any) -> str:
    """A hash of a JSON document's meaning: key order and formatting make no new version,
    any change of a value does."""
    canonical = json.dumps(document, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:VERSION_LENGTH]
