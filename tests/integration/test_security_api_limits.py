"""The API's limits: ids out of range get 404 or 422, never 500 (every route that takes an
id); lead attributes are bounded (size, keys, key length, depth, NUL) with a 422 naming the
field, and so are the rows of a CSV import."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.engine import MONDAY, add_lead
from support.web import AUTH, Clock, Web, web_runtime

from nurture.db.models import Lead
from nurture.delivery.transports import MemoryTransport
from nurture.leads.importer import ImportReport, import_leads
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


def test_without_a_key_any_id_is_still_401(web: Web) -> None:
    # The key is checked before the id: a bad id tells a stranger nothing.
    for method, template in id_routes(web):
        for value in (str(2**64), "-1", "abc"):
            response = web.client.request(method, ID_PARAM.sub(value, template), json={})
            assert response.status_code == 401, (method, template, value)


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


# -- lead attributes -----------------------------------------------------------------------


def post_lead(web: Web, attributes: Any, email: str = "sam@example.com") -> Any:
    # json.dumps writes NaN and Infinity (as other clients do); httpx's json= refuses them.
    body = json.dumps({"email": email, "attributes": attributes})
    headers = {**AUTH, "Content-Type": "application/json"}
    return web.client.post("/api/v1/leads", content=body, headers=headers)


def refused_field(response: Any, status: int = 422) -> tuple[str, str]:
    """The one problem of a 422 (or a 409): (field, message)."""
    assert response.status_code == status, response.text[:500]
    [problem] = response.json()["detail"]
    return problem["field"], problem["msg"]


def stored_attributes(web: Web, email: str = "sam@example.com") -> dict[str, Any] | None:
    with web.rt.sessions() as session:
        found = session.scalars(select(Lead).where(Lead.email == email)).first()
        return None if found is None else dict(found.attributes)


def nested(levels: int) -> Any:
    value: Any = "deep"
    for _ in range(levels):
        value = {"x": value}
    return value


@pytest.mark.parametrize(
    ("attributes", "field", "says"),
    [
        ({f"k{n}": "v" for n in range(20_000)}, "attributes", "at most 100"),
        ({f"k{n}": n for n in range(101)}, "attributes", "at most 100"),
        ({"notes": "x" * 10_000_000}, "attributes", "bytes as JSON"),
        ({f"k{n}": "x" * 500 for n in range(40)}, "attributes", "bytes as JSON"),
        ({"k" * 101: "v"}, "attributes", "1 to 100 characters"),
        ({"plan": "pro\x00"}, "attributes.plan", "NUL"),
        ({"a\x00b": "v"}, "attributes", "NUL"),
        ({"crm": {"owner": "x\x00"}}, "attributes.crm", "NUL"),
        ({"crm": {"own\x00er": "x"}}, "attributes.crm", "NUL"),
        ({"tags": ["a", ["b", "c\x00"]]}, "attributes.tags", "NUL"),
        ({"deep": nested(5)}, "attributes.deep", "nested"),
        ({"ratio": float("nan")}, "attributes.ratio", "NaN"),
        ({"ratio": [float("inf")]}, "attributes.ratio", "NaN"),
    ],
)
def test_oversized_or_unstorable_attributes_get_422_naming_the_field(
    web: Web, attributes: dict[str, Any], field: str, says: str
) -> None:
    found, message = refused_field(post_lead(web, attributes))
    assert found == field and says in message, message
    assert stored_attributes(web) is None  # nothing stored


def test_attributes_within_the_limits_are_stored(web: Web) -> None:
    attributes = {f"k{n}": "v" * 100 for n in range(99)}
    attributes["crm"] = nested(4)
    assert post_lead(web, attributes).status_code == 201
    assert stored_attributes(web) == attributes


def test_updates_cannot_grow_attributes_past_the_limits(web: Web) -> None:
    first = {f"a{n}": "v" for n in range(60)}
    assert post_lead(web, first).status_code == 201
    more = {f"b{n}": "v" for n in range(60)}
    # The body is fine by itself; the stored lead cannot take it: 409.
    field, message = refused_field(post_lead(web, more), status=409)
    assert field == "attributes" and "at most 100" in message
    assert stored_attributes(web) == first  # nothing changed
    # Overwriting keys it has is fine: the merged attributes stay within the limit.
    assert post_lead(web, {f"a{n}": "w" for n in range(60)}).status_code == 200


# -- the same limits in a CSV import --------------------------------------------------------


def csv_import(web: Web, tmp_path: Path, header: list[str], *rows: list[str]) -> ImportReport:
    path = tmp_path / "leads.csv"
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return import_leads(path, web.rt.sessions, web.rt.funnel(), now=MONDAY)


def errors(report: ImportReport) -> list[tuple[int, str, str]]:
    return [(e.row, e.field, e.message) for e in report.errors]


def test_a_csv_row_with_too_many_or_too_big_attributes_is_a_row_error(
    web: Web, tmp_path: Path
) -> None:
    many = [f"c{n}" for n in range(150)]
    report = csv_import(
        web,
        tmp_path,
        ["email", "notes", *many],
        ["a@example.com", "x" * 20_000, *[""] * 150],
        ["b@example.com", "", *["v"] * 150],
        ["c@example.com", "fine", *["v"] * 10, *[""] * 140],
    )
    assert (report.created, report.skipped) == (1, 2)
    [(row2, field2, says2), (row3, field3, says3)] = errors(report)
    assert (row2, field2) == (2, "attributes") and "bytes as JSON" in says2
    assert (row3, field3) == (3, "attributes") and "at most 100" in says3
    assert stored_attributes(web, "c@example.com") == {"notes": "fine"} | {
        f"c{n}": "v" for n in range(10)
    }


def test_a_csv_row_with_nul_in_an_attribute_names_it(web: Web, tmp_path: Path) -> None:
    report = csv_import(web, tmp_path, ["email", "erp"], ["a@example.com", "S\x00P"])
    assert report.skipped == 1
    [(row, field, says)] = errors(report)
    assert (row, field) == (2, "attributes.erp") and "NUL" in says


def test_csv_imports_cannot_grow_attributes_past_the_limits(web: Web, tmp_path: Path) -> None:
    first = [f"a{n}" for n in range(60)]
    second = [f"b{n}" for n in range(60)]
    report = csv_import(web, tmp_path, ["email", *first], ["a@example.com", *["v"] * 60])
    assert report.created == 1
    report = csv_import(web, tmp_path, ["email", *second], ["a@example.com", *["v"] * 60])
    assert (report.updated, report.skipped) == (0, 1)
    [(row, field, says)] = errors(report)
    assert (row, field) == (2, "attributes") and "at most 100" in says
    assert stored_attributes(web, "a@example.com") == {name: "v" for name in first}
    # Twice in one file: the second row would grow the lead the first row creates.
    report = csv_import(
        web,
        tmp_path,
        ["email", *first, *second],
        ["new@example.com", *["v"] * 60, *[""] * 60],
        ["new@example.com", *[""] * 60, *["v"] * 60],
    )
    assert (report.created, report.skipped) == (1, 1)
    assert errors(report)[0][:2] == (3, "attributes")
