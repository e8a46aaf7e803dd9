"""The API's limits: ids out of range get 404 or 422, never 500 (every route that takes an
id); lead attributes are bounded (size, keys, key length, depth, NUL) with a 422 naming the
field, and so are the rows of a CSV import."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from engine_support import MONDAY, add_lead
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from web_support import AUTH, Clock, Web, web_runtime

from nurture.delivery.transports import MemoryTransport
from nurture.web.app import create_app

ID_PARAM = re.compile(r"\{(\w*id)\}")
# Ids are INTEGER columns: 32 bits on PostgreSQL, where a larger value is a database error.
LARGEST_ID = 2**31 - 1
OUT_OF_RANGE = [str(2**31), str(2**63), str(2**64), str(10**30), "9" * 400]
OUT_OF_RANGE += ["-1", "0", "abc", "1.5", "1e3", "١"]


@pytest.fixture
def web(db_url: str) -> Iterator[Web]:
    transport = MemoryTransport()
    rt = web_runtime(db_url, transport)
    clock = Clock(MONDAY)
    # A 500 is an answer here, not an exception in the test.
    client = TestClient(create_app(rt, clock=clock), raise_server_exceptions=False)
    with client:
        yield Web(rt, transport, clock, client)
    rt.close()


def id_routes(web: Web) -> list[tuple[str, str]]:
    """Every (method, path) of the app with an id in its path."""
    found = [
        (method, route.path)
        for route in iter_route_contexts(web.client.app.routes)  # type: ignore[attr-defined]
        if ID_PARAM.search(route.path or "")
        for method in sorted(route.methods or ())
    ]
    assert {
        ("GET", "/api/v1/leads/{lead_id}"),
        ("POST", "/api/v1/leads/{lead_id}/erase"),
        ("DELETE", "/api/v1/leads/{lead_id}"),
        ("POST", "/api/v1/leads/{lead_id}/decision"),
        ("GET", "/api/v1/leads/{lead_id}/funnel"),
    } <= set(found)
    return found


def test_no_route_answers_500_to_an_id_out_of_range(web: Web) -> None:
    add_lead(web.rt, "lee@example.com", enrolled=False)
    body = {"decision": "accept"}
    for method, template in id_routes(web):
        for value in OUT_OF_RANGE:
            url = ID_PARAM.sub(value, template)
            response = web.client.request(method, url, headers=AUTH, json=body)
            assert response.status_code in (404, 422), (method, url, response.text)


def test_the_largest_id_is_simply_not_found(web: Web) -> None:
    response = web.client.get(f"/api/v1/leads/{LARGEST_ID}", headers=AUTH)
    assert response.status_code == 404


def test_an_id_out_of_range_gets_422_naming_it(web: Web) -> None:
    response = web.client.get(f"/api/v1/leads/{2**63}", headers=AUTH)
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["path", "lead_id"]


def test_openapi_documents_the_id_range(web: Web) -> None:
    schema = web.client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"].endswith("id"):
                    where = (path, parameter["name"])
                    assert parameter["schema"]["minimum"] == 1, where
                    assert parameter["schema"]["maximum"] == LARGEST_ID, where
