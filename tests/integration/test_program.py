"""The program (sequences, scoring and lifecycle rules) is loaded once per process and
published, so every process of a deployment decides with the same rules: a worker without
the YAML folder too. Rules edited in the folder, or published by another process, are
picked up at the next pass; a file with errors keeps the last good rules."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from support.funnel import MONDAY, SEQUENCES, TEMPLATES, make_runtime

from nurture.bootstrap import build_runtime
from nurture.funnel.loading import LifecycleConfigError
from nurture.scoring.loading import ScoringError, load_rules
from nurture.settings import Settings

GOOD_30 = "kind: scoring\nhalf_life: 30d\nengagement:\n  o: {event: opened, points: 1}\n"
GOOD_7 = "kind: scoring\nhalf_life: 7d\nengagement:\n  o: {event: opened, points: 2}\n"


def folder_settings(db_url: str, folder: Path) -> Settings:
    return Settings(
        database_url=db_url,
        sequences_dir=folder,
        templates_dir=TEMPLATES,
        transport="memory",
        secret_key="test-secret",
    )


def copy_of_fixtures(tmp_path: Path) -> Path:
    folder = tmp_path / "sequences"
    shutil.copytree(SEQUENCES, folder)
    return folder


def test_a_changed_scoring_file_is_picked_up_and_errors_keep_the_good_rules(
    db_url: str, tmp_path: Path
) -> None:
    folder = copy_of_fixtures(tmp_path)
    path = folder / "scoring.yaml"
    path.write_text("kind: scoring\nhalf_life: 0d\n")
    rt = build_runtime(folder_settings(db_url, folder))
    try:
        rt.load_program(MONDAY)
        with pytest.raises(ScoringError):
            rt.program.scoring  # noqa: B018
        path.write_text(GOOD_30)
        assert rt.refresh_program(MONDAY).scoring.half_life.days == 30
        path.write_text(GOOD_7 + "\n")  # another size: a change
        assert rt.refresh_program(MONDAY).scoring.half_life.days == 7
        path.write_text("kind: scoring\nhalf_life: nope\n")
        assert rt.refresh_program(MONDAY).scoring.half_life.days == 7  # the last good rules
        assert rt.program.scoring_error is not None  # kept to be shown
    finally:
        rt.close()
    assert not load_rules(tmp_path / "absent.yaml").loaded


def test_rules_follow_the_settings_folder(db_url: str, tmp_path: Path) -> None:
    for name, days in (("a", 30), ("b", 7)):
        folder = copy_of_fixtures(tmp_path / name)
        (folder / "scoring.yaml").write_text(f"kind: scoring\nhalf_life: {days}d\n")
        rt = build_runtime(folder_settings(db_url, folder))
        assert rt.load_program(MONDAY).scoring.half_life.days == days
        rt.close()
    folder = copy_of_fixtures(tmp_path / "none")
    (folder / "scoring.yaml").unlink()
    rt = build_runtime(folder_settings(db_url, folder))
    assert not rt.load_program(MONDAY).scoring.loaded  # no scoring file: nothing is scored
    rt.close()


def test_a_worker_without_the_folder_decides_with_the_published_rules(db_url: str) -> None:
    publisher = make_runtime(db_url)  # has the YAML folder: publishes it
    worker = build_runtime(folder_settings(db_url, Path("/nonexistent/sequences")))
    try:
        program = worker.load_program(MONDAY)
        assert sorted(s.key for s in program.catalog.specs()) == sorted(
            s.key for s in publisher.program.catalog.specs()
        )
        assert program.scoring.loaded
        assert [r.name for r in program.scoring.event_rules] == [
            r.name for r in publisher.program.scoring.event_rules
        ]
        assert program.lifecycle == publisher.program.lifecycle
        assert program.lifecycle is not None
        assert worker.funnel().spec == publisher.funnel().spec
    finally:
        publisher.close()
        worker.close()


def test_a_worker_picks_up_rules_another_process_published(db_url: str, tmp_path: Path) -> None:
    folder = copy_of_fixtures(tmp_path)
    first = build_runtime(folder_settings(db_url, folder))
    first.load_program(MONDAY)
    worker = build_runtime(folder_settings(db_url, tmp_path / "absent"))
    worker.load_program(MONDAY)
    before = worker.program.scoring.half_life
    (folder / "scoring.yaml").write_text(GOOD_7)
    (folder / "lifecycle.yaml").unlink()
    first.refresh_program(MONDAY + timedelta(minutes=1))
    try:
        assert worker.refresh_program(MONDAY).scoring.half_life == timedelta(days=7) != before
        assert worker.program.lifecycle is None  # the folder has no lifecycle.yaml any more
    finally:
        first.close()
        worker.close()


def test_a_broken_lifecycle_file_keeps_the_published_rules(db_url: str, tmp_path: Path) -> None:
    folder = copy_of_fixtures(tmp_path)
    good = build_runtime(folder_settings(db_url, folder))
    spec = good.load_program(MONDAY).lifecycle
    good.close()
    (folder / "lifecycle.yaml").write_text("kind: lifecycle\nmql: nope\n")
    rt = build_runtime(folder_settings(db_url, folder))
    try:
        program = rt.load_program(MONDAY + timedelta(minutes=1))
        assert program.lifecycle == spec  # the last good version stays in force
        assert isinstance(program.lifecycle_error, LifecycleConfigError)
    finally:
        rt.close()


def test_without_any_published_rules_a_broken_lifecycle_stops_the_funnel(
    db_url: str, tmp_path: Path
) -> None:
    folder = copy_of_fixtures(tmp_path)
    (folder / "lifecycle.yaml").write_text("kind: lifecycle\nmql: nope\n")
    rt = build_runtime(folder_settings(db_url, folder))
    try:
        rt.load_program(MONDAY)
        with pytest.raises(LifecycleConfigError):
            rt.funnel().spec  # noqa: B018
        assert rt.funnel().rules.loaded  # scoring stands
    finally:
        rt.close()
