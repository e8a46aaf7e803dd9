"""Send benchmark: N due enrollments through the whole pipeline into an SMTP sink on loopback,
against a baseline that sends N pre-serialized messages with smtplib over one connection.

    .venv/bin/python bench/send.py [--n 10000] [--db URL] [--batch-size 500] [--profile]
                                   [--workers K]

The pipeline phase is ``nurture.jobs.tick.tick`` run until nothing is due: claim, load,
decide, claim the message rows (committed), render, build, SMTP over one connection per batch,
record the outcomes; with ``--workers K``, in K processes at once, as K Celery workers would.
Both phases also report the CPU time the sending process(es) used per message.

The sink is Postfix's ``smtp-sink`` (``apt-get install postfix``): it discards mail fast
enough not to be the bottleneck, and its ``-c`` counters tell how many messages really
arrived. Exit status: 0 when the goal is met and every check passed, 1 when a check failed
or the ratio is under the goal, 2 when smtp-sink is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import multiprocessing
import os
import pstats
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nurture.authoring.lead_context import lead_fields  # noqa: E402
from nurture.bootstrap import build_runtime  # noqa: E402
from nurture.db.migrate import upgrade  # noqa: E402
from nurture.db.models import Enrollment, Lead, Message  # noqa: E402
from nurture.db.session import make_engine  # noqa: E402
from nurture.delivery import (  # noqa: E402
    mime,
    sending,
    transports,
)
from nurture.delivery.compose import PendingSend, compose_email  # noqa: E402
from nurture.jobs import advance as jobs_advance  # noqa: E402
from nurture.jobs import tick as ticks  # noqa: E402
from nurture.runtime import Runtime  # noqa: E402
from nurture.sequences.engine import SendEmail  # noqa: E402
from nurture.settings import Settings, load_settings  # noqa: E402

GOAL = 0.5
HOST = "127.0.0.1"
SEQUENCE_KEY = "bench-send"
STEP_ID = "welcome"
# A shipped template: it extends templates/_layouts/base.html, so the CSS inlining is real.
TEMPLATE = "finance_leader/awareness/welcome"
SEQUENCE_YAML = f"""\
key: {SEQUENCE_KEY}
name: "Benchmark - one email"
audience:
  personas: [finance_leader]
  journey_stages: [awareness]
steps:
  - id: {STEP_ID}
    email:
      template: {TEMPLATE}
      subject: "{{{{ lead.first_name or 'Hi' }}}}, 5 signs your AP process is costing you"
"""
SINK_CANDIDATES = ("smtp-sink", "/usr/sbin/smtp-sink", "/usr/lib/postfix/smtp-sink")
INSTALL_HINT = (
    "smtp-sink not found. It ships with Postfix: `apt-get install postfix` on Debian/Ubuntu "
    "(choose 'No configuration'; no mail server needs to run). See bench/README.md."
)
FIRST_NAMES = ("Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie")
LAST_NAMES = ("Smith", "Garcia", "Chen", "Okafor", "Novak", "Silva", "Kim", "Larsen")


class BenchError(Exception):
    """The benchmark cannot run (not a failed check)."""


# ------------------------------------------------------------------------------------- Sink


class Sink:
    """smtp-sink on a free loopback port; ``received()`` reads its message counter."""

    _COUNTER = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")

    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = _free_port()
        self._out = workdir / "smtp-sink.out"
        command = [binary, "-c"]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]  # smtp-sink refuses to run as root without -u
        command += [f"{HOST}:{self.port}", "1000"]
        with self._out.open("wb") as out:
            self._proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                output = self._out.read_text(errors="replace").strip()
                raise BenchError(f"smtp-sink exited at start ({self._proc.returncode}): {output}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.2):
                return
            time.sleep(0.05)
        raise BenchError(f"smtp-sink is not listening on {HOST}:{self.port} after 5 s")

    def counters(self) -> tuple[int, int, int]:
        """(sessions, quits, messages) as of smtp-sink's latest counter line."""
        found = self._COUNTER.findall(self._out.read_bytes()[-200:])
        if not found:
            return 0, 0, 0
        sessions, quits, messages = found[-1]
        return int(sessions), int(quits), int(messages)

    def received(self, expected: int, timeout: float = 5.0) -> int:
        """Messages received so far, once the counter reaches ``expected`` and stays there
        (or stops moving); a surplus or a shortfall is the caller's to report."""
        deadline = time.monotonic() + timeout
        last, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = self.counters()[2]
            if count != last:
                last, stable_since = count, time.monotonic()
            settled = time.monotonic() - stable_since
            if (count >= expected and settled > 0.2) or settled > 1.0:
                return count
            time.sleep(0.05)
        return last

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def find_sink() -> str | None:
    for candidate in SINK_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


