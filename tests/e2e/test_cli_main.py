"""The ``nurture`` entry point turns configuration and database problems into messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def nurture(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    code = "from nurture.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_a_bad_setting_names_the_variable(tmp_path: Path) -> None:
    result = nurture("tick", env={"NURTURE_BATCH_SIZE": "abc"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "configuration error: NURTURE_BATCH_SIZE" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unmigrated_database_says_how_to_fix_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = nurture("outbox", env={"NURTURE_DATABASE_URL": url}, cwd=tmp_path)
    assert result.returncode == 1
    assert "nurture db upgrade" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_default_secret_is_refused_when_exposed(tmp_path: Path) -> None:
    from nurture.settings import InsecureSettings, Settings, require_secret_key

    require_secret_key(Settings(), "nurture run")  # loopback only: allowed
    for exposed in (Settings(broker_url="redis://127.0.0.1:6379/0"), Settings(web_host="0.0.0.0")):
        try:
            require_secret_key(exposed, "web")
        except InsecureSettings as exc:
            assert "NURTURE_SECRET_KEY" in str(exc)
        else:
            raise AssertionError("the default secret was accepted")
    strong = "Vt3kq9X2mL7pR4sN8wZ1cY6bH0dF5gJ-aE_uQ"  # "x" * 32 is refused: no entropy
    require_secret_key(Settings(web_host="0.0.0.0", secret_key=strong), "web")
    result = nurture("web", "--host", "0.0.0.0", env={}, cwd=tmp_path)
    assert result.returncode == 2 and "refusing to start" in result.stderr


def test_settings_are_checked_when_read() -> None:
    import pytest
    from pydantic import ValidationError

    from nurture.settings import Settings

    for field, bad in [
        ("cap_period", "weekly"),
        ("default_timezone", "Asia/Seul"),
        ("batch_size", 0),
        ("tick_seconds", -1),
        ("base_url", "notaurl"),
        ("database_url", "mysql://x@127.0.0.1/x"),
    ]:
        with pytest.raises(ValidationError, match=field):
            Settings(**{field: bad})
