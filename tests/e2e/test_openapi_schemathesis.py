"""The API against its own OpenAPI document: schemathesis's command line (every phase:
examples, coverage, fuzzing, stateful links; positive and negative data) on a live server.
No request the schema allows is refused with 422, none it forbids is accepted, and no
answer is a 5xx or a status or header the document does not describe.

Bounded (a fixed seed, 60 examples per operation), so it runs in CI in about a minute."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from support.funnel import MONDAY, add_lead, make_runtime
from support.web import API_KEY, OTHER_KEY

from nurture.db.migrate import upgrade
from nurture.delivery.transports import MemoryTransport
from nurture.web.app import create_app

EXAMPLES = 60
SEED = 20261202
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The app on a fresh SQLite file with one lead, served by uvicorn on loopback."""
    url = f"sqlite:///{tmp_path / 'nurture.db'}"
    upgrade(url)
    rt = make_runtime(url, MemoryTransport(), api_keys=f"{API_KEY},{OTHER_KEY}")
    add_lead(rt, "known@example.com")
    port = _free_port()
    config = uvicorn.Config(
        create_app(rt, clock=lambda: MONDAY), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    rt.close()


def _st() -> str:
    found = shutil.which("st", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("schemathesis is not installed: pip install -e '.[dev]'")
    return found


def test_the_api_keeps_its_openapi_promises(served: str, tmp_path: Path) -> None:
    command = [
        _st(),
        "run",
        f"{served}/openapi.json",
        "--header",
        f"Authorization: Bearer {API_KEY}",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--no-color",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path
    )
    report = done.stdout[-20_000:]
    assert done.returncode == 0, f"schemathesis found problems:\n{report}\n{done.stderr[-3000:]}"
    assert "12/12" in report  # every operation of the document was tested
