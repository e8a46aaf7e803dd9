"""The ASGI app: ``create_app(runtime)`` builds it; nothing is built at import time.

``nurture web`` serves it with uvicorn; ``uvicorn --factory nurture.web.app:app_from_env``
does the same from the environment (one app, one database pool per worker process)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

import nurture
from nurture.bootstrap import build_runtime
from nurture.core.clock import Clock, utc_now
from nurture.runtime import Runtime
from nurture.settings import load_settings, require_strong_secret_key
from nurture.tracking.bots import BotRules
from nurture.tracking.hits import HitStore
from nurture.web import api, openapi, pages, routes_sales, tracking
from nurture.web.context import WebContext

DESCRIPTION = """Tracking endpoints (open pixel, click redirect, unsubscribe) and the JSON API
for leads and site behavior. Every `/api/v1` route needs an API key:
`Authorization: Bearer <key>` or `X-API-Key: <key>` (keys from `NURTURE_API_KEYS`)."""


log = logging.getLogger(__name__)


def create_app(runtime: Runtime, *, clock: Clock = utc_now, owns_runtime: bool = False) -> FastAPI:
    """The web app over ``runtime`` (closed at shutdown only if ``owns_runtime``)."""
    rules = BotRules.from_settings(runtime.settings)
    context = WebContext(runtime, rules, HitStore(runtime.engine), clock)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        context.close()
        if owns_runtime:
            runtime.close()

    app = FastAPI(
        title="Nurture",
        version=getattr(nurture, "__version__", "0"),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.nurture = context
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.include_router(tracking.router)
    app.include_router(api.router)
    app.include_router(routes_sales.router)
    app.add_api_route(
        "/healthz",
        _healthz,
        methods=["GET"],
        tags=["health"],
        summary="Health",
        responses={503: {"description": "The database does not answer"}},
    )
    if runtime.settings.bench_endpoints:
        app.add_api_route("/bench/noop.gif", _noop_gif, methods=["GET"], include_in_schema=False)
    openapi.install(app)
    return app


def app_from_env() -> FastAPI:
    """The app from the NURTURE_* environment (``uvicorn --factory`` calls this). uvicorn's
    ``--host`` is invisible here, so the app may be reachable from anywhere: a weak
    NURTURE_SECRET_KEY is refused whatever NURTURE_WEB_HOST says."""
    settings = load_settings()
    require_strong_secret_key(settings, "the web app (nurture.web.app:app_from_env)")
    return create_app(build_runtime(settings), owns_runtime=True)


def _healthz(request: Request) -> JSONResponse:
    """200 when the database answers, 503 otherwise."""
    context: WebContext = request.app.state.nurture
    try:
        with context.runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        # The reason can name hosts and users: it goes to the log, not to the public.
        log.exception("health check: the database did not answer")
        return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


def _noop_gif() -> Response:
    # The baseline of bench/track.py: the same kind of handler as the pixel, minus its work.
    return Response(pages.GIF, media_type="image/gif", headers=tracking.NO_STORE)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with each problem's location, and its field as a path: ``events[3].occurred_at``."""
    details = [_detail(error) for error in exc.errors()]
    return JSONResponse({"detail": details}, status_code=422)


def _detail(error: dict[str, Any]) -> dict[str, Any]:
    loc = [part for i, part in enumerate(error.get("loc", ())) if not _is_tag(i, part)]
    detail = {
        "loc": loc,
        "field": field_path(loc[1:] if loc and loc[0] == "body" else loc),
        "msg": str(error.get("msg", "")).removeprefix("Value error, "),
        "type": error.get("type", ""),
    }
    if error.get("type") == "extra_forbidden":
        detail["msg"] = "unknown field"
    return detail


def _is_tag(index: int, part: Any) -> bool:
    # The body's union tag sits right after "body"; it names no field.
    return index == 1 and part in api.UNION_TAGS


def field_path(loc: list[Any]) -> str:
    """``["events", 3, "occurred_at"]`` -> ``events[3].occurred_at``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(body)"
