"""A real Celery worker process on the real Redis broker sends a due step end to end to a
real SMTP server. The tick runs in the test process and dispatches over Redis."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
import redis
from support.engine import SEQUENCES, TEMPLATES, add_lead, make_runtime, messages
from support.smtp_server import SmtpSink, smtp_sink

__all__ = ["smtp_sink"]  # the fixture, imported so pytest finds it

pytestmark = [pytest.mark.slow, pytest.mark.redis]

WAIT_SECONDS = 30


@pytest.fixture
def worker_env(
    db_url: str, redis_url: str, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The settings of both the worker process and this one (Redis database 15, flushed)."""
    redis.Redis.from_url(redis_url).flushdb()
    env = {
        "NURTURE_BROKER_URL": redis_url,
        "NURTURE_SECRET_KEY": "Vt3kq9X2mL7pR4sN8wZ1cY6bH0dF5gJ-aE_uQ",
        "NURTURE_DATABASE_URL": db_url,
        "NURTURE_TRANSPORT": "smtp",
        "NURTURE_SMTP_HOST": smtp_sink.host,
        "NURTURE_SMTP_PORT": str(smtp_sink.port),
        "NURTURE_SMTP_TIMEOUT": "5",
        "NURTURE_SEQUENCES_DIR": str(SEQUENCES),
        "NURTURE_TEMPLATES_DIR": str(TEMPLATES),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def worker_module(worker_env: dict[str, str]) -> Iterator[ModuleType]:
    """nurture.worker imported with the test settings (it builds its Celery app at import)."""
    import nurture.worker

    module = importlib.reload(nurture.worker)
    yield module
    if module._runtime is not None:
        module._runtime.close()
    module.app.close()  # the producer's Redis connections
    # Later importers get a fresh module built from their own environment.
    sys.modules.pop("nurture.worker", None)


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Path]:
    """A real ``celery worker`` process; yields its log file."""
    log = tmp_path / "worker.log"
    command = [sys.executable, "-m", "celery", "-A", "nurture.worker", "worker"]
    command += ["-Q", "send,events,default", "--pool=solo", "--concurrency=1", "-l", "INFO"]
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for(lambda: "ready." in log.read_text(), f"worker start:\n{log}")
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {WAIT_SECONDS}s waiting for {what}")


def test_a_celery_worker_sends_a_due_step_to_smtp(
    db_url: str, worker_module: ModuleType, worker: Path, smtp_sink: SmtpSink
) -> None:
    now = datetime.now(UTC)
    rt = make_runtime(db_url, now=now)
    add_lead(rt, "alex@acme.example", now - timedelta(minutes=1), persona="other")

    dispatched = worker_module.tick_task()

    assert dispatched == 1
    wait_for(lambda: len(smtp_sink.messages) >= 1, "the message at the SMTP sink")
    wait_for(lambda: messages(rt)[0].status == "sent", "the message row marked sent")
    time.sleep(0.5)  # anything extra would have arrived by now
    [received] = smtp_sink.messages
    assert received.recipients == ("alex@acme.example",)
    assert received.message["Subject"] == "A note for Alex"
    [row] = messages(rt)
    assert (row.step_id, row.status, row.attempts) == ("note", "sent", 1)
    assert received.message["Message-ID"] == row.message_id
    assert "nurture.advance" in worker.read_text()  # it went through the worker
    assert worker_module.tick_task() == 0  # nothing due any more
    rt.close()
