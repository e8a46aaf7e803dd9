"""The fixtures every test folder shares: a migrated database on SQLite (always) and
PostgreSQL (where running; in CI a missing service fails instead of skipping), Redis, an
in-memory transport, a runtime on the engine fixtures (``rt``) or the funnel fixtures
(``funnel_rt``), and a frozen clock.

``tests/unit`` needs none of the services; ``tests/integration`` uses the databases;
``tests/e2e`` starts processes (``nurture``, Celery workers) and browsers."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import support.engine as engine_support
import support.funnel as funnel_support
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from nurture.db.migrate import upgrade
from nurture.db.models import Base
from nurture.db.session import make_engine, make_session_factory
from nurture.delivery.transports import MemoryTransport
from nurture.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_ADMIN_URL = os.environ.get(
    "NURTURE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("NURTURE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def service_up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip locally with a clear reason; fail in CI, where every service must run."""
    if service_up(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: the {name} tests must run)")
    pytest.skip(f"{message}; start it to run these tests")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied for each test (migrating is the slow part)."""
    path = tmp_path_factory.mktemp("db") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session, dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"nurture_test_{uuid.uuid4().hex[:10]}"
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated, empty database: every database test runs on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "nurture.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def memory() -> MemoryTransport:
    """The in-memory transport: what the engine sent, for the test to read."""
    return MemoryTransport()


@pytest.fixture
def rt(db_url: str, memory: MemoryTransport) -> Iterator[Runtime]:
    """A runtime on the engine fixtures (sequences, templates), sending into ``memory``."""
    runtime = engine_support.make_runtime(db_url, memory)
    yield runtime
    runtime.close()


@pytest.fixture
def funnel_rt(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """A runtime on the funnel fixtures (sequences, scoring.yaml, lifecycle.yaml)."""
    funnel_support.use_fixture_folder(monkeypatch)
    runtime = funnel_support.make_runtime(db_url)
    yield runtime
    runtime.close()


@pytest.fixture
def frozen() -> Iterator[FrozenDateTimeFactory]:
    """The clock frozen at the engine fixtures' Monday 10:00 UTC; ``frozen.move_to(...)``
    and ``frozen.tick(...)`` move it."""
    with freeze_time(engine_support.MONDAY) as clock:
        yield clock