# --------------------------------------------------------------------------------- Database


@contextlib.contextmanager
def fresh_database(url: str | None, workdir: Path) -> Iterator[str]:
    """A new, migrated database: a SQLite file in ``workdir``, or a new PostgreSQL database
    next to the one ``url`` names (dropped afterwards)."""
    if url is None or url.startswith("sqlite"):
        path = workdir / "bench.db"
        fresh = f"sqlite:///{path}"
        upgrade(fresh)
        yield fresh
        return
    if not url.startswith("postgresql"):
        raise BenchError(f"--db: expected a sqlite:// or postgresql:// URL, got {url!r}")
    name = f"nurture_bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        fresh = url.rsplit("/", 1)[0] + f"/{name}"
        upgrade(fresh)
        yield fresh
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def seed(rt: Runtime, n: int, now: datetime) -> None:
    """N leads and N enrollments due at ``now``, inserted in bulk."""
    loaded = rt.catalog.latest(SEQUENCE_KEY)
    chunk = 2000
    with rt.engine.begin() as conn:
        for start in range(0, n, chunk):
            conn.execute(insert(Lead), [_lead(i, now) for i in range(start, min(n, start + chunk))])
        ids = list(conn.scalars(select(Lead.id).order_by(Lead.id)))
        rows = [
            {
                "lead_id": lead_id,
                "sequence_key": SEQUENCE_KEY,
                "sequence_version": loaded.version,
                "current_step": STEP_ID,
                "step_started_at": now,
                "next_run_at": now,
                "status": "active",
                "entered_at": now,
            }
            for lead_id in ids
        ]
        for start in range(0, len(rows), chunk):
            conn.execute(insert(Enrollment), rows[start : start + chunk])


def _lead(i: int, now: datetime) -> dict[str, Any]:
    return {
        "email": f"lead{i:06d}@bench.example",
        "first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
        "last_name": LAST_NAMES[i % len(LAST_NAMES)],
        "company": f"Company {i % 997}",
        "title": "Chief Financial Officer",
        "industry": "Manufacturing",
        "company_size": 50 + i % 5000,
        "country": "US",
        "timezone": "America/New_York",
        "locale": "en",
        "persona": "finance_leader",
        "journey_stage": "awareness",
        "lifecycle_stage": "lead",
        "attributes": {},
        "created_at": now,
        "updated_at": now,
    }


# ----------------------------------------------------------------------------------- Phases


