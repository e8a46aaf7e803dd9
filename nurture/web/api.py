"""The JSON API (/api/v1): leads (upsert, read with score and timeline, erase) and events
(one or a batch). Every route needs an API key. Handlers validate, call a service in one
transaction, and answer; the services decide."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Discriminator, Tag, ValidationError
from sqlalchemy.exc import IntegrityError

from nurture.db.models import Lead
from nurture.db.session import transaction
from nurture.funnel.pipeline import process_stored
from nurture.leads.erasure import erase_lead
from nurture.leads.event_schema import EventBatch, EventIn
from nurture.leads.events import IngestReport, store_events
from nurture.leads.schema import LeadIn, lead_context
from nurture.leads.upsert import UpsertRefused, UpsertResult, upsert_lead
from nurture.leads.view import lead_view
from nurture.web import openapi
from nurture.web.auth import require_api_key
from nurture.web.context import WebContext, web_context

router = APIRouter(
    prefix="/api/v1", dependencies=[Depends(require_api_key)], responses=openapi.API_ERRORS
)
Context = Annotated[WebContext, Depends(web_context)]
# Tags of the two shapes of POST /api/v1/events; error locations leave them out.
SINGLE, BATCH = "single", "batch"
UNION_TAGS = frozenset({SINGLE, BATCH})
TIMELINE_LIMIT = 200
# Ids are INTEGER columns (32 bits on PostgreSQL): a larger one names no row, and asking
# the database for it is an error there (SQLite overflows past 63 bits). 422 instead.
MAX_ID = 2**31 - 1
LeadId = Annotated[
    int, Path(ge=1, le=MAX_ID, description=f"The lead's id (1 to {MAX_ID}; others: 422).")
]


class LeadOut(BaseModel):
    """A lead as the API shows it."""

    id: int
    email: str
    first_name: str
    last_name: str
    company: str
    title: str
    industry: str
    company_size: int | None
    country: str
    timezone: str
    locale: str
    persona: str
    journey_stage: str
    lifecycle_stage: str
    attributes: dict[str, Any]
    erased_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, lead: Lead) -> LeadOut:
        return cls.model_validate({name: getattr(lead, name) for name in cls.model_fields})


class UpsertOut(BaseModel):
    """The answer to POST /api/v1/leads."""

    created: bool
    lead: LeadOut
    enrolled_in: str | None = None
    not_enrolled: str | None = None


class EventOut(BaseModel):
    """The answer to one event (status created or duplicate)."""

    status: Literal["created", "duplicate"]
    event_id: int | None = None
    lead_id: int | None = None


def _which(value: Any) -> str:
    return BATCH if isinstance(value, dict) and "events" in value else SINGLE


EventsBody = Annotated[
    Annotated[EventIn, Tag(SINGLE)] | Annotated[EventBatch, Tag(BATCH)], Discriminator(_which)
]


@router.post(
    "/leads",
    response_model=UpsertOut,
    responses={201: {"model": UpsertOut, "description": "Created"}, **openapi.CONFLICT},
    summary="Create or update a lead by email",
)
def post_lead(body: LeadIn, context: Context) -> JSONResponse:
    """Upsert by email (case-insensitive): given fields overwrite, attributes merge; the
    audience rules may enroll the lead. 201 when created, 200 when updated. A new
    ``lifecycle_stage`` is a move the funnel must allow: 409 naming ``lifecycle_stage``
    (and nothing changed) when it does not; 409 naming ``attributes`` when the merged
    attributes would be more than 100 or 16 kB. (422 is for a body that is wrong by
    itself; 409 for a valid one the stored lead cannot take.)"""
    given = _with_personas(body, context)
    now = context.clock()
    for attempt in (1, 2):
        try:
            with context.writing(), transaction(context.runtime.sessions) as session:
                result = upsert_lead(session, given, now, context.funnel())
                out = _upsert_out(result)
            break
        except IntegrityError:  # created by a concurrent request: the retry updates it
            if attempt == 2:
                raise
        except UpsertRefused as exc:  # the transaction rolled back: nothing changed
            error = {"loc": ["body", exc.field], "field": exc.field, "msg": exc.message}
            return JSONResponse({"detail": [{**error, "type": "conflict"}]}, status_code=409)
    code = status.HTTP_201_CREATED if out.created else status.HTTP_200_OK
    return JSONResponse(out.model_dump(mode="json"), status_code=code)


def _with_personas(body: LeadIn, context: WebContext) -> LeadIn:
    """The body validated again with the known personas (422 naming ``persona``)."""
    data = body.model_dump(mode="json", exclude_unset=True)
    try:
        personas = context.program().catalog.personas()
        return LeadIn.model_validate(data, context=lead_context(personas))
    except ValidationError as exc:
        raise RequestValidationError(_located(exc, ("body",))) from None


def _upsert_out(result: UpsertResult) -> UpsertOut:
    return UpsertOut(
        created=result.created,
        lead=LeadOut.of(result.lead),
        enrolled_in=result.enrollment.sequence_key if result.enrollment else None,
        not_enrolled=result.not_enrolled or None,
    )


@router.get(
    "/leads/{lead_id}",
    summary="A lead with its score and timeline",
    responses=openapi.NOT_FOUND,
)
def get_lead(
    lead_id: LeadId,
    context: Context,
    limit: Annotated[int, Query(ge=1, le=1000, description="Items per kind.")] = TIMELINE_LIMIT,
) -> dict[str, Any]:
    """Fit, engagement and total now, the breakdown by rule (it sums to the total), the
    enrollments, and the timeline of messages, events, score entries and stage changes in
    time order (the most recent ``limit`` of each kind): the view ``nurture lead show``
    prints."""
    now = context.clock()
    funnel = context.funnel()
    with context.runtime.sessions() as session:
        lead = session.get(Lead, lead_id)
        view = lead_view(
            session,
            lead_id,
            now,
            limit=limit,
            rules=funnel.rules,
            catalog=funnel.catalog,
            newest_first=False,
            per_kind=True,
        )
        if lead is None or view is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no lead with id {lead_id}")
        shown = view.to_json()
        return {
            "lead": LeadOut.of(lead).model_dump(mode="json"),
            "score": shown["score"],
            "enrollments": shown["enrollments"],
            "not_enrolled": shown["not_enrolled"],
            "timeline": shown["timeline"],
        }


@router.post(
    "/leads/{lead_id}/erase", summary="Erase a lead's personal data", responses=openapi.NOT_FOUND
)
def post_erase(lead_id: LeadId, context: Context) -> dict[str, Any]:
    """Right to be forgotten: personal data removed, a hashed suppression kept so the
    address is never mailed again; counts of messages and events stay as they were."""
    return _erase(lead_id, context)


@router.delete(
    "/leads/{lead_id}",
    summary="Erase a lead's personal data (same as /erase)",
    responses=openapi.NOT_FOUND,
)
def delete_lead(lead_id: LeadId, context: Context) -> dict[str, Any]:
    """The same as POST /api/v1/leads/{id}/erase: rows stay, personal data goes."""
    return _erase(lead_id, context)


def _erase(lead_id: int, context: WebContext) -> dict[str, Any]:
    with context.writing(), transaction(context.runtime.sessions) as session:
        lead = session.get(Lead, lead_id, with_for_update=True)
        if lead is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no lead with id {lead_id}")
        return erase_lead(session, lead, context.clock()).to_json()


@router.post(
    "/events",
    summary="Record one event, or a batch",
    responses={
        200: {"description": "A batch: what became of each event, by index"},
        201: {"model": EventOut, "description": "One event, stored"},
        409: {"description": "One event: no lead has the address, it was erased, or it is future"},
    },
)
def post_events(body: EventsBody, context: Context) -> JSONResponse:
    """One event, or ``{"events": [...]}`` (one transaction). A known dedupe key is a
    duplicate, not an error. An unknown email creates the lead or is rejected
    (NURTURE_UNKNOWN_EMAIL_EVENTS): 409 for one event, ``rejected`` in a batch's results;
    so is an erased address, and an event after now (plus 5 minutes of clock skew)."""
    events = body.events if isinstance(body, EventBatch) else [body]
    report = _ingest(events, context)
    if isinstance(body, EventBatch):
        return JSONResponse(report.to_json())
    result = report.results[0]
    if result.status == "rejected":
        return _rejected(result.errors)
    out = EventOut(status=result.status, event_id=result.event_id, lead_id=result.lead_id)
    code = status.HTTP_201_CREATED if result.status == "created" else status.HTTP_200_OK
    return JSONResponse(out.model_dump(exclude_none=True), status_code=code)


def _rejected(problems: tuple[tuple[str, str], ...]) -> JSONResponse:
    """409: a valid event the server cannot take as things stand (no lead has the address,
    it was erased, or it happened after the server's now): the same shape as a 422."""
    errors = [{"loc": ["body", f], "field": f, "msg": m, "type": "conflict"} for f, m in problems]
    return JSONResponse({"detail": errors}, status_code=409)


def _ingest(events: list[EventIn], context: WebContext) -> IngestReport:
    now = context.clock()
    settings = context.settings
    funnel = context.funnel()
    # Embedded mode processes the events inline: in the transaction that stores them.
    inline = context.runtime.queues is None
    with context.writing(), transaction(context.runtime.sessions) as session:
        report = store_events(
            session,
            events,
            now=now,
            unknown_email=settings.unknown_email_events,
            default_timezone=settings.default_timezone,
            mark_scored=inline,
            rules=funnel.rules,
        )
        if inline:
            process_stored(session, report.stored, now, funnel)
    if not inline:
        context.process_api_events(report.new_event_ids)
    return report


def _located(error: ValidationError, prefix: tuple[str | int, ...]) -> list[dict[str, Any]]:
    return [
        {**item, "loc": (*prefix, *item["loc"])}
        for item in error.errors(include_url=False, include_context=False)
    ]
