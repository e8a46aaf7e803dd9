"""The weak-key guard: a default, short or predictable NURTURE_SECRET_KEY is refused by
every process that signs or verifies links, unless everything runs on this machine
(`nurture run`, `nurture web`, `nurture tick` on 127.0.0.1, no broker, loopback links)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.engine import SEQUENCES, TEMPLATES
from typer.testing import CliRunner, Result

from nurture.cli import app
from nurture.cli import engine as engine_cli
from nurture.cli import web as web_cli
from nurture.sequences.batch import BatchReport
from nurture.settings import InsecureSettings, Settings, require_secret_key

BROKER = "redis://127.0.0.1:6379/15"
HOW_TO_MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
WEAK_KEYS = [
    "change-me-in-production",
    "change-me-in-production ",  # trailing space
    " change-me-in-production\n",
    "CHANGE-ME-IN-PRODUCTION",
    "change-me-in-production" * 3,  # long, and still the default
    "aaaaaaaaaaaaaaaa",
    "a" * 64,
    "passwordpasswordpasswordpassword",
    "0123456789" * 4,
    "a-long-test-secret-for-the-worker",
    secrets.token_hex(8),
    secrets.token_urlsafe(16),  # 22 characters
    "  " + secrets.token_urlsafe(12) + "                  ",  # padded to 40
]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_template: Path) -> Iterator[Path]:
    """No NURTURE_* from the machine; a migrated SQLite file; the engine's fixture folders."""
    for name in list(os.environ):
        if name.startswith("NURTURE_"):
            monkeypatch.delenv(name)
    db = tmp_path / "nurture.db"
    db.write_bytes(sqlite_template.read_bytes())
    monkeypatch.setenv("NURTURE_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("NURTURE_SEQUENCES_DIR", str(SEQUENCES))
    monkeypatch.setenv("NURTURE_TEMPLATES_DIR", str(TEMPLATES))
    monkeypatch.setenv("NURTURE_TRANSPORT", "memory")
    yield tmp_path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def refused(result: Result) -> str:
    """The refusal's message (the command raised InsecureSettings before doing anything)."""
    assert isinstance(result.exception, InsecureSettings), (result.output, result.exception)
    message = str(result.exception)
    assert "NURTURE_SECRET_KEY" in message and HOW_TO_MAKE_ONE in message
    return message


@pytest.mark.parametrize("key", WEAK_KEYS)
def test_weak_keys_are_refused_when_a_broker_is_set(key: str) -> None:
    with pytest.raises(InsecureSettings) as refusal:
        require_secret_key(Settings(secret_key=key, broker_url=BROKER), "web")
    assert HOW_TO_MAKE_ONE in str(refusal.value)
    assert key.strip() not in str(refusal.value)  # the key itself is never printed


def test_a_generated_key_always_passes() -> None:
    from nurture.settings import key_weakness

    # The key the refusal tells people to make (43 characters, 180+ bits by the estimate).
    assert all(key_weakness(secrets.token_urlsafe(32)) is None for _ in range(20_000))
    for key in (secrets.token_urlsafe(32), secrets.token_hex(32)):
        require_secret_key(Settings(secret_key=key, broker_url=BROKER, web_host="0.0.0.0"), "web")


def test_loopback_links_are_needed_for_a_weak_key() -> None:
    # On 127.0.0.1 behind a proxy, the links in the mail point at the public name.
    behind_a_proxy = Settings(base_url="https://track.example.com")
    with pytest.raises(InsecureSettings):
        require_secret_key(behind_a_proxy, "web")
    for base_url in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"):
        require_secret_key(Settings(base_url=base_url), "web")


def test_the_uvicorn_factory_refuses_a_weak_key(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nurture.web.app import app_from_env

    monkeypatch.setenv("NURTURE_BROKER_URL", BROKER)
    with pytest.raises(InsecureSettings, match="NURTURE_SECRET_KEY"):
        app_from_env()
    # uvicorn's --host is invisible to the factory: loopback settings do not make it safe.
    monkeypatch.delenv("NURTURE_BROKER_URL")
    with pytest.raises(InsecureSettings, match="NURTURE_SECRET_KEY"):
        app_from_env()
    monkeypatch.setenv("NURTURE_SECRET_KEY", secrets.token_urlsafe(32))
    assert app_from_env().title == "Nurture"


def test_uvicorn_factory_with_host_0000_does_not_start(env: Path) -> None:
    command = [sys.executable, "-m", "uvicorn", "--factory", "nurture.web.app:app_from_env"]
    command += ["--host", "0.0.0.0", "--port", "0"]
    process_env = {**os.environ, "NURTURE_BROKER_URL": BROKER}
    try:
        done = subprocess.run(
            command, env=process_env, cwd=env, capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("uvicorn started serving with the default key") from exc
    assert done.returncode != 0
    assert "NURTURE_SECRET_KEY" in done.stderr and HOW_TO_MAKE_ONE in done.stderr


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    """What `nurture web` would serve, instead of serving it."""
    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(web_cli.uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    return calls


def test_nurture_web_on_loopback_serves_with_the_default_key(
    env: Path, served: list[tuple[Any, dict[str, Any]]]
) -> None:
    result = invoke("web")
    assert result.exit_code == 0, result.output
    [(served_app, options)] = served
    # Built here, where the bind address is known, rather than by the strict factory.
    assert not isinstance(served_app, str) and options["host"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (("web", "--host", "0.0.0.0"), {}),
        (("web", "--host", "127.0.0.1"), {"NURTURE_BROKER_URL": BROKER}),
        (("web",), {"NURTURE_BASE_URL": "https://track.example.com"}),
        # Several workers build the app with the factory, which cannot see --host.
        (("web", "--workers", "2"), {}),
        (("web",), {"NURTURE_WEB_WORKERS": "2"}),
        (("web",), {"NURTURE_SECRET_KEY": "change-me-in-production ", "NURTURE_WEB_WORKERS": "3"}),
    ],
)
def test_nurture_web_refuses_a_weak_key_when_exposed(
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    served: list[tuple[Any, dict[str, Any]]],
    args: tuple[str, ...],
    extra: dict[str, str],
) -> None:
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    refused(invoke(*args))
    assert served == []


def test_nurture_web_with_workers_and_a_strong_key_uses_the_factory(
    env: Path, monkeypatch: pytest.MonkeyPatch, served: list[tuple[Any, dict[str, Any]]]
) -> None:
    monkeypatch.setenv("NURTURE_SECRET_KEY", secrets.token_urlsafe(32))
    result = invoke("web", "--host", "0.0.0.0", "--workers", "2")
    assert result.exit_code == 0, result.output
    [(served_app, options)] = served
    assert served_app == "nurture.web.app:app_from_env" and options["factory"] is True


@pytest.fixture
def no_ticks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The passes `nurture run` and `nurture tick` would make (run stops at its first, as
    if Ctrl-C), and no web thread."""
    passes: list[str] = []

    def one_pass(rt: Any, now: Any, should_stop: Any = None) -> BatchReport:
        passes.append("pass")
        if should_stop is not None:  # the loop of `nurture run`
            raise KeyboardInterrupt
        return BatchReport()

    monkeypatch.setattr(engine_cli, "run_tick", one_pass)
    monkeypatch.setattr(engine_cli, "serve_in_thread", lambda rt: None)
    return passes


@pytest.mark.parametrize("web", ["--web", "--no-web"])
@pytest.mark.parametrize(
    "extra",
    [
        {"NURTURE_BASE_URL": "https://track.example.com"},
        {"NURTURE_WEB_HOST": "0.0.0.0"},
        {"NURTURE_BROKER_URL": BROKER},
        {"NURTURE_SECRET_KEY": "aaaaaaaaaaaaaaaa", "NURTURE_BASE_URL": "https://t.example"},
    ],
)
def test_nurture_run_refuses_a_weak_key_when_exposed(
    env: Path, monkeypatch: pytest.MonkeyPatch, no_ticks: list[str], web: str, extra: dict[str, str]
) -> None:
    # --no-web too: the mail it sends carries links a web process elsewhere answers.
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    refused(invoke("run", web))
    assert no_ticks == []


def test_nurture_run_and_tick_on_loopback_keep_the_default_key(
    env: Path, no_ticks: list[str]
) -> None:
    assert invoke("run").exit_code == 0
    assert invoke("run", "--no-web").exit_code == 0
    assert invoke("tick").exit_code == 0
    assert no_ticks == ["pass"] * 3


def test_nurture_tick_refuses_a_weak_key_when_its_links_are_public(
    env: Path, monkeypatch: pytest.MonkeyPatch, no_ticks: list[str]
) -> None:
    # Cron-style production: `nurture tick` sends the mail, a web process answers the links.
    monkeypatch.setenv("NURTURE_BASE_URL", "https://track.example.com")
    refused(invoke("tick"))
    monkeypatch.setenv("NURTURE_SECRET_KEY", secrets.token_urlsafe(32))
    assert invoke("tick").exit_code == 0 and no_ticks == ["pass"]


def test_the_celery_worker_refuses_a_weak_key(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nurture import worker

    # No NURTURE_BROKER_URL: the worker still has one (its default Redis).
    monkeypatch.setattr(worker, "_runtime", None)
    with pytest.raises(InsecureSettings, match="NURTURE_SECRET_KEY"):
        worker.runtime()
    monkeypatch.setenv("NURTURE_SECRET_KEY", secrets.token_urlsafe(32))
    rt = worker.runtime()
    rt.close()


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_celery_worker_and_beat_with_a_weak_key_do_not_start(env: Path, command: str) -> None:
    args = [sys.executable, "-m", "celery", "-A", "nurture.worker", command, "-l", "INFO"]
    args += ["--pool=solo"] if command == "worker" else ["-s", str(env / "beat-schedule")]
    process_env = {**os.environ, "NURTURE_BROKER_URL": BROKER}
    try:
        done = subprocess.run(
            args, env=process_env, cwd=env, capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"celery {command} started with the default key") from exc
    assert done.returncode == 2
    assert "refusing to start" in done.stdout + done.stderr
    assert HOW_TO_MAKE_ONE in done.stdout + done.stderr
