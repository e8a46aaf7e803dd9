"""API-key authentication for /api/v1: ``Authorization: Bearer <key>`` or ``X-API-Key``.
Keys come from NURTURE_API_KEYS; a given key is compared with every configured key in
constant time, so the answer's timing tells nothing about how close a guess was."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from nurture.web.context import WebContext, web_context

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key")
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def key_matches(given: str, keys: list[str]) -> bool:
    """True if ``given`` is one of ``keys``; every key is compared, in constant time each."""
    found = False
    candidate = given.encode("utf-8")
    for key in keys:
        found |= hmac.compare_digest(candidate, key.encode("utf-8"))
    return found and bool(given)


async def require_api_key(
    context: Annotated[WebContext, Depends(web_context)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> None:
    """401 unless the request carries a configured API key."""
    given = header or (bearer.credentials if bearer else "")
    if not given:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers=CHALLENGE,
        )
    if not key_matches(given, context.settings.api_key_list):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key", headers=CHALLENGE)
