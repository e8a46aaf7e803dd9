"""Tracking endpoints: the open pixel, the click redirect and unsubscribe. Each verifies
its signed token (one salt per purpose), stores the hit in one short transaction, then
answers. A bad, tampered or wrong-purpose token, or one naming no message, gets 404 and
writes nothing. The redirect goes only to the URL stored for that link of that message:
query parameters are ignored."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nurture.tracking.bots import Hit
from nurture.tracking.hits import HitOutcome, HitRequest
from nurture.tracking.tokens import BadToken, link_of, message_of
from nurture.web import pages
from nurture.web.context import WebContext, web_context
from nurture.web.openapi import BAD_TOKEN

router = APIRouter(tags=["tracking"])
Context = Annotated[WebContext, Depends(web_context)]

# Tracking answers must never be cached: each open and click is a hit.
NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, private", "Pragma": "no-cache"}


def _hit(context: WebContext, request: Request) -> Hit:
    client = request.client.host if request.client else ""
    return Hit(context.clock(), request.headers.get("user-agent", ""), client)


def _within_limits(context: WebContext, token: str, hit: Hit) -> bool:
    """Whether this hit is recorded; beyond the limits it is only answered."""
    return context.limiter.allow(token, hit.ip, hit.at)


def _not_found() -> Response:
    return Response(status_code=404, headers=NO_STORE)


@router.get("/o/{token}.gif", summary="Open pixel", response_class=Response, responses=BAD_TOKEN)
async def open_pixel(token: str, request: Request) -> Response:
    """A 1x1 GIF; records ``opened`` (non-human for privacy proxies and prefetches)."""
    context = await web_context(request)
    try:
        message_id = message_of(context.settings.token_keys, "open", token)
    except BadToken:
        return _not_found()
    hit = _hit(context, request)
    recorded = _within_limits(context, token, hit)
    outcome = await _record(context, HitRequest("opened", message_id, 0, hit, recorded))
    if not outcome.found:
        return _not_found()
    return Response(pages.GIF, media_type="image/gif", headers=NO_STORE)


@router.get(
    "/c/{token}",
    summary="Click redirect",
    status_code=302,
    response_class=Response,
    responses=BAD_TOKEN,
)
async def click(token: str, request: Request) -> Response:
    """302 to the URL stored for this link of this message; records ``clicked``."""
    context = await web_context(request)
    try:
        message_id, position = link_of(context.settings.token_keys, token)
    except BadToken:
        return _not_found()
    seen = _hit(context, request)
    hit = HitRequest("clicked", message_id, position, seen, _within_limits(context, token, seen))
    outcome = await _record(context, hit)
    # Only http(s) links are ever stored; anything else is refused, never followed.
    if not outcome.found or not outcome.url.lower().startswith(("https://", "http://")):
        return _not_found()
    return RedirectResponse(outcome.url, status_code=302, headers=NO_STORE)


async def _record(context: WebContext, request: HitRequest) -> HitOutcome:
    # Answered once the transaction holding the event committed (the writer's group commit).
    return await asyncio.wrap_future(context.writer.submit(request))


@router.get(
    "/u/{token}", summary="Unsubscribe page", response_class=HTMLResponse, responses=BAD_TOKEN
)
def unsubscribe_page(token: str, context: Context) -> HTMLResponse:
    """A page that confirms with a button; a GET changes nothing (scanners follow links)."""
    try:
        message_id = message_of(context.settings.token_keys, "unsubscribe", token)
    except BadToken:
        return HTMLResponse(pages.not_found(), status_code=404, headers=NO_STORE)
    address = context.hits.unsubscribe_address(message_id)
    if address is None:
        return HTMLResponse(pages.not_found(), status_code=404, headers=NO_STORE)
    if not address:  # erased: nothing will ever be sent to it again
        return HTMLResponse(pages.unsubscribed(context.settings.sender_name), headers=NO_STORE)
    body = pages.confirm_unsubscribe(pages.mask_email(address), context.settings.sender_name)
    return HTMLResponse(body, headers=NO_STORE)


@router.post(
    "/u/{token}",
    summary="One-click unsubscribe (RFC 8058)",
    response_class=HTMLResponse,
    responses=BAD_TOKEN,
)
def unsubscribe(token: str, context: Context) -> HTMLResponse:
    """Suppresses the address before answering (idempotent). Takes the one-click body
    ``List-Unsubscribe=One-Click`` or the confirmation form; no cookie, no redirect."""
    try:
        message_id = message_of(context.settings.token_keys, "unsubscribe", token)
    except BadToken:
        return HTMLResponse(pages.not_found(), status_code=404, headers=NO_STORE)
    result = context.hits.unsubscribe(message_id, context.clock())
    if result is None:
        return HTMLResponse(pages.not_found(), status_code=404, headers=NO_STORE)
    if result.event_id is not None:
        context.process_hits([result.event_id])
    return HTMLResponse(pages.unsubscribed(context.settings.sender_name), headers=NO_STORE)
