"""The OpenAPI document says exactly what the API does: every status a route can answer,
the methods a path allows (the ``Allow`` header of a 405 lists them all), and the sales
decision body as the configured funnel takes it (reject needs one of the configured
reason codes, qualify the BANT answers ``lifecycle.yaml`` requires).

A schema-valid request is never refused with 422 because of something the schema did not
say; a valid request the stored lead cannot take (a stage it cannot move to) is a 409."""

from __future__ import annotations

import copy
import functools
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from nurture.funnel.spec import BANT_FIELDS, LifecycleSpec
from nurture.leads import documented
from nurture.web.context import WebContext

# The statuses every /api/v1 route may answer besides its own.
API_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body is not UTF-8 JSON"},
    401: {"description": "No API key, or not a configured one"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such lead"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "The lead's stored state does not allow it (nothing changed)"}
}
NO_FUNNEL: dict[int | str, dict[str, Any]] = {
    503: {"description": "No lifecycle.yaml, or one with errors"}
}
BAD_TOKEN: dict[int | str, dict[str, Any]] = {
    404: {"description": "A bad, tampered or expired token, or one naming no message"}
}
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
DECISION_SCHEMA = "SalesDecision"
LEAD_SCHEMA = "LeadIn"


def install(app: FastAPI) -> None:
    """Publish the precise document and answer 405 with every allowed method."""
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]


def document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the decision body of the funnel configured now (rebuilt
    when ``lifecycle.yaml`` changes)."""
    if app.openapi_schema is None:
        app.openapi_schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
    context: WebContext = app.state.nurture
    spec = _spec(context)
    personas = tuple(sorted(_personas(context)))
    key = (_decision_key(spec), personas)
    cached: dict[Any, dict[str, Any]] = app.state.__dict__.setdefault("openapi_by_program", {})
    if key not in cached:
        cached.clear()
        cached[key] = _configured(app.openapi_schema, spec, personas)
    return cached[key]


def _spec(context: WebContext) -> LifecycleSpec | None:
    try:
        return context.funnel().spec
    except Exception:  # lifecycle.yaml with errors: the decision route answers 503
        return None


def _personas(context: WebContext) -> set[str]:
    try:
        return set(context.program().catalog.personas())
    except Exception:  # no program loaded: the lead routes answer that, not the document
        return set()


def _decision_key(spec: LifecycleSpec | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if spec is None:
        return ((), ())
    return (tuple(sorted(spec.sales.reject_reasons)), tuple(spec.sales.qualify_requires))


def _configured(
    base: dict[str, Any], spec: LifecycleSpec | None, personas: tuple[str, ...]
) -> dict[str, Any]:
    """The document with what the program configures: personas, reasons, BANT."""
    schema = copy.deepcopy(base)
    found = schema.get("components", {}).get("schemas", {})
    if DECISION_SCHEMA in found and spec is not None:
        found[DECISION_SCHEMA] = decision_schema(found[DECISION_SCHEMA], spec)
    if LEAD_SCHEMA in found:
        found[LEAD_SCHEMA]["properties"]["persona"] = {
            "type": "string",
            "enum": ["", *personas],
            "default": "",
            "description": "A persona the sequences name (case-insensitive), or empty.",
        }
    return schema


def decision_schema(general: dict[str, Any], spec: LifecycleSpec) -> dict[str, Any]:
    """One variant per decision: reject with a configured reason code, qualify with the
    required BANT answers, the others as the general body says."""
    props = general["properties"]
    decisions = list(props["decision"]["enum"])
    others = [d for d in decisions if d not in ("reject", "qualify")]
    variants = [
        _variant(general, ["reject"], {"reason_code": _reasons(spec)}, ["reason_code"]),
        _variant(general, ["qualify"], {"bant": _bant(general, spec)}, ["bant"]),
        _variant(general, others, {}, []),
    ]
    return {
        "title": general.get("title", DECISION_SCHEMA),
        "description": general.get("description", ""),
        "oneOf": variants,
        "discriminator": {"propertyName": "decision"},
    }


def _variant(
    general: dict[str, Any], decisions: list[str], props: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    properties = {**general["properties"], **props}
    properties["decision"] = {**general["properties"]["decision"], "enum": decisions}
    return {
        "type": "object",
        "title": f"{DECISION_SCHEMA} ({', '.join(decisions)})",
        "properties": properties,
        "required": ["decision", *required],
        "additionalProperties": False,
    }


def _reasons(spec: LifecycleSpec) -> dict[str, Any]:
    return {
        "type": "string",
        "enum": sorted(spec.sales.reject_reasons),
        "description": "A reject reason code from lifecycle.yaml (sales.reject_reasons).",
    }


def _bant(general: dict[str, Any], spec: LifecycleSpec) -> dict[str, Any]:
    required = list(spec.sales.qualify_requires)
    answer = {"type": "string", "pattern": documented.NOT_BLANK_PATTERN}
    properties = {
        name: answer if name in required else {"anyOf": [{"type": "string"}, {"type": "null"}]}
        for name in BANT_FIELDS
    }
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        "description": f"qualify needs answers for {', '.join(required) or 'nothing'}.",
    }


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request)) or headers.get("Allow", "")
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=headers)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method the document gives for this path (Starlette's 405 names only the first
    matching route's, and GET and DELETE on one path are two routes)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern, _, _ = _compiled(template)
        if pattern.match(request.url.path):
            methods |= {method.upper() for method in operations if method in HTTP_METHODS}
    return sorted(methods)


@functools.lru_cache(maxsize=256)
def _compiled(template: str) -> tuple[re.Pattern[str], str, dict[str, Any]]:
    return compile_path(template)
