"""Business days with public holidays, per country, as SLAs count them: an MQL due in 1
business day on a Friday is due Monday at the same local time, or Tuesday when Monday is a
public holiday where the lead is.

The calendar is :mod:`nurture.core.business_days`, shared with the business-day waits of
sequences, so an SLA and a wait never disagree about which days are off."""

from __future__ import annotations

from nurture.core.business_days import BusinessCalendar, supports
from nurture.core.timing import MAX_DAYS_OFF_IN_A_ROW

__all__ = ["MAX_DAYS_OFF_IN_A_ROW", "BusinessCalendar", "supports"]
