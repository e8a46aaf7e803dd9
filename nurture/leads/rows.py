"""What the file importers (leads, events) share: the abort error and the per-row error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


class ImportAborted(Exception):
    """The file cannot be imported at all (nothing was written)."""


@dataclass(frozen=True)
class RowError:
    """One reason a row was skipped."""

    # Put before the number; "" where the caller names the unit ("line" or "row") itself.
    prefix: ClassVar[str] = "row "

    row: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.prefix}{self.row}"
        if self.field:
            where = f"{where}: {self.field}"
        return f"{where}: {self.message}"
