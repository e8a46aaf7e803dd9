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

# Languages that write the family name first ("박민지", "佐藤 裕子", "Nagy Anna").
FAMILY_NAME_FIRST = frozenset({"ko", "ja", "zh", "hu", "vi"})


def display_name(first_name: str, last_name: str, locale: str) -> str:
    """A lead's full name in the order of its locale's language: given name first for
    most (``Alex Morgan``), family name first for Korean, Japanese, Chinese, Hungarian and
    Vietnamese. Korean and Chinese names in their own script take no space (``박민지``)."""
    first, last = (first_name or "").strip(), (last_name or "").strip()
    language = (locale or "").replace("_", "-").split("-")[0].lower()
    if language not in FAMILY_NAME_FIRST:
        return " ".join(p for p in (first, last) if p)
    joiner = "" if language in ("ko", "zh") and _in_own_script(first + last) else " "
    return joiner.join(p for p in (last, first) if p)


def _in_own_script(text: str) -> bool:
    # Hangul syllables and jamo, CJK ideographs: names written in them take no space.
    return bool(text) and all(
        "\uac00" <= ch <= "\ud7a3" or "\u1100" <= ch <= "\u11ff" or "\u4e00" <= ch <= "\u9fff"
        for ch in text
    )
