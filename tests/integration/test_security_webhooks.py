"""Hand-off webhook signatures: the signature covers timestamp, delivery id, event and body
(a captured request cannot be replayed under another delivery id or event), verify()
answers False to any junk and never raises, and a target can have its own secret."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from support import REPO
from support.funnel import MONDAY, SECRET, SEQUENCES, make_runtime, use_fixture_folder

from nurture.db.models import WebhookAttempt, WebhookDelivery
from nurture.db.session import transaction
from nurture.funnel import webhooks
from nurture.funnel.loading import LifecycleConfigError, load_lifecycle
from nurture.funnel.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signed_headers,
    verify,
)
from nurture.jobs.funnel import deliver_notifications
from nurture.runtime import Runtime

BODY = b'{"event":"handoff.mql","lead":{"id":42}}'
ROOT = REPO
Posted = list[tuple[str, dict[str, str], bytes]]


def headers_at(now: datetime = MONDAY, **changes: str) -> dict[str, str]:
    headers = signed_headers(SECRET, BODY, now, delivery="17", event="handoff.mql")
    return {**headers, **changes}


def test_the_signature_covers_delivery_id_and_event() -> None:
    headers = headers_at()
    assert headers[SIGNATURE_HEADER].startswith("v1=")  # the scheme's version, for receivers
    assert headers[DELIVERY_HEADER] == "17" and headers[EVENT_HEADER] == "handoff.mql"
    assert verify(SECRET, BODY, headers, MONDAY)
    # The same request replayed as another delivery (past the receiver's dedupe), or as
    # another event: refused.
    assert not verify(SECRET, BODY, {**headers, DELIVERY_HEADER: "18"}, MONDAY)
    assert not verify(SECRET, BODY, {**headers, EVENT_HEADER: "sla.breached"}, MONDAY)
    assert not verify(SECRET, BODY + b" ", headers, MONDAY)
    assert not verify("another-secret", BODY, headers, MONDAY)
    # Receivers' frameworks spell header names in any case.
    assert verify(SECRET, BODY, {k.lower(): v for k, v in headers.items()}, MONDAY)


def test_event_and_body_cannot_trade_bytes() -> None:
    # With "." between the fields "handoff" + "mql.{...}" would sign like "handoff.mql" +
    # "{...}"; the fields are separated by a line break, which no header value holds.
    headers = headers_at(event="handoff")
    assert not verify(SECRET, b"mql." + BODY, headers, MONDAY)


@pytest.mark.parametrize(
    "changes",
    [
        {TIMESTAMP_HEADER: "9" * 401},
        {TIMESTAMP_HEADER: "9" * 20},
        {TIMESTAMP_HEADER: "-1767607200"},
        {TIMESTAMP_HEADER: "1e9"},
        {TIMESTAMP_HEADER: ""},
        {TIMESTAMP_HEADER: " 1772445600"},
        {TIMESTAMP_HEADER: "1_772_445_600"},
        {TIMESTAMP_HEADER: "١٧٧٢٤٤٥٦٠٠"},  # digits, but not ASCII ones
        {SIGNATURE_HEADER: ""},
        {SIGNATURE_HEADER: "v1="},
        {SIGNATURE_HEADER: "v1=" + "zz" * 32},
        {SIGNATURE_HEADER: "v1=" + "ab" * 31},
        {SIGNATURE_HEADER: "v1=" + "ab" * 33},
        {SIGNATURE_HEADER: "v2=" + "ab" * 32},
        {SIGNATURE_HEADER: "v1=é" + "a" * 63},
        {SIGNATURE_HEADER: "sha256=" + "ab" * 32},
        {DELIVERY_HEADER: ""},
        {DELIVERY_HEADER: "17\n18"},
        {DELIVERY_HEADER: "9" * 400},
        {EVENT_HEADER: ""},
        {EVENT_HEADER: "handoff.mql\r\nX-Evil: 1"},
    ],
)
def test_verify_says_false_to_junk_and_never_raises(changes: dict[str, str]) -> None:
    assert verify(SECRET, BODY, headers_at(**changes), MONDAY) is False


@pytest.mark.parametrize(
    "missing", [TIMESTAMP_HEADER, SIGNATURE_HEADER, DELIVERY_HEADER, EVENT_HEADER]
)
def test_verify_without_a_header_is_false(missing: str) -> None:
    headers = headers_at()
    del headers[missing]
    assert verify(SECRET, BODY, headers, MONDAY) is False


def test_verify_with_junk_arguments_is_false() -> None:
    headers = headers_at()
    assert verify("", BODY, headers, MONDAY) is False  # no secret signs nothing
    assert verify(SECRET, BODY.decode(), headers, MONDAY) is False  # type: ignore[arg-type]
    assert verify(SECRET, BODY, None, MONDAY) is False  # type: ignore[arg-type]
    assert verify(SECRET, BODY, {TIMESTAMP_HEADER: 5}, MONDAY) is False  # type: ignore[dict-item]
    assert verify(SECRET, BODY, headers, "now") is False  # type: ignore[arg-type]


def test_verify_refuses_timestamps_outside_five_minutes() -> None:
    headers = headers_at()
    for seconds, accepted in ((0, True), (299, True), (-299, True), (301, False), (-301, False)):
        assert verify(SECRET, BODY, headers, MONDAY + timedelta(seconds=seconds)) is accepted
    assert not verify(SECRET, BODY, headers, MONDAY + timedelta(days=3650))
    assert verify(SECRET, BODY, headers, MONDAY + timedelta(seconds=500), tolerance_seconds=600)


def test_the_documented_receiver_verifies_a_real_request() -> None:
    text = (ROOT / "docs" / "funnel.md").read_text()
    section = text[text.index("### Verifying the signature") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)  # the receiver's snippet, as a reader copies it
    receiver_verify = namespace["verify"]
    now = datetime.now(UTC)
    headers = signed_headers(SECRET, BODY, now, delivery="17", event="handoff.mql")
    assert receiver_verify(SECRET, headers, BODY)
    assert not receiver_verify(SECRET, {**headers, DELIVERY_HEADER: "18"}, BODY)
    stale = signed_headers(SECRET, BODY, now - timedelta(minutes=6), delivery="17", event="e")
    assert not receiver_verify(SECRET, stale, BODY)
    assert not receiver_verify(SECRET, {**headers, TIMESTAMP_HEADER: "9" * 401}, BODY)


# -- per-target secrets ---------------------------------------------------------------------

CRM = "https://crm.example/hooks/nurture"
OTHER = "https://other.example/hooks/nurture"
HANDOFF = f"""handoff:
  webhooks:
    - {{url: "{CRM}", secret_env: NURTURE_TEST_CRM_SECRET}}
    - {{url: "{OTHER}"}}
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The funnel fixtures, with two webhook targets: one with a secret of its own."""
    use_fixture_folder(monkeypatch)
    copy = tmp_path / "sequences"
    shutil.copytree(SEQUENCES, copy)
    lifecycle = copy / "lifecycle.yaml"
    lifecycle.write_text(lifecycle.read_text().replace("handoff:\n", HANDOFF, 1))
    monkeypatch.setenv("NURTURE_SEQUENCES_DIR", str(copy))
    yield copy


def runtime(db_url: str, folder: Path) -> Runtime:
    return make_runtime(db_url, sequences_dir=folder)


def queue(rt: Runtime, *urls: str) -> None:
    with transaction(rt.sessions) as session:
        session.add_all(
            WebhookDelivery(
                handoff_id=None, lead_id=None, event="handoff.mql", target_kind="webhook",
                target_url=url, payload={"event": "handoff.mql", "n": n}, status="pending",
                attempts=0, next_attempt_at=MONDAY, last_error="", created_at=MONDAY,
            )
            for n, url in enumerate(urls)
        )  # fmt: skip


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> Posted:
    found: Posted = []

    def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Any:
        found.append((url, headers, body))
        return 200, ""

    monkeypatch.setattr(webhooks, "http_post", post)
    return found


def test_a_target_with_its_own_secret_is_signed_with_it(
    db_url: str, folder: Path, posted: Posted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURTURE_TEST_CRM_SECRET", "crm-only-secret")
    rt = runtime(db_url, folder)
    queue(rt, CRM, OTHER)
    report = deliver_notifications(rt, MONDAY)
    assert report.delivered == 2, report.errors
    by_url = {url: (headers, body) for url, headers, body in posted}
    crm_headers, crm_body = by_url[CRM]
    assert verify("crm-only-secret", crm_body, crm_headers, MONDAY)
    assert not verify(SECRET, crm_body, crm_headers, MONDAY)  # not the shared one
    other_headers, other_body = by_url[OTHER]
    assert verify(SECRET, other_body, other_headers, MONDAY)  # NURTURE_WEBHOOK_SECRET
    rt.close()


def test_a_target_whose_secret_is_not_set_gets_nothing(
    db_url: str, folder: Path, posted: Posted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NURTURE_TEST_CRM_SECRET", raising=False)
    rt = runtime(db_url, folder)
    queue(rt, CRM, OTHER)
    report = deliver_notifications(rt, MONDAY)
    assert [url for url, _, _ in posted] == [OTHER]  # never the shared secret instead
    assert report.failed == 1 and "NURTURE_TEST_CRM_SECRET" in report.errors[0]
    with rt.sessions() as session:
        rows = session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))
        assert [(d.target_url, d.status) for d in rows] == [(CRM, "failed"), (OTHER, "delivered")]
        attempt = session.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id)).first()
        assert attempt is not None and "NURTURE_TEST_CRM_SECRET" in attempt.error
    rt.close()


def test_a_secret_written_in_the_yaml_is_refused(folder: Path) -> None:
    lifecycle = folder / "lifecycle.yaml"
    text = lifecycle.read_text().replace("secret_env: NURTURE_TEST_CRM_SECRET", "secret: s3cret")
    lifecycle.write_text(text)
    with pytest.raises(LifecycleConfigError, match="secret_env"):
        load_lifecycle(folder)


def test_secret_env_names_an_environment_variable(folder: Path) -> None:
    lifecycle = folder / "lifecycle.yaml"
    text = lifecycle.read_text().replace("NURTURE_TEST_CRM_SECRET", "'not a name'")
    lifecycle.write_text(text)
    with pytest.raises(LifecycleConfigError, match="secret_env"):
        load_lifecycle(folder)
