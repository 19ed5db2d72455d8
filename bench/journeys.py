"""Journeys: how fast the durable engine reacts, wakes parked runs and enters a scheduled segment.

(a) **Event to outbox.** A steady stream of events (``POST /v1/batch``, a few events per request, each
    from a new user) to a real ``lifeloop serve``; a published journey triggered by the event whose
    first step is a LINE send. Latency from the 200 of the request to the message in the outbox: the
    outbox row's ``created_at`` (when it was written) and the moment a poller of the outbox first sees
    it (committed), both minus the moment the 200 arrived. SQLite: one API process with the resolver in
    it (the embedded default). PostgreSQL: two API processes with ``LIFELOOP_RESOLVE_IN_SERVER=false``
    and a ``lifeloop worker`` process (production), deliveries off (nothing is delivered).
(b) **Wake-ups.** PostgreSQL, N runs parked in a 1-day wait of a published journey (``wait`` → ``send``
    → ``wait``), of which ``--due`` are due; two worker processes (``run_journey_worker``) advance them.
    Each wake-up ends the wait, queues the send and parks in the next wait: two logged steps, one
    outbox row, two own events. The parked runs are written straight into ``journey_runs`` with COPY
    (set-up, not timed); only the due ones have profiles (bulk-loaded as well).
(c) **Schedule entry.** A segment of N members (profiles and ``segment_members`` bulk-loaded) entered
    by a schedule-triggered journey: ``scheduler.tick`` at the fire time, timed until every run exists.

    python bench/journeys.py [--parts a,b,c] [--rate 500] [--seconds 30] [--backends sqlite,postgresql]
                             [--parked 100000] [--due 50000] [--size 100000]
    python bench/journeys.py --parts b --parked 100000,1000000     # the big runs
    python bench/journeys.py --parts c --size 1000000

Writes bench/results/journeys.json (parts not run keep their previous figures).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import sqlalchemy as sa

from lifeloop.config import Settings
from lifeloop.journeys import scheduler, service
from lifeloop.journeys.models import journey_runs, journey_steps, journeys
from lifeloop.messaging.models import outbox
from lifeloop.messaging.templates.service import create_template
from lifeloop.profiles.models import profiles
from lifeloop.store.engine import create_store_engine
from lifeloop.store.migrate import upgrade
from lifeloop.workspaces.service import create_source, create_workspace

RESULTS = Path(__file__).parent / "results" / "journeys.json"
PG = "postgresql://postgres@127.0.0.1:5432"

WELCOME = """
key: welcome
name: {zh-CN: 欢迎, en: Welcome}
trigger: {kind: event, event: Signed Up}
steps:
  - {key: hello, type: send, channel: line, template: welcome}
"""

NURTURE = """
key: nurture
name: {zh-CN: 培育, en: Nurture}
trigger: {kind: event, event: Nurture Requested}
steps:
  - {key: rest, type: wait, duration: 1d}
  - {key: nudge, type: send, channel: line, template: nudge}
  - {key: rest_again, type: wait, duration: 30d}
"""

MONTHLY = """
key: monthly
name: {zh-CN: 月刊, en: Monthly}
trigger: {kind: schedule, cron: "0 9 1 * *", segment: everyone}
steps:
  - {key: letter, type: send, channel: line, template: letter}
