"""Ingest benchmark: N site events through the batch API path with scoring, against a plain
SQLAlchemy Core ``executemany`` insert of the same rows into the events table.

    .venv/bin/python bench/ingest.py [--events 100000] [--leads 2000] [--batch 1000]
                                     [--db postgresql+psycopg://user@host/db] [--profile]

API path: ``POST /api/v1/events`` with ``{"events": [...]}`` batches, through the real app
(``nurture.web.app.create_app``, in process over ASGI, embedded mode: no broker), so each
batch is validated, its emails resolved to leads, its events deduplicated and stored, then
scored and run through the funnel's MQL and fast-track rules in the same transaction
(``nurture.funnel.pipeline.process_stored``), exactly as the API does it.

Baseline: the same rows (as the API would store them) inserted with Core ``executemany``,
one transaction per batch of the same size. Each path gets a fresh database: two SQLite
files in a temporary folder by default, or two databases created next to ``--db``'s
(dropped afterwards). The two paths take turns, batch by batch, so a machine that slows
down or speeds up during the run moves both rates alike. Exit status: 0 when the goal is
met and the checks pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nurture.bootstrap import build_runtime  # noqa: E402
from nurture.db.migrate import upgrade  # noqa: E402
from nurture.db.models import Event, Lead, ScoreEntry  # noqa: E402
from nurture.db.session import make_engine  # noqa: E402
from nurture.leads.event_schema import EventIn  # noqa: E402
from nurture.leads.events import event_row  # noqa: E402
from nurture.settings import load_settings  # noqa: E402

GOAL = 0.3
API_KEY = "bench-ingest-key"
# --worker: a Redis database of its own (flushed), and the worker's secret key.
DEFAULT_BROKER = "redis://127.0.0.1:6379/13"
WORKER_SECRET = secrets.token_urlsafe(32)  # workers refuse weak keys
WORKER_LOG = Path(tempfile.gettempdir()) / "nurture-bench-ingest-worker.log"
SITE = "https://www.ledgerline.example"
# (type, weight, url paths, content stage): what a B2B site sends, most of it page views.
MIX: list[tuple[str, int, list[str], str]] = [
    ("page_visit", 30, ["/blog/three-way-match-explained", "/ko/blog/accruals-without-the-chase",
                        "/blog/where-maverick-spend-hides"], ""),
    ("page_visit", 12, ["/customers/halvorsen-foods", "/customers/coastal-freight-partners"], ""),
    ("page_visit", 8, ["/pricing", "/roi-calculator", "/free-trial"], ""),
    ("page_visit", 14, ["/careers", "/about", "/docs/api"], ""),
    ("content_download", 6, ["/resources/month-end-close-checklist"], "awareness"),
    ("content_download", 6, ["/resources/cfo-guide-ap-automation-business-case"],
     "consideration"),
    ("content_download", 3, ["/resources/implementation-plan"], "decision"),
    ("pricing_page_view", 5, ["/pricing"], ""),
    ("webinar_registered", 5, ["/webinars/close-in-five-days"], ""),
    ("webinar_attended", 3, ["/webinars/close-in-five-days"], ""),
    ("form_submitted", 5, ["/contact"], ""),
    ("demo_requested", 2, ["/demo"], ""),
    ("contact_sales_requested", 1, ["/contact-sales"], ""),
]  # fmt: skip


def main() -> int:
    args = _arguments()
    os.environ["NURTURE_SEQUENCES_DIR"] = str(args.sequences)
    now = datetime.now(UTC).replace(microsecond=0)
    leads = _leads(args.leads)
    events = _events(args.events, leads, now, random.Random(20260105))
    batches = [events[i : i + args.batch] for i in range(0, len(events), args.batch)]
    print(f"{len(events):,} events of {len(leads):,} leads, batches of {args.batch:,}")
    with _database(args.db, "plain") as plain_url, _database(args.db, "api") as api_url:
        if args.worker:
            plain, api = _run_with_worker(plain_url, api_url, leads, batches, now, args.broker)
        else:
            plain, api = _run(plain_url, api_url, leads, batches, now, args.profile)
    return _report(len(events), plain, api)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--leads", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=1_000, help="events per API request")
    parser.add_argument("--db", default="", help="a PostgreSQL URL (default: SQLite files)")
    parser.add_argument("--sequences", type=Path, default=ROOT / "sequences")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the API handlers (store + pipeline)"
    )
    parser.add_argument(
        "--worker",
        action="store_true",
        help="production topology: the API with a broker, one Celery worker scoring",
    )
    parser.add_argument("--broker", default=DEFAULT_BROKER, help="Redis URL for --worker")
    return parser.parse_args()


# -- data --------------------------------------------------------------------------------------


def _leads(count: int) -> list[dict[str, Any]]:
    industries = ["manufacturing", "logistics", "retail", "healthcare", "media", "software"]
    titles = ["CFO", "Director of IT", "Procurement Manager", "Head of Finance", "Controller"]
    personas = ["finance_leader", "it_director", "procurement_manager"]
    return [
        {
            "email": f"lead{n:06d}@company{n % 997}.example",
            "title": titles[n % len(titles)],
            "industry": industries[n % len(industries)],
            "company_size": 50 + (n * 37) % 5000,
            "country": ["US", "GB", "DE", "KR", "JP"][n % 5],
            "persona": personas[n % 3],
            "attributes": {"erp": ["SAP", "NetSuite", "Xero"][n % 3]},
        }
        for n in range(count)
    ]


def _events(
    count: int, leads: list[dict[str, Any]], now: datetime, rng: random.Random
) -> list[dict[str, Any]]:
    """API bodies: a lead's email, a type, a time in the last 180 days, a dedupe key."""
    weights = [w for _, w, _, _ in MIX]
    events = []
    for n in range(count):
        type_, _, paths, stage = rng.choices(MIX, weights)[0]
        body: dict[str, Any] = {
            "email": rng.choice(leads)["email"],
            "type": type_,
            "occurred_at": (now - timedelta(seconds=rng.randrange(180 * 86400))).isoformat(),
            "dedupe_key": f"bench-{n}",
            "url": SITE + rng.choice(paths),
        }
        if stage:
            body["content_stage"] = stage
        events.append(body)
    return events


