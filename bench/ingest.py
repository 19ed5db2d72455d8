"""Ingest throughput: events/s through POST /v1/batch (batches of 100, several client threads) against a
real `lifeloop serve` process, next to a raw DB-API executemany of the same rows into the same table
(also 100 rows per transaction), on SQLite and on PostgreSQL, in the same run. The client sends
request bodies encoded before the clock starts, over one keep-alive connection per thread, so that it
takes as little as possible of the cores it shares with the server.

    python bench/ingest.py [--events 50000] [--threads 4] [--backends sqlite,postgresql]

Writes bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import psycopg
import sqlalchemy as sa

from lifeloop.config import Settings
from lifeloop.events.models import events
from lifeloop.store.engine import create_store_engine
from lifeloop.store.migrate import upgrade
from lifeloop.workspaces.service import create_source, create_workspace

RESULTS = Path(__file__).parent / "results" / "ingest.json"
PG = "postgresql://postgres@127.0.0.1:5432"
EVENT_NAMES = ["Page Viewed", "Product Viewed", "Menu Clicked", "Product Added", "Order Completed"]


def make_batches(total: int, users: int, seed: int = 1) -> list[dict]:
    """Realistic mixed traffic: anonymous browsing, identifies that merge it, tracked events with context."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    messages = []
    for i in range(total):
        person = rng.randrange(users)
        anon = f"anon-{person}"
        stamp = (start + timedelta(seconds=i * 7)).isoformat()
        context = {
            "library": {"name": "bench", "version": "1"},
            "locale": "zh-TW",
            "timezone": "Asia/Taipei",
            "ip": f"10.0.{person % 250}.{i % 250}",
            "userAgent": "Mozilla/5.0 (iPhone) LINE/14.1",
        }
        roll = rng.random()
        if roll < 0.05:
            message = {
                "type": "identify",
                "userId": f"user-{person}",
                "anonymousId": anon,
                "traits": {"email": f"p{person}@example.com", "city": "Taipei", "name": f"Person {person}"},
            }
        elif roll < 0.35:
            message = {
                "type": "page",
                "anonymousId": anon,
                "name": "Product",
                "category": "product",
                "properties": {"path": f"/p/{i % 300}", "referrer": "https://line.me"},
            }
        else:
            message = {
                "type": "track",
                "userId": f"user-{person}" if person % 3 else None,
                "anonymousId": anon,
                "event": rng.choice(EVENT_NAMES),
                "properties": {"sku": f"TEA-{i % 40:02}", "price": 380 + i % 5 * 20, "currency": "TWD"},
            }
        message.update({"messageId": f"bench-{i}", "timestamp": stamp, "context": context})
        messages.append(message)
    return [{"batch": messages[i : i + 100]} for i in range(0, total, 100)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(url: str) -> str:
    engine = create_store_engine(Settings(database_url=url), poolclass=sa.NullPool)
    upgrade(engine)
    with engine.begin() as conn:
        ws = create_workspace(conn, slug="bench")
        _source, key = create_source(conn, ws.id, name="bench")
    engine.dispose()
    return key


def fresh_database(backend: str, tag: str, tmp: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp / f'{tag}.db'}"
    name = f"lifeloop_bench_{tag}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG}/{name}"


def drop_database(url: str) -> None:
    if url.startswith("postgresql"):
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def unresolved(url: str) -> int:
    engine = create_store_engine(Settings(database_url=url), poolclass=sa.NullPool)
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(events.c.profile_id.is_(None))
        count = conn.execute(query.execution_options(cross_workspace=True)).scalar_one()
    engine.dispose()
    return int(count)


def run_ingest(url: str, batches: list[dict], threads: int, resolver: str) -> tuple[float, float]:
    """(events/s acknowledged as committed, events/s placed on profiles by the resolver).

    ``resolver`` "server": the API process resolves in a thread (the embedded default);
    "worker": a separate `lifeloop worker` process does, as in production; "none": nobody does
    (a diagnostic: the HTTP path alone, "all resolved" is then not measured).
    """
    key = prepare(url)
    port = free_port()
    env = {
        **os.environ,
        "LIFELOOP_DATABASE_URL": url,
        "LIFELOOP_LOG_LEVEL": "warning",
        "LIFELOOP_RESOLVE_IN_SERVER": str(resolver == "server").lower(),
        "LIFELOOP_SECRET_KEY": os.environ.get("LIFELOOP_SECRET_KEY", "bench-secret-key-of-at-least-32-chars"),
    }
    # PostgreSQL takes several API processes (as in production); SQLite has one writer, so one process.
    processes = "1" if url.startswith("sqlite") else "2"
    server = subprocess.Popen(
        [sys.executable, "-m", "lifeloop.cli", "serve", "--port", str(port), "--workers", processes], env=env
    )
    worker = (
        subprocess.Popen([sys.executable, "-m", "lifeloop.cli", "worker"], env=env, stderr=subprocess.DEVNULL)
        if resolver == "worker"
        else None
    )
    base = f"http://127.0.0.1:{port}"
    connections: list[http.client.HTTPConnection] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
        # The client must be cheap: it shares the 2 cores with the server. Bodies are encoded before the
        # clock starts and sent over one keep-alive connection per thread with plain http.client.
        bodies = [orjson.dumps(b) for b in batches]
        auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        connections += [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(threads)]
        for connection in connections:
            connection.connect()

        def send(thread: int) -> int:
            connection, accepted = connections[thread], 0
            for body in bodies[thread::threads]:
                connection.request(
                    "POST",
                    "/v1/batch",
                    body,
                    {"Content-Type": "application/json", "Authorization": auth},
                )
                response = connection.getresponse()
                payload = response.read()
                if response.status != 200:
                    raise RuntimeError(f"/v1/batch answered {response.status}: {payload[:200]!r}")
                accepted += orjson.loads(payload)["accepted"]
            return accepted

        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            accepted = sum(pool.map(send, range(threads)))
        elapsed = time.perf_counter() - started
        assert accepted == sum(len(b["batch"]) for b in batches), accepted
        if resolver == "none":
            return accepted / elapsed, float("nan")
        while unresolved(url):
            time.sleep(0.05)
        resolved_elapsed = time.perf_counter() - started
        return accepted / elapsed, accepted / resolved_elapsed
    finally:
        for connection in connections:
            connection.close()
        for process in (server, worker):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)


