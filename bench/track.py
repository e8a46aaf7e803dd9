"""Tracking benchmark: the open pixel and the click redirect with durable event capture,
against a no-op GIF endpoint of the same app, under the same concurrent load, in one run.

    .venv/bin/python bench/track.py [--seconds 8] [--rounds 2] [--connections 50]
                                    [--workers 1] [--messages 20000] [--embedded]
                                    [--broker redis://127.0.0.1:6379/14]
                                    [--db postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

The app runs in its own process (uvicorn, ``nurture.web.app:app_from_env``) on 127.0.0.1 and
a random port, against a fresh database (SQLite by default; with ``--db`` a new PostgreSQL
database is created next to the one named and dropped afterwards). The load comes from
another process: ``--connections`` keep-alive HTTP/1.1 connections (a small asyncio client,
so the driver costs little CPU), each sending its next request as soon as the answer
arrives. Phases alternate ``--rounds`` times, ``--seconds`` each:

- no-op: ``GET /bench/noop.gif`` (only with NURTURE_BENCH_ENDPOINTS=1): answers the same
  GIF and does nothing else;
- tracking: alternately ``GET /o/<token>.gif`` and ``GET /c/<token>`` over the seeded
  messages (each request a different message): token check, message and link lookup, bot
  filter, INSERT of the event, COMMIT, and only then the answer.

Where scoring happens: by default the web process runs as in production, with a broker
(Redis, ``--broker``): it hands the stored events to the ``events`` queue in batches, and
workers (not started here) score them; the run checks that every stored event was queued,
then empties the queue. ``--embedded`` runs the embedded mode instead, where the web
process also scores the hits on a background thread: that CPU is then part of the figure.

It prints both rates, their ratio (goal: at least 0.5), latencies, and checks that the
events stored equal the 2xx/3xx answers. Exit status 0 when the goal is met and every check
passed, 1 otherwise. Traffic goes only to 127.0.0.1 and stops after the bounded phases.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL = 0.5
HOST = "127.0.0.1"
# The app refuses weak keys (nurture/settings.py): a fresh strong one each run.
SECRET = secrets.token_urlsafe(32)
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15"
WARMUP_SECONDS = 2.0
DEFAULT_BROKER = "redis://127.0.0.1:6379/14"
EVENTS_QUEUE = "events"


# -- the database -----------------------------------------------------------------------


def fresh_database(admin_url: str | None, workdir: Path) -> tuple[str, Any]:
    """A migrated, empty database URL, and a function that drops it afterwards."""
    from nurture.db.migrate import upgrade
    from nurture.db.session import make_engine

    if not admin_url:
        url = f"sqlite:///{workdir / 'bench.db'}"
        upgrade(url)
        return url, lambda: None
    name = f"nurture_bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return url, drop


def seed(url: str, count: int, base_url: str) -> list[str]:
    """``count`` sent messages with two links each; returns the request paths of the
    tracking phase: for each message its open pixel, then its first link."""
    from sqlalchemy import insert, select

    from nurture.db.models import Enrollment, Lead, Link, Message
    from nurture.db.session import make_engine
    from nurture.tracking.tokens import click_url, open_url

    # Sent a day ago: no "too soon after the send" verdicts in the measured phase.
    sent_at = datetime.now(UTC) - timedelta(days=1)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(Lead), [_lead(i, sent_at) for i in range(count)])
        lead_ids = list(conn.scalars(select(Lead.id).order_by(Lead.id)))
        conn.execute(insert(Enrollment), [_enrollment(lead, sent_at) for lead in lead_ids])
        enrollments = conn.execute(select(Enrollment.id, Enrollment.lead_id)).all()
        conn.execute(insert(Message), [_message(e, lead, sent_at) for e, lead in enrollments])
        message_ids = list(conn.scalars(select(Message.id).order_by(Message.id)))
        conn.execute(
            insert(Link),
            [
                {"message_id": m, "position": p, "url": f"https://site.example/{m}/{p}"}
                for m in message_ids
                for p in (1, 2)
            ],
        )
    engine.dispose()
    paths: list[str] = []
    for m in message_ids:
        paths.append(open_url("", SECRET, m))
        paths.append(click_url("", SECRET, m, 1))
    return paths


def _lead(i: int, at: datetime) -> dict[str, Any]:
    return {
        "email": f"lead{i}@bench.example",
        "first_name": "Bench",
        "last_name": str(i),
        "company": "",
        "title": "",
        "industry": "",
        "country": "",
        "timezone": "UTC",
        "locale": "en",
        "persona": "",
        "journey_stage": "awareness",
        "lifecycle_stage": "lead",
        "attributes": {},
        "created_at": at,
        "updated_at": at,
    }


def _enrollment(lead_id: int, at: datetime) -> dict[str, Any]:
    return {
        "lead_id": lead_id,
        "sequence_key": "bench",
        "sequence_version": "1",
        "current_step": "__end__",
        "step_started_at": at,
        "status": "completed",
        "entered_at": at,
    }


def _message(enrollment_id: int, lead_id: int, at: datetime) -> dict[str, Any]:
    return {
        "enrollment_id": enrollment_id,
        "lead_id": lead_id,
        "sequence_key": "bench",
        "sequence_version": "1",
        "step_id": "welcome",
        "status": "sent",
        "to_email": f"lead{lead_id}@bench.example",
        "subject": "Bench",
        "attempts": 1,
        "created_at": at,
        "sent_at": at,
        "updated_at": at,
    }


def stored_hits(url: str) -> Counter[str]:
    from sqlalchemy import func, select

    from nurture.db.models import Event
    from nurture.db.session import make_engine

    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(Event.type, func.count())
            .where(Event.type.in_(("opened", "clicked")))
            .group_by(Event.type)
        )
        counts = Counter({event_type: int(n) for event_type, n in rows})
    engine.dispose()
    return counts


# -- the server -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_server(
    url: str, port: int, workers: int, broker: str, workdir: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "NURTURE_DATABASE_URL": url,
        "NURTURE_SECRET_KEY": SECRET,
        "NURTURE_BENCH_ENDPOINTS": "1",
        "NURTURE_BROKER_URL": broker,
        "NURTURE_BASE_URL": f"http://{HOST}:{port}",
        "NURTURE_SEQUENCES_DIR": str(ROOT / "sequences"),
        "NURTURE_TEMPLATES_DIR": str(ROOT / "templates"),
    }
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "nurture.web.app:app_from_env",
        "--host", HOST, "--port", str(port), "--workers", str(workers),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    log = (workdir / "server.log").open("wb")
    return subprocess.Popen(command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(port: int, server: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited early with status {server.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


# -- the load driver (runs in its own process) ---------------------------------------------


async def _connection(
    port: int, paths: list[str], start: int, step: int, deadline: float, out: dict[str, Any]
) -> None:
    """One keep-alive connection sending requests back to back until ``deadline``."""
    reader, writer = await asyncio.open_connection(HOST, port)
    index = start
    try:
        while time.monotonic() < deadline:
            path = paths[index % len(paths)]
            index += step
            request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: {BROWSER}\r\n\r\n"
            began = time.perf_counter()
            writer.write(request.encode())
            status = await _read_response(reader)
            out["latencies"].append(time.perf_counter() - began)
            out["statuses"][status] += 1
    finally:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def _drive(port: int, paths: list[str], connections: int, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"latencies": [], "statuses": Counter()}
    began = time.monotonic()
    deadline = began + seconds
    await asyncio.gather(
        *(_connection(port, paths, i, connections, deadline, out) for i in range(connections))
    )
    elapsed = time.monotonic() - began
    latencies = sorted(out["latencies"])
    total = len(latencies)
    return {
        "requests": total,
        "seconds": elapsed,
        "rate": total / elapsed,
        "statuses": {str(k): v for k, v in out["statuses"].items()},
        "p50_ms": 1000 * statistics.median(latencies) if latencies else 0.0,
        "p99_ms": 1000 * latencies[int(0.99 * (total - 1))] if latencies else 0.0,
    }


def drive_main(args: argparse.Namespace) -> None:
    paths = json.loads(Path(args.paths).read_text())
    result = asyncio.run(_drive(args.port, paths, args.connections, args.seconds))
    print(json.dumps(result))


def run_driver(
    port: int, paths: list[str], connections: int, seconds: float, workdir: Path
) -> dict[str, Any]:
    """Drive load from a separate process; returns its JSON result."""
    paths_file = workdir / f"paths-{uuid.uuid4().hex[:6]}.json"
    paths_file.write_text(json.dumps(paths))
    command = [
        sys.executable, __file__, "drive", "--port", str(port), "--paths", str(paths_file),
        "--connections", str(connections), "--seconds", str(seconds),
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"the load driver failed:\n{done.stderr}")
    return dict(json.loads(done.stdout))


# -- the benchmark --------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="nurture-bench-track-") as tmp:
        workdir = Path(tmp)
        url, drop = fresh_database(args.db, workdir)
        try:
            return _bench(args, url, workdir)
        finally:
            drop()


def _bench(args: argparse.Namespace, url: str, workdir: Path) -> int:
    port = free_port()
    started = time.monotonic()
    paths = seed(url, args.messages, f"http://{HOST}:{port}")
    where = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    print(f"seeded {args.messages} sent messages on {where} in {time.monotonic() - started:.1f}s")
    broker = "" if args.embedded else args.broker
    if broker:
        clear_queue(broker)
    server = start_server(url, port, args.workers, broker, workdir)
    noop: list[dict[str, Any]] = []
    tracked: list[dict[str, Any]] = []
    try:
        wait_ready(port, server)
        noop_paths = ["/bench/noop.gif"]
        run_driver(port, noop_paths, args.connections, WARMUP_SECONDS, workdir)
        for round_ in range(args.rounds):
            # Each round takes the next slice of messages: every hit is on a fresh message.
            noop.append(run_driver(port, noop_paths, args.connections, args.seconds, workdir))
            rest = paths[round_ * len(paths) // args.rounds :]
            tracked.append(run_driver(port, rest, args.connections, args.seconds, workdir))
    finally:
        stop_server(server)
    queued = drain_queue(broker) if broker else None
    return report(args, url, combine(noop), combine(tracked), queued, workdir)


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one phase as one result (rates over the summed time)."""
    requests = sum(r["requests"] for r in results)
    seconds = sum(r["seconds"] for r in results)
    statuses: Counter[str] = Counter()
    for r in results:
        statuses.update(r["statuses"])
    return {
        "requests": requests,
        "seconds": seconds,
        "rate": requests / seconds if seconds else 0.0,
        "rounds": [round(r["rate"]) for r in results],
        "statuses": dict(statuses),
        "p50_ms": statistics.median(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
    }


# -- the events queue (broker mode) ---------------------------------------------------------


def clear_queue(broker: str) -> None:
    import redis

    client = redis.Redis.from_url(broker)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise SystemExit(f"no Redis at {broker} ({exc}); start it, or use --embedded") from None
    client.delete(EVENTS_QUEUE)


def drain_queue(broker: str) -> int:
    """How many event ids the web process queued (and empty the queue)."""
    import redis

    client = redis.Redis.from_url(broker)
    ids = 0
    for raw in client.lrange(EVENTS_QUEUE, 0, -1):
        message = json.loads(raw)
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        ids += len(args[0])
    client.delete(EVENTS_QUEUE)
    return ids


def report(
    args: argparse.Namespace,
    url: str,
    noop: dict[str, Any],
    tracked: dict[str, Any],
    queued: int | None,
    workdir: Path,
) -> int:
    stored = stored_hits(url)
    answered = sum(n for code, n in tracked["statuses"].items() if 200 <= int(code) < 400)
    ratio = tracked["rate"] / noop["rate"] if noop["rate"] else 0.0
    mode = "embedded (the web process scores)" if args.embedded else "broker (workers score)"
    print(
        f"{args.connections} connections, {args.rounds} x {args.seconds:g}s per phase, "
        f"{args.workers} server worker(s), {mode}"
    )
    for name, result in (("no-op GIF", noop), ("open+click", tracked)):
        print(
            f"  {name:<11} {result['rate']:8.0f} req/s  (rounds {result['rounds']}, "
            f"{result['requests']} requests, p50 {result['p50_ms']:.1f} ms, "
            f"p99 {result['p99_ms']:.1f} ms, statuses {result['statuses']})"
        )
    print(f"  ratio       {ratio:8.2f}  (goal >= {GOAL})")
    total = sum(stored.values())
    checks = [total == answered]
    print(
        f"  events stored {total} ({stored['opened']} opened, {stored['clicked']} clicked) "
        f"vs {answered} 2xx/3xx answers: {'OK' if checks[-1] else 'MISMATCH'}"
    )
    if queued is not None:
        checks.append(queued == total)
        print(f"  event ids queued for scoring {queued}: {'OK' if checks[-1] else 'MISMATCH'}")
    errors = [code for code in tracked["statuses"] if not 200 <= int(code) < 400]
    if errors:
        print(f"  errors: {errors}; the end of the server log:")
        print((workdir / "server.log").read_text()[-2000:])
    return 0 if ratio >= GOAL and all(checks) and not errors else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    drive = sub.add_parser("drive", help="(internal) the load driver process")
    drive.add_argument("--port", type=int, required=True)
    drive.add_argument("--paths", required=True)
    drive.add_argument("--connections", type=int, default=50)
    drive.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=8.0, help="Seconds per phase.")
    parser.add_argument("--rounds", type=int, default=2, help="Alternations of the phases.")
    parser.add_argument("--broker", default=DEFAULT_BROKER, help="Redis for the events queue.")
    parser.add_argument(
        "--embedded", action="store_true", help="No broker: the web process scores the hits."
    )
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes.")
    parser.add_argument("--messages", type=int, default=40000, help="Sent messages to seed.")
    parser.add_argument(
        "--db", default=None, help="PostgreSQL admin URL (a fresh database is made beside it)."
    )
    args = parser.parse_args()
    if args.command == "drive":
        drive_main(args)
        return
    sys.exit(bench(args))


if __name__ == "__main__":
    main()