@dataclass
class Phases:
    """Wall time spent in each stage of the pipeline, measured by wrapping its functions."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    missing: list[str] = field(default_factory=list)
    _undo: list[Callable[[], None]] = field(default_factory=list)

    def wrap(self, owner: Any, attribute: str, phase: str) -> None:
        original = getattr(owner, attribute, None)
        if original is None:  # renamed since this was written: that phase is not shown
            self.missing.append(f"{getattr(owner, '__name__', owner)}.{attribute}")
            return
        seconds = self.seconds

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[phase] += time.perf_counter() - start

        setattr(owner, attribute, timed)
        self._undo.append(lambda: setattr(owner, attribute, original))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def instrument() -> Phases:
    """Wrap the pipeline's stages (module globals, so the callers pick the wrappers up)."""
    phases = Phases()
    phases.wrap(ticks, "claim_due", "claim")
    phases.wrap(jobs_advance, "advance_claimed", "advance (load, decide, claim messages)")
    phases.wrap(sending, "compose_email", "render (templates, links)")
    phases.wrap(sending, "save_links", "save links")
    phases.wrap(sending, "build_message", "build (MIME, CSS inlining)")
    phases.wrap(transports, "serialize", "serialize")
    phases.wrap(transports.SmtpTransport, "send", "smtp (incl. serialize)")
    phases.wrap(jobs_advance, "record_outcomes", "record outcomes")
    return phases


def print_phases(phases: Phases, total: float, n: int) -> None:
    print("  per phase (wall time; 'other' is commits, take-over and glue):")
    shown = dict(phases.seconds)
    smtp = shown.pop("smtp (incl. serialize)", 0.0)
    shown["smtp (protocol)"] = smtp - shown.get("serialize", 0.0)
    top_level = sum(
        v for k, v in phases.seconds.items() if k not in ("serialize", "smtp (incl. serialize)")
    )
    shown["other"] = total - top_level - smtp
    for name, seconds in shown.items():
        per = seconds / n * 1e6 if n else 0.0
        print(f"    {name:<40} {seconds:7.2f} s {100 * seconds / total:5.1f} %  {per:7.0f} us/msg")
    if phases.missing:
        print(f"    (not measured, names not found: {', '.join(phases.missing)})")


# --------------------------------------------------------------------------------- The runs


@dataclass(frozen=True)
class Run:
    messages: int
    seconds: float
    cpu_seconds: float = 0.0  # CPU time of this process (all its threads) during the run

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def describe(self, name: str) -> str:
        line = f"{name}: {self.messages} sent in {self.seconds:.2f} s = {self.rate:,.0f}/s"
        if self.cpu_seconds and self.messages:
            per = self.cpu_seconds / self.messages * 1e6
            line += f" (CPU of the sending process(es): {per:,.0f} us/msg)"
        return line


def run_pipeline(rt: Runtime, now: datetime, profile: Path | None) -> tuple[Run, Phases]:
    phases = instrument()
    profiler = cProfile.Profile() if profile else None
    sent = 0
    try:
        start, cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        while True:
            report = ticks.tick(rt, now)
            if not report.total_sent and not report.deferred and not report.finished:
                break
            sent += report.total_sent
        if profiler:
            profiler.disable()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        phases.restore()
    if profiler and profile:
        profiler.dump_stats(str(profile))
    return Run(sent, elapsed, cpu), phases


@dataclass(frozen=True)
class WorkerResult:
    """What one worker process did: messages sent, its wall and CPU time, its phases."""

    sent: int
    seconds: float
    cpu_seconds: float
    phases: dict[str, float]


def run_workers(settings: Settings, now: datetime, workers: int) -> tuple[Run, list[WorkerResult]]:
    """The pipeline in ``workers`` processes at once, as Celery workers would run it: each
    ticks until nothing is due (claiming a batch, advancing and sending it, claiming the
    next); the claims keep them from taking the same enrollment. The rate is measured from
    the moment all of them start to the moment the last one finishes."""
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    ready = context.Queue()
    results = context.Queue()
    processes = [
        context.Process(target=_worker, args=(settings, now, start, ready, results))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=60)  # imports and connections are not part of the measurement
    started = time.perf_counter()
    start.set()
    done: list[WorkerResult] = [results.get(timeout=600) for _ in processes]
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join()
    cpu = sum(w.cpu_seconds for w in done)
    return Run(sum(w.sent for w in done), elapsed, cpu), done


