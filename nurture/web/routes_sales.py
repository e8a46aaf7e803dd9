"""Sales decisions over HTTP (``POST /api/v1/leads/{id}/decision``: sales tools and CRM
webhooks) and where a lead stands in the funnel (``GET /api/v1/leads/{id}/funnel``).
API-key auth like every /api/v1 route. Handlers validate, call the lifecycle service in
one transaction, and answer; notifications go out from the engine's pass, not from here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, status

from nurture.db.models import Lead
from nurture.db.session import transaction
from nurture.funnel.decisions import SalesDecision
from nurture.funnel.funnel import Funnel
from nurture.funnel.handoff import stage_change_json
from nurture.funnel.loading import LifecycleConfigError
from nurture.funnel.machine import TransitionRefused
from nurture.funnel.sales import DecisionRefused, apply_decision
from nurture.funnel.status import lead_status
from nurture.web import openapi
from nurture.web.api import LeadId
from nurture.web.auth import require_api_key
from nurture.web.context import WebContext, web_context

router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(require_api_key)],
    tags=["funnel"],
    responses={**openapi.API_ERRORS, **openapi.NOT_FOUND, **openapi.NO_FUNNEL},
)
Context = Annotated[WebContext, Depends(web_context)]


def _funnel(context: WebContext) -> Funnel:
    funnel = context.funnel()
    try:
        funnel.spec  # noqa: B018 (raises when lifecycle.yaml never loaded)
    except LifecycleConfigError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"lifecycle.yaml has errors: {exc}"
        ) from None
    if funnel.spec is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "no lifecycle.yaml in the sequences folder"
        )
    return funnel


@router.post(
    "/leads/{lead_id}/decision",
    summary="A sales decision: accept, qualify, reject, disqualify, opportunity, customer",
    responses=openapi.CONFLICT,
)
def post_decision(lead_id: LeadId, body: SalesDecision, context: Context) -> dict[str, Any]:
    """Move the lead as sales decided. 422 when the decision lacks something (BANT answers
    for qualify, a known reason code for reject); 409 when the lead's stage does not allow
    it (nothing changes then)."""
    funnel = _funnel(context)
    now = context.clock()
    with transaction(context.runtime.sessions) as session:
        lead = session.get(Lead, lead_id)
        if lead is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no lead with id {lead_id}")
        try:
            change = apply_decision(session, lead, body, now, funnel)
        except DecisionRefused as exc:
            # The error shape of every /api/v1 route (see nurture/web/api.py).
            error = {"loc": ["body", exc.field], "field": exc.field, "msg": exc.message}
            detail = [{**error, "type": "value_error"}]
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail) from None
        except TransitionRefused as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        return {
            "lead_id": lead.id,
            "stage": lead.lifecycle_stage,
            "cycle": lead.cycle,
            "owner": lead.owner,
            "recycle_until": lead.recycle_until.isoformat() if lead.recycle_until else None,
            "change": stage_change_json(change),
        }


@router.get("/leads/{lead_id}/funnel", summary="Where a lead stands in the funnel, and why")
def get_funnel(lead_id: LeadId, context: Context) -> dict[str, Any]:
    """Stage, score, MQL rules and ICP exclusions (why it is or is not an MQL), open
    hand-offs and the stage history with every cycle."""
    funnel = _funnel(context)
    with context.runtime.sessions() as session:
        lead = session.get(Lead, lead_id)
        if lead is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no lead with id {lead_id}")
        return lead_status(session, lead, context.clock(), funnel)
