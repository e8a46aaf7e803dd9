"""The fields of a lead that decisions and templates read (besides its ``attributes``)."""

from __future__ import annotations

# In the order screens show them. Every rule, condition and template sees these and the
# free-form ``attributes``; nothing else of a lead (no id, no timestamps) reaches them.
LEAD_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "company",
    "title",
    "industry",
    "company_size",
    "country",
    "timezone",
    "locale",
    "persona",
    "journey_stage",
    "lifecycle_stage",
)