def stored_rows(url: str) -> list[dict]:
    engine = create_store_engine(Settings(database_url=url), poolclass=sa.NullPool)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(events).order_by(events.c.id))]
    engine.dispose()
    return rows


def run_raw(url: str, rows: list[dict]) -> float:
    """The same rows inserted by DB-API executemany, 100 per transaction: the ceiling for ingest."""
    prepare(url)  # same schema, indexes and workspace
    columns = [c.name for c in events.c if c.name != "id"]
    json_columns = {"properties", "traits", "context", "integrations", "extra"}

    def value(row: dict, column: str, sqlite_mode: bool) -> object:
        v = row[column]
        if column in json_columns and v is not None:
            return orjson.dumps(v).decode()
        if isinstance(v, datetime) and sqlite_mode:
            return v.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
        return v

    if url.startswith("sqlite"):
        params = [tuple(value(r, c, True) for c in columns) for r in rows]
        conn = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        sql = f"INSERT INTO events ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        started = time.perf_counter()
        for i in range(0, len(params), 100):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, params[i : i + 100])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        conn.close()
    else:
        params = [tuple(value(r, c, False) for c in columns) for r in rows]
        placeholders = ", ".join("%s::jsonb" if c in json_columns else "%s" for c in columns)
        quoted = ", ".join(f'"{c}"' for c in columns)
        sql = f"INSERT INTO events ({quoted}) VALUES ({placeholders})"
        with psycopg.connect(url) as conn:
            started = time.perf_counter()
            for i in range(0, len(params), 100):
                with conn.transaction(), conn.cursor() as cursor:
                    cursor.executemany(sql, params[i : i + 100])
            elapsed = time.perf_counter() - started
    return len(rows) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--resolvers", default="server,worker", help="where identities are resolved")
    args = parser.parse_args()
    batches = make_batches(args.events, args.users)
    results = {
        "events": args.events,
        "users": args.users,
        "batch_size": 100,
        "client_threads": args.threads,
        "cpu_count": os.cpu_count(),
        "backends": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            raw_rate = 0.0
            figures: dict[str, dict[str, float]] = {}
            for resolver in args.resolvers.split(","):
                ingest_url = fresh_database(backend, f"ingest_{resolver}", Path(tmp))
                raw_url = fresh_database(backend, f"raw_{resolver}", Path(tmp))
                try:
                    ingest_rate, resolved_rate = run_ingest(ingest_url, batches, args.threads, resolver)
                    raw_rate = max(raw_rate, run_raw(raw_url, stored_rows(ingest_url)))
                finally:
                    drop_database(ingest_url)
                    drop_database(raw_url)
                figures[resolver] = {"ingest": ingest_rate, "resolved": resolved_rate}
            results["backends"][backend] = {
                "raw_executemany_rows_per_s": round(raw_rate),
                **{
                    f"resolver_in_{resolver}": {
                        "ingest_events_per_s": round(f["ingest"]),
                        "resolved_events_per_s": None if math.isnan(f["resolved"]) else round(f["resolved"]),
                        "ratio": round(f["ingest"] / raw_rate, 3),
                    }
                    for resolver, f in figures.items()
                },
            }
            for resolver, f in figures.items():
                print(
                    f"{backend:>10} (resolver in {resolver}): ingest {f['ingest']:7.0f} events/s | "
                    f"all resolved {f['resolved']:7.0f} events/s | "
                    f"raw executemany {raw_rate:7.0f} rows/s | ratio {f['ingest'] / raw_rate:.0%}"
                )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