# -- databases -----------------------------------------------------------------------------------


@contextmanager
def _database(admin_url: str, name: str) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file, or a PostgreSQL database made for it."""
    if not admin_url:
        with tempfile.TemporaryDirectory(prefix="nurture-bench-") as folder:
            url = f"sqlite:///{folder}/{name}.db"
            upgrade(url)
            yield url
        return
    database = f"nurture_bench_{name}_{uuid.uuid4().hex[:8]}"
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
    url = admin_url.rsplit("/", 1)[0] + f"/{database}"
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.dispose()


def _seed_leads(engine: Engine, leads: list[dict[str, Any]], now: datetime) -> dict[str, int]:
    rows = [{**lead, "created_at": now, "updated_at": now, "timezone": "UTC"} for lead in leads]
    with engine.begin() as conn:
        conn.execute(insert(Lead.__table__), rows)  # type: ignore[arg-type]
        return {email: lead_id for lead_id, email in conn.execute(select(Lead.id, Lead.email))}


# -- phases ----------------------------------------------------------------------------------


class _Plain:
    """The baseline: the same rows as the API stores, inserted with Core executemany, one
    transaction per batch."""

    def __init__(self, url: str, leads: list[dict[str, Any]], now: datetime) -> None:
        self.engine = make_engine(url)
        self.ids = _seed_leads(self.engine, leads, now)
        self.now = now

    def rows(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The batch as the API would store it (built untimed)."""
        return [event_row(EventIn.model_validate(e), self.ids[e["email"]], self.now) for e in batch]

    def send(self, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(Event.__table__), rows)  # type: ignore[arg-type]


