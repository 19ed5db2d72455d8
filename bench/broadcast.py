"""A LINE broadcast to 100 000 friends with the contact policy applied: seconds from the REST call that
schedules it to the last multicast at the LINE imitation, through two running ``lifeloop worker``
processes, and where the workers' time goes (policy reads, outbox writes, HTTP), from their per-batch
debug log.

    python bench/broadcast.py [--friends 100000] [--backends postgresql,sqlite] [--workers 2]

Writes bench/results/broadcast.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the LINE imitation lives in tests/fakes
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.conftest import TEST_SECRET_KEY
from tests.fakes.line import FakeLine

from outbox import drop_database, fresh_database

os.environ.setdefault("LIFELOOP_SECRET_KEY", TEST_SECRET_KEY)

from lifeloop.config import Settings
from lifeloop.events.messages import parse_message
from lifeloop.events.service import ingest
from lifeloop.messaging.channels.config import save_config
from lifeloop.messaging.service import update_policy
from lifeloop.messaging.templates.service import create_template
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.store.engine import create_store_engine
from lifeloop.store.migrate import upgrade
from lifeloop.workspaces.models import SourceKey
from lifeloop.workspaces.service import create_api_token, create_source, create_workspace

RESULTS = Path(__file__).parent / "results" / "broadcast.json"
BATCH = re.compile(
    r"batch of (\d+): claim (\d+) ms, policy reads (\d+) ms, decide and record (\d+) ms, "
    r"provider (\d+) ms, settle (\d+) ms"
)


def prepare(url: str, friends: int, line: FakeLine) -> tuple[str, float]:
    """A brand with ``friends`` LINE friends, a template and the channel; its admin token."""
    engine = create_store_engine(Settings(database_url=url), poolclass=sa.NullPool)
    upgrade(engine)
    with engine.begin() as conn:
        ws = create_workspace(conn, slug="bench", timezone="Asia/Taipei")
        source, _key = create_source(conn, ws.id, name="bench")
        _row, token = create_api_token(conn, ws.id, name="bench")
        save_config(
            conn,
            ws.id,
            channel="line",
            settings={"base_url": line.url},
            credentials={"channel_access_token": "tok", "channel_secret": "s" * 32},
        )
        # The time of day the bench runs at must not defer anyone: no quiet hours.
        update_policy(conn, ws.id, {"quiet_hours_start": "00:00", "quiet_hours_end": "00:00"})
        create_template(
            conn,
            ws.id,
            key="sale",
            channel="line",
            default_locale="zh-TW",
            variants={"zh-TW": {"text": "年終特賣 開始了"}},
        )
    started = time.perf_counter()
    now = datetime.now(UTC)
    for start in range(0, friends, 5000):
        raws = [
            {
                "type": "identify",
                "userId": f"f{i}",
                "messageId": f"f{i}",
                "traits": {"line_user_id": f"U{i:032x}", "value_tier": "regular"},
            }
            for i in range(start, min(start + 5000, friends))
        ]
        ingest(engine, SourceKey(ws.id, source.id), [parse_message(r, received_at=now) for r in raws])
    resolve_pending(engine)
    engine.dispose()
    return token, time.perf_counter() - started


def run(url: str, friends: int, workers: int, logs: Path) -> dict:
    from fastapi.testclient import TestClient

    from lifeloop.web.app import create_app

    with FakeLine(token="tok") as line:
        token, setup_s = prepare(url, friends, line)
        env = {
            **os.environ,
            "LIFELOOP_DATABASE_URL": url,
            "LIFELOOP_LOG_LEVEL": "debug",
            "LIFELOOP_ANALYTICS_PATH": str(logs / "analytics.duckdb"),
        }
        command = [
            sys.executable,
            "-m",
            "lifeloop.cli",
            "worker",
            "--no-journeys",
            "--analytics-seconds",
            "0",
            "--idle-seconds",
            "0.05",
        ]
        files = [(logs / f"worker{w}.log").open("w") for w in range(workers)]
        procs = [subprocess.Popen(command, env=env, stdout=f, stderr=f) for f in files]
        try:
            time.sleep(3)  # the workers are up and idle, as in production
            app = create_app(Settings(database_url=url))
            h = {"Authorization": f"Bearer {token}"}
            definition = {
                "audience": {"condition": 'trait.line_user_id != ""'},
                "channels": [{"channel": "line", "template": "sale"}],
            }
            with TestClient(app) as client:
                created = client.post(
                    "/api/v1/broadcasts",
                    json={"key": "yearend", "name": "Year-end", "definition": definition},
                    headers=h,
                )
                assert created.status_code == 201, created.text
                started = time.perf_counter()
                scheduled = client.post("/api/v1/broadcasts/yearend/schedule", headers=h)
                assert scheduled.status_code == 200, scheduled.text
                while len(line.delivered) < friends:
                    if any(p.poll() is not None for p in procs):
                        raise RuntimeError("a worker exited early")
                    if time.perf_counter() - started > 900:
                        raise RuntimeError(f"only {len(line.delivered)} delivered after 900 s")
                    time.sleep(0.02)
                elapsed = time.perf_counter() - started
                stats = client.get("/api/v1/broadcasts/yearend/stats", headers=h).json()
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)
            for f in files:
                f.close()
        multicasts = line.calls("/v2/bot/message/multicast")
    spans = [0.0] * 5
    batches = 0
    for w in range(workers):
        for match in BATCH.finditer((logs / f"worker{w}.log").read_text()):
            batches += 1
            for i in range(5):
                spans[i] += int(match.group(i + 2)) / 1e3
    claim, policy, record, provider, settle = spans
    total = sum(spans) or 1.0
    return {
        "friends": friends,
        "workers": workers,
        "setup_seconds": round(setup_s, 1),
        "api_call_to_last_request_s": round(elapsed, 1),
        "recipients_per_s": round(friends / elapsed),
        "multicast_requests": len(multicasts),
        "largest_request": max(len(r.json["to"]) for r in multicasts),
        "received_twice": len(line.delivered) - len({u for u, _ in line.delivered}),
        "sent_in_stats": stats.get("sent"),
        "delivery_batches": batches,
        "worker_seconds": {
            "claim": round(claim, 1),
            "policy_reads": round(policy, 1),
            "decide_and_record": round(record, 1),
            "http": round(provider, 1),
            "settle": round(settle, 1),
        },
        "share": {
            "policy_reads": round(policy / total, 3),
            "outbox_writes": round((claim + record + settle) / total, 3),
            "http": round(provider / total, 3),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--friends", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backends", default="postgresql")
    args = parser.parse_args()
    results: dict = {"cpu_count": os.cpu_count(), "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            url = fresh_database(backend, "broadcast", Path(tmp))
            try:
                figure = run(url, args.friends, args.workers, Path(tmp))
            finally:
                drop_database(url)
            results["backends"][backend] = figure
            print(backend, json.dumps(figure))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
