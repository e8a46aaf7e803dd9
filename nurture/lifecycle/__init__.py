"""The funnel: lifecycle stages and their transitions, the rules of ``lifecycle.yaml``
(MQL, ICP exclusions, fast-track triggers, recycling, SLA), business-day calendars and
webhook signatures. Everything here is pure; the services in ``nurture.services`` store."""