class _Api:
    """The API path: ``POST /api/v1/events`` batches through the real app, in process."""

    def __init__(
        self, url: str, leads: list[dict[str, Any]], now: datetime, broker: str = ""
    ) -> None:
        from fastapi.testclient import TestClient

        from nurture.web.app import create_app

        os.environ["NURTURE_DATABASE_URL"] = url
        settings = load_settings(database_url=url, api_keys=API_KEY, broker_url=broker)
        self.runtime = build_runtime(settings)
        _seed_leads(self.runtime.engine, leads, now)
        self.client = TestClient(create_app(self.runtime))
        self.client.__enter__()
        self.client.get("/healthz")  # warm up the app and the pool
        self.headers = {"Authorization": f"Bearer {API_KEY}"}
        self.created = 0

    def send(self, batch: list[dict[str, Any]]) -> None:
        response = self.client.post("/api/v1/events", json={"events": batch}, headers=self.headers)
        if response.status_code != 200:
            raise SystemExit(f"API answered {response.status_code}: {response.text}")
        self.created += response.json()["created"]

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.runtime.close()


def _run(
    plain_url: str,
    api_url: str,
    leads: list[dict[str, Any]],
    batches: list[list[dict[str, Any]]],
    now: datetime,
    profile: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both paths batch by batch, alternately: whatever else the machine does while the
    benchmark runs slows both alike, so the ratio holds even when the rates move."""
    spent = _time_parts()
    profiler = _profile_handlers() if profile else None
    plain, api = _Plain(plain_url, leads, now), _Api(api_url, leads, now)
    clocks = {"plain": [0.0, 0.0], "api": [0.0, 0.0]}  # wall, CPU
    try:
        for batch in batches:
            rows = plain.rows(batch)
            _timed(clocks["plain"], plain.send, rows)
            _timed(clocks["api"], api.send, batch)
        if profiler is not None:
            out = io.StringIO()
            order = os.environ.get("SORT", "cumulative")
            pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(45)
            print(out.getvalue())
        plain_result = {"seconds": clocks["plain"][0], "cpu": clocks["plain"][1]}
        api_result = {"seconds": clocks["api"][0], "cpu": clocks["api"][1], "parts": spent}
        plain_result.update(_counts(plain.engine))
        api_result.update(api_created=api.created, **_counts(api.runtime.engine))
        return plain_result, api_result
    finally:
        plain.engine.dispose()
        api.close()


def _run_with_worker(
    plain_url: str,
    api_url: str,
    leads: list[dict[str, Any]],
    batches: list[list[dict[str, Any]]],
    now: datetime,
    broker: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The baseline alone first, then the API as production runs it: the web process
    stores each batch and queues it on the ``events`` queue of ``broker``; one Celery
    worker process (``--pool solo``) scores it and runs the funnel. The API's time runs
    from the first request to the moment no stored event is left unscored. (The paths
    cannot take turns here: the worker would be scoring while the baseline runs.)"""
    import redis

    redis.Redis.from_url(broker).flushdb()
    plain = _Plain(plain_url, leads, now)
    clock = [0.0, 0.0]
    for batch in batches:
        _timed(clock, plain.send, plain.rows(batch))
    plain_result = {"seconds": clock[0], "cpu": clock[1], **_counts(plain.engine)}
    plain.engine.dispose()
    worker = _start_worker(api_url, broker)
    api = _Api(api_url, leads, now, broker)
    try:
        start = time.perf_counter()
        for batch in batches:
            api.send(batch)
        stored = time.perf_counter() - start
        while _counts(api.runtime.engine)["unscored"]:
            if worker.poll() is not None:
                raise SystemExit(f"the worker stopped; see {WORKER_LOG}")
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        print(f"API stored every batch after {stored:.2f} s; the worker scored the last "
              f"event at {elapsed:.2f} s")  # fmt: skip
        api_result = {"seconds": elapsed, "cpu": None, "parts": {}}  # two processes
        api_result.update(api_created=api.created, **_counts(api.runtime.engine))
        return plain_result, api_result
    finally:
        api.close()
        worker.terminate()
        worker.wait(timeout=30)


def _start_worker(url: str, broker: str) -> subprocess.Popen[bytes]:
    """A Celery worker on the events queue, ready (its log: WORKER_LOG)."""
    env = {
        **os.environ,
        "NURTURE_DATABASE_URL": url,
        "NURTURE_BROKER_URL": broker,
        "NURTURE_SECRET_KEY": WORKER_SECRET,
    }
    command = [
        sys.executable, "-m", "celery", "-A", "nurture.worker", "worker", "-Q", "events",
        "--pool", "solo", "--loglevel", "INFO",
    ]  # fmt: skip
    log = WORKER_LOG
    with log.open("wb") as out:
        worker = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "ready." not in log.read_text(errors="replace"):
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the worker did not start; see {log}")
        time.sleep(0.2)
    return worker


def _timed(clock: list[float], send: Callable[[Any], None], batch: Any) -> None:
    start, cpu = time.perf_counter(), time.process_time()
    send(batch)
    clock[0] += time.perf_counter() - start
    clock[1] += time.process_time() - cpu


def _time_parts() -> dict[str, float]:
    """Seconds spent in the parts of the API path (the handlers run in another thread,
    which a profiler of this one does not see): storing, scoring, the funnel."""
    from nurture.funnel import pipeline
    from nurture.web import api

    spent: dict[str, float] = {}
    for module, name, label in (
        (api, "store_events", "store (validated batch -> events table)"),
        (pipeline, "score_events", "scoring (score_events)"),
        (pipeline, "score_claimed", "scoring (score_claimed, stored and scored inline)"),
        (pipeline, "evaluate_leads", "funnel (evaluate_leads)"),
    ):
        setattr(module, name, _timer(getattr(module, name), label, spent))
    return spent


def _timer(function: Callable[..., Any], label: str, spent: dict[str, float]) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - start

    return timed


def _profile_handlers() -> cProfile.Profile:
    """Profile the API's ingest calls (store and pipeline), which run in the server's
    worker thread: a profiler of this thread would see only the client waiting."""
    from nurture.web import api

    profiler = cProfile.Profile()
    ingest = api._ingest

    def profiled(*args: Any, **kwargs: Any) -> Any:
        profiler.enable()
        try:
            return ingest(*args, **kwargs)
        finally:
            profiler.disable()

    api._ingest = profiled  # type: ignore[assignment]
    return profiler


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            "events": conn.scalar(select(func.count()).select_from(Event)) or 0,
            "unscored": conn.scalar(
                select(func.count()).select_from(Event).where(Event.scored_at.is_(None))
            )
            or 0,
            "entries": conn.scalar(select(func.count()).select_from(ScoreEntry)) or 0,
        }


