"""Outbox throughput: messages/s from queued to delivered, through real delivery-worker processes
(``python -m lifeloop.messaging.delivery_worker``) to a local fake provider that de-duplicates by
Idempotency-Key, on SQLite and PostgreSQL, with 1 and 2 workers.

Two kinds of message: ``address`` (a bare webhook URL: the outbox machinery alone) and ``profile``
(a profile's message: the contact policy reads profile, consent and recent sends, and a
``Message Delivered`` event flows back into the event log). The workspace's webhook rate limit is raised
so the provider, not the token bucket, is the limit.

    python bench/outbox.py [--messages 2000] [--profiles 200] [--backends sqlite,postgresql]

Writes bench/results/outbox.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fake provider lives in tests/fakes

from tests.fakes.webhook_server import FakeWebhookServer

from lifeloop.config import Settings
from lifeloop.events.messages import parse_message
from lifeloop.events.service import ingest
from lifeloop.messaging.models import outbox
from lifeloop.messaging.outbox import enqueue
from lifeloop.messaging.service import update_policy
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import find_by_identity
from lifeloop.store.engine import connect, create_store_engine
from lifeloop.store.migrate import upgrade
from lifeloop.workspaces.models import SourceKey
from lifeloop.workspaces.service import create_source, create_workspace

RESULTS = Path(__file__).parent / "results" / "outbox.json"
PG = "postgresql://postgres@127.0.0.1:5432"
SECRET = "whsec_bench"


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
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def prepare(url: str, kind: str, messages: int, profiles: int, target: str) -> float:
    """Migrate, create the brand (and its profiles), queue the messages; returns enqueue messages/s."""
    engine = create_store_engine(Settings(database_url=url), poolclass=sa.NullPool)
    upgrade(engine)
    with engine.begin() as conn:
        ws = create_workspace(conn, slug="bench", timezone="Asia/Taipei")
        source, _key = create_source(conn, ws.id, name="bench")
        update_policy(conn, ws.id, {"rate_limits": {"webhook": {"per_second": 100000, "burst": 100000}}})
    pids: list[int] = []
    if kind == "profile":
        now = datetime.now(UTC)
        raws = [
            {"type": "identify", "userId": f"u{i}", "traits": {"value_tier": "vip"}} for i in range(profiles)
        ]
        ingest(engine, SourceKey(ws.id, source.id), [parse_message(r, received_at=now) for r in raws])
        resolve_pending(engine)
        with connect(engine) as conn:
            pids = [find_by_identity(conn, ws.id, "user_id", f"u{i}") for i in range(profiles)]
    started = time.perf_counter()
    for chunk in range(0, messages, 500):
        with engine.begin() as conn:
            for i in range(chunk, min(chunk + 500, messages)):
                enqueue(
                    conn,
                    ws.id,
                    channel="webhook",
                    recipient=target,
                    content={"text": f"message {i}"},
                    idempotency_key=f"bench-{i}",
                    transactional=True,
                    profile_id=pids[i % len(pids)] if pids else None,
                )
    rate = messages / (time.perf_counter() - started)
    engine.dispose()
    return rate


def delivered(url: str) -> int:
    engine = create_store_engine(Settings(database_url=url), poolclass=sa.NullPool)
    with connect(engine) as conn:
        count = conn.execute(
            sa.select(sa.func.count())
            .select_from(outbox)
            .where(outbox.c.status == "delivered")
            .execution_options(cross_workspace=True)
        ).scalar_one()
    engine.dispose()
    return int(count)


def run_workers(url: str, workers: int, messages: int, server: FakeWebhookServer) -> dict[str, float]:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lifeloop.messaging.delivery_worker",
                "--database-url",
                url,
                "--worker-id",
                f"bench-{w}",
                "--batch-size",
                "500",
                "--concurrency",
                "8",
                "--poll-interval",
                "0.05",
                "--webhook-secret",
                SECRET,
            ],
            env={**os.environ, "LIFELOOP_LOG_LEVEL": "warning"},
        )
        for w in range(workers)
    ]
    started = time.perf_counter()
    try:
        while delivered(url) < messages:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a delivery worker exited early")
            time.sleep(0.05)
        wall = time.perf_counter() - started
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    stamps = sorted(r.at for r in server.received)
    provider_span = stamps[-1] - stamps[0] if len(stamps) > 1 else wall
    duplicates = sum(n - 1 for n in server.acceptances_per_key().values())
    return {
        "messages_per_s": round(messages / provider_span),  # first to last request: worker start-up excluded
        "messages_per_s_wall": round(messages / wall),  # including starting the worker processes
        "accepted_twice": duplicates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--profiles", type=int, default=200)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    results: dict = {
        "messages": args.messages,
        "profiles": args.profiles,
        "batch_size": 500,
        "concurrency_per_worker": 8,
        "cpu_count": os.cpu_count(),
        "backends": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            figures: dict = {}
            for kind in ("address", "profile"):
                for workers in (int(w) for w in args.workers.split(",")):
                    url = fresh_database(backend, f"outbox_{kind}_{workers}", Path(tmp))
                    try:
                        with FakeWebhookServer(SECRET) as server:
                            enqueue_rate = prepare(url, kind, args.messages, args.profiles, server.url)
                            figure = run_workers(url, workers, args.messages, server)
                    finally:
                        drop_database(url)
                    figures[f"{kind}_{workers}_worker{'s' if workers > 1 else ''}"] = {
                        "enqueue_messages_per_s": round(enqueue_rate),
                        **figure,
                    }
                    print(
                        backend,
                        kind,
                        workers,
                        figures[f"{kind}_{workers}_worker{'s' if workers > 1 else ''}"],
                    )
            results["backends"][backend] = figures
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