"""


# --- databases -----------------------------------------------------------------------------------
def fresh_database(backend: str, tag: str, tmp: Path) -> str:
    if backend == "sqlite":
        path = tmp / f"{tag}.db"
        for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)  # an earlier size's store
        return f"sqlite:///{path}"
    name = f"lifeloop_bench_{tag}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG}/{name}"


def drop_database(url: str) -> None:
    if url.startswith("postgresql"):
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def open_engine(url: str) -> sa.Engine:
    return create_store_engine(Settings(database_url=url), poolclass=sa.NullPool)


def prepare(url: str, definition: str, templates: list[str], segment: str | None = None) -> tuple[int, str]:
    """Migrate, create the brand, its LINE templates (and segment) and publish the journey."""
    engine = open_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        ws = create_workspace(conn, slug="bench", timezone="Asia/Taipei").id
        _source, key = create_source(conn, ws, name="bench")
        for template in templates:
            create_template(
                conn,
                ws,
                key=template,
                channel="line",
                variants={"en": {"text": f"{template} {{{{ event.plan }}}}"}},
            )
        if segment is not None:
            from lifeloop.audience.definitions import create_segment

            create_segment(conn, ws, segment, None, 'count("Signed Up") >= 1')
        journey = service.save_draft(conn, ws, definition)
        service.publish(conn, ws, journey.key)
    engine.dispose()
    return ws, key


def _stamp(moment: datetime, sqlite_mode: bool) -> str:
    moment = moment.astimezone(UTC)
    return (
        moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        if sqlite_mode
        else moment.isoformat()
    )


def copy_rows(url: str, table: str, columns: list[str], rows: Any) -> None:
    """Bulk-load rows (tuples of text or None): COPY on PostgreSQL, executemany on SQLite."""
    if url.startswith("sqlite"):
        raw = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None)
        raw.execute("BEGIN")
        marks = ", ".join("?" * len(columns))
        raw.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        raw.execute("COMMIT")
        raw.execute("ANALYZE")
        raw.close()
        return
    with psycopg.connect(url) as conn:
        with conn.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        if "id" in columns:
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
            )
        conn.commit()
        conn.autocommit = True
        conn.execute(f"ANALYZE {table}")


def bulk_profiles(url: str, ws: int, count: int, first_id: int = 1) -> list[int]:
    """``count`` profiles with user ids ``u<id>`` (and their user-id identities)."""
    sqlite_mode = url.startswith("sqlite")
    at = _stamp(datetime.now(UTC) - timedelta(days=30), sqlite_mode)
    ids = list(range(first_id, first_id + count))
    copy_rows(
        url,
        "profiles",
        ["id", "workspace_id", "user_id", "traits", "first_seen", "last_seen", "created_at", "updated_at"],
        ((str(i), str(ws), f"u{i}", "{}", at, at, at, at) for i in ids),
    )
    copy_rows(
        url,
        "identities",
        ["workspace_id", "kind", "value", "profile_id", "created_at"],
        ((str(ws), "user_id", f"u{i}", str(i), at) for i in ids),
    )
    return ids


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- (a) event to outbox -------------------------------------------------------------------------
def wait_healthy(base: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.1)


class OutboxPoller(threading.Thread):
    """Notes the moment each outbox row is first visible (committed), polling every ``every`` seconds."""

    def __init__(self, url: str, every: float = 0.005):
        super().__init__(daemon=True)
        self.url, self.every = url, every
        self.seen: dict[int, float] = {}  # outbox id -> time.time() first seen
        self.stop = threading.Event()

    def run(self) -> None:
        engine = open_engine(self.url)
        last = 0
        query = sa.text("SELECT id FROM outbox WHERE id > :last ORDER BY id")
        with engine.connect() as conn:
            while not self.stop.is_set():
                ids = list(conn.execute(query, {"last": last}).scalars())
                conn.rollback()  # a fresh snapshot next time
                moment = time.time()
                for i in ids:
                    self.seen[i] = moment
                if ids:
                    last = ids[-1]
                time.sleep(self.every)
        engine.dispose()


def run_latency(
    url: str, backend: str, rate: int, seconds: float, per_request: int, idle: float
) -> dict[str, Any]:
    _ws, key = prepare(url, WELCOME, ["welcome"])
    port = free_port()
    production = backend == "postgresql"
    env = {
        **os.environ,
        "LIFELOOP_DATABASE_URL": url,
        "LIFELOOP_LOG_LEVEL": "warning",
        "LIFELOOP_RESOLVE_IN_SERVER": str(not production).lower(),
        "LIFELOOP_SECRET_KEY": os.environ.get("LIFELOOP_SECRET_KEY", "bench-secret-key-of-at-least-32-chars"),
    }
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lifeloop.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                "2" if production else "1",
            ],
            env=env,
        )
    ]
    if production:
        processes.append(
            subprocess.Popen(
                [
                    sys.executable, "-m", "lifeloop.cli", "worker", "--no-deliveries",
                    "--analytics-seconds", "0", "--idle-seconds", str(idle),
                ],
                env=env,
                stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    poller = OutboxPoller(url)
    total = int(rate * seconds)
    acked: dict[int, float] = {}  # event number -> time.time() of its 200
    late = 0
    try:
        wait_healthy(base)
        poller.start()
        auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        stamp = datetime.now(UTC).isoformat()
        bodies = [
            orjson.dumps(
                {
                    "batch": [
                        {
                            "type": "track",
                            "userId": f"user-{i}",
                            "event": "Signed Up",
                            "properties": {"plan": "tea"},
                            "messageId": f"signup-{i}",
                            "timestamp": stamp,
                        }
                        for i in range(start, min(start + per_request, total))
                    ]
                }
            )
            for start in range(0, total, per_request)
        ]
        interval = per_request / rate
        started = time.perf_counter()
        for n, body in enumerate(bodies):
            due = started + n * interval
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            elif pause < -interval:
                late += 1
            connection.request(
                "POST", "/v1/batch", body, {"Content-Type": "application/json", "Authorization": auth}
            )
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise RuntimeError(f"/v1/batch answered {response.status}: {payload[:200]!r}")
            moment = time.time()
            for i in range(n * per_request, min((n + 1) * per_request, total)):
                acked[i] = moment
        sent_for = time.perf_counter() - started
        connection.close()
        engine = open_engine(url)
        deadline = time.monotonic() + 120
        while True:
            with engine.connect() as conn:
                queued = conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one()
            if queued >= total or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        time.sleep(0.1)
    finally:
        poller.stop.set()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(outbox.c.id, outbox.c.created_at, profiles.c.user_id).join(
                profiles, profiles.c.id == outbox.c.profile_id
            )
        ).all()
    engine.dispose()
    written, visible = [], []
    for row in rows:
        i = int(row.user_id.removeprefix("user-"))
        written.append((row.created_at.timestamp() - acked[i]) * 1000)
        if row.id in poller.seen:
            visible.append((poller.seen[row.id] - acked[i]) * 1000)
    figure = {
        "events": total,
        "events_per_request": per_request,
        "target_events_per_s": rate,
        "achieved_events_per_s": round(total / sent_for),
        "requests_sent_late": late,
        "messages_queued": len(rows),
        "deployment": (
            "2 API processes (LIFELOOP_RESOLVE_IN_SERVER=false) + 1 `lifeloop worker` process "
            f"(--no-deliveries, --idle-seconds {idle})"
            if production
            else "1 API process, resolver in the server (embedded default)"
        ),
    }
    for name, values in (("written", written), ("visible", visible)):
        figure[f"{name}_ms"] = {
            "p50": round(percentile(values, 50), 1),
            "p90": round(percentile(values, 90), 1),
            "p99": round(percentile(values, 99), 1),
            "max": round(max(values), 1),
        }
    return figure


# --- (b) wake-ups --------------------------------------------------------------------------------
WORKER = """
import signal, sys, threading
from lifeloop.config import Settings
from lifeloop.journeys.worker import run_journey_worker
from lifeloop.store.engine import create_store_engine
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
engine = create_store_engine(Settings(database_url=sys.argv[1]))
run_journey_worker(engine, stop_event=stop, batch_size=int(sys.argv[2]), tick_seconds=3600)
"""


def run_wakeups(url: str, parked: int, due: int, workers: int, batch: int) -> dict[str, Any]:
    ws, _key = prepare(url, NURTURE, ["nudge"])
    engine = open_engine(url)
    with engine.connect() as conn:
        journey_id = conn.execute(sa.select(journeys.c.id).where(journeys.c.key == "nurture")).scalar_one()
    engine.dispose()
    loaded = time.perf_counter()
    pids = bulk_profiles(url, ws, due)
    now = datetime.now(UTC)
    past, future = _stamp(now - timedelta(minutes=1), False), _stamp(now + timedelta(days=1), False)
    entered = _stamp(now - timedelta(days=1), False)
    trigger = '{"event": "Nurture Requested", "properties": {"plan": "tea"}}'

    def rows() -> Any:
        for i in range(parked):
            # The due runs are on real profiles; the others on ids no profile has (they are never read).
            pid = pids[i] if i < due else 10_000_000 + i
            yield (
                str(ws), str(journey_id), "1", str(pid), "bench", "waiting", "rest",
                past if i < due else future, "t", None, "0", trigger, entered, entered,
            )  # fmt: skip

    copy_rows(
        url,
        "journey_runs",
        [
            "workspace_id", "journey_id", "version", "profile_id", "entry_key", "status", "step", "due_at",
            "in_wait", "wait_event", "steps_done", '"trigger"', "entered_at", "updated_at",
        ],
        rows(),
    )  # fmt: skip
    setup = time.perf_counter() - loaded
    engine = open_engine(url)
    remaining_query = (
        sa.select(sa.func.count())
        .select_from(journey_runs)
        .where(journey_runs.c.status == "waiting", journey_runs.c.due_at <= now)
    )
    env = {**os.environ, "LIFELOOP_LOG_LEVEL": "warning"}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, url, str(batch)], env=env) for _ in range(workers)
    ]
    samples: list[tuple[float, int]] = []
    try:
        started = time.perf_counter()
        while True:
            with engine.connect() as conn:
                remaining = conn.execute(remaining_query).scalar_one()
            samples.append((time.perf_counter(), remaining))
            if remaining == 0:
                break
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a journey worker exited early")
            if time.perf_counter() - started > 1800:
                raise RuntimeError("wake-ups did not finish in 30 minutes")
            time.sleep(0.1)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=60)
    first = next(i for i, (_t, r) in enumerate(samples) if r < due)
    t0, r0 = samples[first - 1] if first else samples[0]
    span = samples[-1][0] - t0
    with engine.connect() as conn:
        steps = conn.execute(sa.select(sa.func.count()).select_from(journey_steps)).scalar_one()
        queued = conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one()
        parked_after = conn.execute(
            sa.select(sa.func.count())
            .select_from(journey_runs)
            .where(journey_runs.c.status == "waiting", journey_runs.c.step == "rest_again")
        ).scalar_one()
    engine.dispose()
    assert queued == due and parked_after == due, (queued, parked_after)
    return {
        "parked": parked,
        "due": due,
        "workers": workers,
        "batch_size": batch,
        "setup_s": round(setup, 1),
        "wakeups_per_s": round(r0 / span),
        "steps_per_s": round(steps * r0 / due / span),
        "steps_logged": steps,
        "messages_queued": queued,
        "ms_per_wakeup_per_worker": round(span * workers / r0 * 1000, 3),
        "wall_s": round(samples[-1][0] - started, 1),
    }


# --- (c) schedule entry --------------------------------------------------------------------------
def run_schedule(url: str, size: int) -> dict[str, Any]:
    ws, _key = prepare(url, MONTHLY, ["letter"], segment="everyone")
    loaded = time.perf_counter()
    pids = bulk_profiles(url, ws, size)
    engine = open_engine(url)
    with engine.connect() as conn:
        segment_id = conn.execute(sa.text("SELECT id FROM segments WHERE key = 'everyone'")).scalar_one()
        fire = conn.execute(
            sa.select(journeys.c.next_schedule_at).where(journeys.c.key == "monthly")
        ).scalar_one()
    at = _stamp(datetime.now(UTC), url.startswith("sqlite"))
    copy_rows(
        url,
        "segment_members",
        ["workspace_id", "segment_id", "profile_id", "entered_at"],
        ((str(ws), str(segment_id), str(p), at) for p in pids),
    )
    setup = time.perf_counter() - loaded
    started = time.perf_counter()
    entered = scheduler.tick(engine, now=fire)
    elapsed = time.perf_counter() - started
    with engine.connect() as conn:
        runs = conn.execute(sa.select(sa.func.count()).select_from(journey_runs)).scalar_one()
    engine.dispose()
    assert entered == runs == size, (entered, runs)
    return {
        "members": size,
        "setup_s": round(setup, 1),
        "entry_s": round(elapsed, 2),
        "runs_per_s": round(size / elapsed),
    }


# --- main ----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="a,b,c")
    parser.add_argument("--backends", default="sqlite,postgresql", help="for (a) and (c); (b) is PostgreSQL")
    parser.add_argument("--rate", type=int, default=500, help="(a) events per second")
    parser.add_argument("--seconds", type=float, default=30, help="(a) how long the stream lasts")
    parser.add_argument("--per-request", type=int, default=5, help="(a) events per /v1/batch request")
    parser.add_argument("--idle-seconds", type=float, default=0.02, help="(a) the worker's poll pause")
    parser.add_argument("--parked", default="100000", help="(b) runs parked, comma-separated sizes")
    parser.add_argument("--due", type=int, default=50_000, help="(b) of which due")
    parser.add_argument("--workers", type=int, default=2, help="(b) worker processes")
    parser.add_argument("--batch", type=int, default=500, help="(b) runs claimed per batch")
    parser.add_argument("--size", default="100000", help="(c) segment members, comma-separated sizes")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    backends = args.backends.split(",")
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["cpu_count"] = os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        if "a" in parts:
            latency = results.setdefault("event_to_outbox", {})
            for backend in backends:
                url = fresh_database(backend, "journeys_latency", Path(tmp))
                try:
                    latency[backend] = run_latency(
                        url, backend, args.rate, args.seconds, args.per_request, args.idle_seconds
                    )
                finally:
                    drop_database(url)
                print("(a)", backend, json.dumps(latency[backend]))
        if "b" in parts:
            wakeups = results.setdefault("wakeups", {})
            for parked in (int(s) for s in args.parked.split(",")):
                url = fresh_database("postgresql", "journeys_wakeups", Path(tmp))
                try:
                    wakeups[str(parked)] = run_wakeups(
                        url, parked, min(args.due, parked), args.workers, args.batch
                    )
                finally:
                    drop_database(url)
                print("(b)", parked, json.dumps(wakeups[str(parked)]))
        if "c" in parts:
            entry = results.setdefault("schedule_entry", {})
            for backend in backends:
                for size in (int(s) for s in args.size.split(",")):
                    url = fresh_database(backend, "journeys_schedule", Path(tmp))
                    try:
                        entry.setdefault(backend, {})[str(size)] = run_schedule(url, size)
                    finally:
                        drop_database(url)
                    print("(c)", backend, size, json.dumps(entry[backend][str(size)]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
