"""The one event vocabulary (django-anymail style): what happens to a message, what a
lead does with it, and what a lead does on the site. Every module names events from here."""

from __future__ import annotations

# Written by the engine about its own deliveries.
DELIVERY_EVENTS = ("sent", "deferred", "failed", "unknown", "bounced")
# The engine's bookkeeping: never scored (a bounce is: a negative rule may count it).
UNSCORED_TYPES = ("sent", "deferred", "failed", "unknown")
# A lead's reaction to an email, written by the tracking endpoints.
EMAIL_EVENTS = ("opened", "clicked", "unsubscribed", "complained")
# Behavior beyond email, taken by the API and the events import.
SITE_EVENTS = (
    "page_visit",
    "content_download",
    "webinar_registered",
    "webinar_attended",
    "form_submitted",
    "pricing_page_view",
    "demo_requested",
    "contact_sales_requested",
)
KNOWN_EVENTS = (*DELIVERY_EVENTS, *EMAIL_EVENTS, *SITE_EVENTS)
# What a person does (not what happens to their mail, and not opting out).
ENGAGEMENT_EVENTS = frozenset({"opened", "clicked", *SITE_EVENTS})
