"""Migrations upgrade an empty database (SQLite and PostgreSQL) and downgrade cleanly."""

from __future__ import annotations

from sqlalchemy import inspect

from nurture.db.migrate import current_revision, downgrade, upgrade
from nurture.db.models import Base
from nurture.db.session import make_engine


def test_upgrade_creates_every_table_and_index(db_url: str) -> None:
    engine = make_engine(db_url)
    inspector = inspect(engine)
    assert set(Base.metadata.tables) <= set(inspector.get_table_names())
    due = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("enrollments")}
    assert due["ix_enrollments_due"] == ["status", "next_run_at"]
    engine.dispose()
    assert current_revision(db_url) is not None


def test_downgrade_to_base_and_back(db_url: str) -> None:
    downgrade(db_url, "base")
    engine = make_engine(db_url)
    assert "leads" not in inspect(engine).get_table_names()
    engine.dispose()
    upgrade(db_url)
    engine = make_engine(db_url)
    assert "leads" in inspect(engine).get_table_names()
    engine.dispose()


def test_email_stays_unique_regardless_of_case_after_every_migration(db_url: str) -> None:
    import pytest
    from sqlalchemy.exc import IntegrityError

    engine = make_engine(db_url)
    insert = "INSERT INTO leads (email, first_name, last_name, company, title, industry, country, "
    insert += "timezone, locale, persona, journey_stage, lifecycle_stage, attributes, created_at, "
    insert += "updated_at) VALUES ('{}', '', '', '', '', '', '', '', '', '', 'awareness', 'lead', "
    insert += "'{{}}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    with engine.begin() as conn:
        conn.exec_driver_sql(insert.format("Ana@Example.com"))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql(insert.format("ana@example.COM"))
    engine.dispose()