def _report(expected: int, plain: dict[str, Any], api: dict[str, Any]) -> int:
    plain_rate = expected / plain["seconds"]
    api_rate = expected / api["seconds"]
    ratio = api_rate / plain_rate
    print(
        f"plain Core executemany: {plain_rate:10,.0f} events/s ({plain['seconds']:.2f} s, "
        f"CPU {plain['cpu']:.2f} s)"
    )
    print(
        f"API batches + scoring:  {api_rate:10,.0f} events/s ({api['seconds']:.2f} s, "
        + (f"CPU {api['cpu']:.2f} s)" if api["cpu"] is not None else "web and worker)")
    )
    for label, seconds in api["parts"].items():
        print(f"  of which {label}: {seconds:.2f} s ({expected / seconds:,.0f} events/s)")
    print(f"ratio: {ratio:.2f} (goal >= {GOAL})")
    print(f"score entries written: {api['entries']:,}")
    checks = {
        f"plain phase stored {expected:,} events": plain["events"] == expected,
        f"API reported {expected:,} created": api["api_created"] == expected,
        f"API phase stored {expected:,} events": api["events"] == expected,
        "every event of the API phase was scored": api["unscored"] == 0,
        "scoring wrote ledger entries": api["entries"] > 0,
    }
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {name}")
    return 0 if all(checks.values()) and ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
