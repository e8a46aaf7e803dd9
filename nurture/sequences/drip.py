"""What the sequence engine's services are handed, built once per program by the Runtime."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from nurture.core.conditions import NO_EXPRESSIONS, Expressions
from nurture.sequences.caps import FrequencyCap
from nurture.sequences.catalog import Catalog


@dataclass(frozen=True)
class Drip:
    """The sequences in force, the frequency cap, the defaults for leads without their own
    zone, locale or country, the claim lease, the retry budget of a temporary SMTP failure, and the
    evaluator of branch ``expr:`` conditions."""

    catalog: Catalog
    cap: FrequencyCap
    default_timezone: str = "UTC"
    default_locale: str = "en"
    # Whose public holidays business-day waits skip when a lead has no country.
    default_country: str = ""
    lease: timedelta = timedelta(minutes=10)
    max_retries: int = 5
    expressions: Expressions = NO_EXPRESSIONS