def _worker(
    settings: Settings,
    now: datetime,
    start: Any,
    ready: Any,
    results: Any,
) -> None:
    rt = build_runtime(settings)
    try:
        rt.load_program(datetime.now(UTC))
        phases = instrument()
        ready.put(True)
        start.wait()
        started, cpu = time.perf_counter(), time.process_time()
        sent = 0
        while True:
            report = ticks.tick(rt, now)
            if not report.total_sent and not report.deferred and not report.finished:
                break
            sent += report.total_sent
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        phases.restore()
        results.put(WorkerResult(sent, elapsed, cpu, dict(phases.seconds)))
    finally:
        rt.close()


def print_workers(done: list[WorkerResult], n: int) -> None:
    for i, worker in enumerate(done, 1):
        print(
            f"  worker {i}: {worker.sent} sent in {worker.seconds:.2f} s, "
            f"CPU {worker.cpu_seconds:.2f} s ({worker.cpu_seconds / worker.seconds:.0%} busy)"
        )
    phases = Phases()
    for worker in done:
        for name, seconds in worker.phases.items():
            phases.seconds[name] += seconds
    total = sum(w.seconds for w in done)
    print("  summed over the workers:")
    print_phases(phases, total, n)


def prebuilt_messages(rt: Runtime, n: int, now: datetime) -> list[tuple[str, bytes]]:
    """(recipient, wire bytes) of N messages built by the pipeline's own compose and
    build_message, before any timing starts."""
    loaded = rt.catalog.latest(SEQUENCE_KEY)
    with rt.sessions() as session:
        leads = list(session.scalars(select(Lead).order_by(Lead.id).limit(n)))
        fields = [lead_fields(lead) for lead in leads]
    step = loaded.spec.steps[0]
    assert step.email is not None
    decision = SendEmail(
        step_id=STEP_ID,
        template=step.email.template,
        subject=step.email.subject,
        locale="en",
        next_step=None,
    )
    built = []
    for i, lead in enumerate(fields):
        pending = PendingSend(
            message_id=10_000_000 + i,
            enrollment_id=i,
            decision=decision,
            lead=lead,
            sequence_key=SEQUENCE_KEY,
            sequence_name=loaded.spec.name,
        )
        email, _ = compose_email(rt.settings, rt.renderer, pending, now)
        built.append((email.to_email, mime.serialize(mime.build_message(email))))
    return built


def run_baseline(port: int, sender: str, messages: list[tuple[str, bytes]]) -> Run:
    start, cpu = time.perf_counter(), time.process_time()
    conn = smtplib.SMTP(HOST, port)
    for to, data in messages:
        conn.sendmail(sender, [to], data)
    conn.quit()
    return Run(len(messages), time.perf_counter() - start, time.process_time() - cpu)


# -------------------------------------------------------------------------------------- Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="due enrollments (default 10000)")
    parser.add_argument(
        "--db",
        default=None,
        help="database: default a fresh SQLite file in a temporary folder; a postgresql+psycopg"
        " URL makes a fresh database next to the one it names (dropped afterwards)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="enrollments per batch (default: NURTURE_BATCH_SIZE or the settings default)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run the pipeline in this many processes at once, like Celery workers "
        "(default 1: one process, with the per-phase breakdown)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="bench-send.prof",
        default=None,
        help="also run cProfile over the pipeline phase, print the top functions and save the "
        "stats (default file bench-send.prof); slows the pipeline down",
    )
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1 and args.profile:
        parser.error("--profile works with one worker only")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    binary = find_sink()
    if binary is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="nurture-bench-") as tmp:
            return bench(args, binary, Path(tmp))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1


def bench(args: argparse.Namespace, binary: str, workdir: Path) -> int:
    sequences = workdir / "sequences"
    sequences.mkdir()
    (sequences / f"{SEQUENCE_KEY}.yaml").write_text(SEQUENCE_YAML)
    sink = Sink(binary, workdir)
    try:
        with fresh_database(args.db, workdir) as url:
            return bench_on(args, url, sequences, sink)
    finally:
        sink.stop()


def bench_on(args: argparse.Namespace, url: str, sequences: Path, sink: Sink) -> int:
    overrides: dict[str, Any] = {
        "database_url": url,
        "sequences_dir": sequences,
        "templates_dir": ROOT / "templates",
        "transport": "smtp",
        "smtp_host": HOST,
        "smtp_port": sink.port,
        "smtp_security": "none",
        "base_url": "https://nurture.example",
        "cap_max_messages": 1_000_000,  # the cap is not what is measured
    }
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    settings = load_settings(**overrides)
    rt = build_runtime(settings)
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        rt.load_program(now - timedelta(minutes=1))
        print(f"database: {rt.engine.url.render_as_string(hide_password=True)}")
        print(
            f"N = {args.n}, batch size {settings.batch_size}, workers {args.workers}, "
            f"sink {HOST}:{sink.port}"
        )
        started = time.perf_counter()
        seed(rt, args.n, now - timedelta(minutes=1))
        print(f"seeded {args.n} leads and due enrollments in {time.perf_counter() - started:.1f} s")
        return measure(args, rt, sink, now)
    finally:
        rt.close()


def measure(args: argparse.Namespace, rt: Runtime, sink: Sink, now: datetime) -> int:
    n = args.n
    profile = Path(args.profile) if args.profile else None
    before = sink.counters()[2]
    workers: list[WorkerResult] = []
    if args.workers > 1:
        (pipeline, workers), phases = run_workers(rt.settings, now, args.workers), None
    else:
        pipeline, phases = run_pipeline(rt, now, profile)
    pipeline_arrived = sink.received(before + n) - before
    print(pipeline.describe("pipeline"))
    if phases is not None:
        print_phases(phases, pipeline.seconds, pipeline.messages)
    if workers:
        print_workers(workers, pipeline.messages)
    if profile:
        print_profile(profile)

    started = time.perf_counter()
    messages = prebuilt_messages(rt, n, now)
    print(f"(built {n} baseline messages in {time.perf_counter() - started:.1f} s, untimed)")
    before = sink.counters()[2]
    baseline = run_baseline(sink.port, rt.settings.sender_email, messages)
    baseline_arrived = sink.received(before + n) - before
    print(baseline.describe("baseline"))

    ratio = pipeline.rate / baseline.rate if baseline.rate else 0.0
    print(f"ratio pipeline/baseline: {ratio:.2f} (goal >= {GOAL})")
    failures = checks(rt, n, pipeline, pipeline_arrived, baseline_arrived)
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    if not failures:
        print(f"checks: {n} arrived from the pipeline, {n} from the baseline, {n} rows sent")
    met = ratio >= GOAL
    print("goal met" if met else "goal NOT met")
    return 0 if met and not failures else 1


def checks(
    rt: Runtime, n: int, pipeline: Run, pipeline_arrived: int, baseline_arrived: int
) -> list[str]:
    failures = []
    if pipeline.messages != n:
        failures.append(f"the pipeline reported {pipeline.messages} sent, expected {n}")
    if pipeline_arrived != n:
        failures.append(f"the sink received {pipeline_arrived} pipeline messages, expected {n}")
    if baseline_arrived != n:
        failures.append(f"the sink received {baseline_arrived} baseline messages, expected {n}")
    with rt.sessions() as session:
        rows = session.execute(select(Message.status, func.count()).group_by(Message.status))
        statuses = {status: count for status, count in rows}
        still_due = session.scalar(
            select(func.count()).select_from(Enrollment).where(Enrollment.status == "active")
        )
    if statuses != {"sent": n}:
        failures.append(f"messages by status: {statuses}, expected {{'sent': {n}}}")
    if still_due:
        failures.append(f"{still_due} enrollments are still active")
    return failures


def print_profile(path: Path) -> None:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("cumulative").print_stats(30)
    print(out.getvalue())
    print(f"  (profile saved to {path}; the rate above includes cProfile's overhead)")


if __name__ == "__main__":
    sys.exit(main())
