"""The analytical store: one DuckDB file holding a flattened copy of the event log.

Tables (all keyed by ``workspace_id``):

- ``events``       one row per resolved event, with the fields metrics need pulled out of the JSON
                   (``revenue``, ``channel``, ``stage``…; see ``lifeloop.analytics.sync`` for the rules);
- ``profile_map``  profile id → canonical (surviving) profile id, so merges after a sync need no rewrite;
- ``sync_state``   per workspace and stream, the id cursor / time watermark of the last committed chunk;
- ``channel_costs`` acquisition cost per channel and day (for channel ROI);
- ``rfm_scores``   the last RFM scoring (see ``lifeloop.analytics.rfm``);
- ``profile_days``, ``profile_summary``, ``cohort_counts``, ``rollup_state``: per-profile rollups the sync
  keeps current with the events (see ``lifeloop.analytics.rollups``);
- ``state_*``: a copy of the stored stages, recheck times, tags, memberships and merges, for the batch
  recompute (see ``lifeloop.analytics.state_copy``).

Opening a store written by an older schema version adds the missing tables and rebuilds the rollups from
its events (version 1 → 2: the rollups; 2 → 3: the state copy, empty until the next sync; 3 → 4: the
per-profile activity, built from the events).

DuckDB allows one writing process per file. Connections are opened per operation and closed quickly;
opening retries while another process holds the lock (e.g. ``lifeloop worker`` syncing while the API reads).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from lifeloop.analytics import rollups, state_copy
from lifeloop.errors import LifeloopError

SCHEMA_VERSION = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id BIGINT PRIMARY KEY,
    workspace_id BIGINT NOT NULL,
    profile_id BIGINT NOT NULL,
    type VARCHAR NOT NULL,
    event VARCHAR,
    name VARCHAR,
    category VARCHAR,
    ts TIMESTAMP NOT NULL,
    day DATE NOT NULL,
    interactive BOOLEAN NOT NULL,
    revenue DOUBLE,
    channel VARCHAR,
    stage VARCHAR,
    previous_stage VARCHAR,
    lifecycle_model VARCHAR,
    journey_id VARCHAR,
    journey_group VARCHAR,
    segment VARCHAR,
    properties VARCHAR
);
CREATE TABLE IF NOT EXISTS profile_map (
    workspace_id BIGINT NOT NULL,
    profile_id BIGINT NOT NULL,
    canonical_id BIGINT NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (workspace_id, profile_id)
);
CREATE TABLE IF NOT EXISTS sync_state (
    workspace_id BIGINT NOT NULL,
    stream VARCHAR NOT NULL,
    cursor BIGINT,
    watermark TIMESTAMP,
    synced_at TIMESTAMP NOT NULL,
    PRIMARY KEY (workspace_id, stream)
);
CREATE TABLE IF NOT EXISTS channel_costs (
    workspace_id BIGINT NOT NULL,
    channel VARCHAR NOT NULL,
    day DATE NOT NULL,
    cost DOUBLE NOT NULL,
    PRIMARY KEY (workspace_id, channel, day)
);
CREATE TABLE IF NOT EXISTS rfm_scores (
    workspace_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    as_of TIMESTAMP NOT NULL,
    first_seen TIMESTAMP,
    orders BIGINT NOT NULL,
    monetary DOUBLE NOT NULL,
    first_order TIMESTAMP,
    last_order TIMESTAMP,
    recency_days BIGINT,
    r INTEGER,
    f INTEGER,
    m INTEGER,
    layer VARCHAR NOT NULL,
    rfm_segment VARCHAR,
    rf_segment VARCHAR,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
"""


_schema_lock = threading.Lock()


class AnalyticsStoreBusy(LifeloopError):
    status = 503
    code = "analytics_store_busy"


def default_path() -> Path:
    """``LIFELOOP_ANALYTICS_PATH`` or ``./var/analytics.duckdb`` (next to the default SQLite file)."""
    return Path(os.environ.get("LIFELOOP_ANALYTICS_PATH") or "./var/analytics.duckdb")


def store_state(path: str | Path) -> tuple[int, ...] | None:
    """What changes whenever a write to the store at ``path`` lands: the identity, size and modification
    time of its file and of its write-ahead log (a commit may reach only the log until a checkpoint).
    None while there is no file. Results computed from one state stay right as long as it lasts."""
    state: list[int] = []
    for file in (Path(path), Path(f"{path}.wal")):
        try:
            stat = file.stat()
        except FileNotFoundError:
            if not state:
                return None
            state += [0, 0, 0]
            continue
        state += [stat.st_ino, stat.st_size, stat.st_mtime_ns]
    return tuple(state)


def open_store(path: str | Path, *, timeout: float = 30.0) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the store at ``path`` with its schema in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path))
            break
        except duckdb.IOException as error:  # another process holds the file lock
            if "lock" not in str(error).lower() or time.monotonic() > deadline:
                raise AnalyticsStoreBusy(
                    f"the analytics store {path} is in use by another process"
                ) from error
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    # No query relies on the physical row order (results that need one say ORDER BY); without it DuckDB's
    # windows, sorts and large result sets run without re-establishing the scan order.
    con.execute("SET preserve_insertion_order = false")
    # Create the schema only when missing: the DDL and the version row are writes, which concurrent readers
    # (API requests) should not all repeat. (A deleted and recreated file gets its schema back here too.)
    found = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'store_meta'").fetchall()
    if not found[0][0]:
        with _schema_lock:
            con.execute(SCHEMA + rollups.SCHEMA + state_copy.SCHEMA)
            con.execute(
                "INSERT INTO store_meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
                [str(SCHEMA_VERSION)],
            )
    elif _version(con) < SCHEMA_VERSION:
        with _schema_lock:
            _upgrade(con)
    return con


def _version(con: duckdb.DuckDBPyConnection) -> int:
    rows = con.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchall()
    return int(rows[0][0]) if rows else 0


def _upgrade(con: duckdb.DuckDBPyConnection) -> None:
    """Bring an older store to SCHEMA_VERSION in one transaction (another opener may have done it first)."""
    con.begin()
    try:
        version = _version(con)
        if version < SCHEMA_VERSION:
            con.execute(SCHEMA + rollups.SCHEMA + state_copy.SCHEMA)  # version 3: the state copy
            if version < 2:  # the rollups appeared in version 2: build them from the events already here
                rollups.rebuild(con, transaction=False)
            elif version < 4:  # and the per-profile activity in version 4
                rollups.fold_activity(con, "events")
            con.execute(
                "INSERT INTO store_meta VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [str(SCHEMA_VERSION)],
            )
        con.commit()
    except BaseException:
        con.rollback()
        raise


@contextmanager
def store(path: str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The store at ``path`` for the duration of a ``with`` block."""
    con = open_store(path)
    try:
        yield con
    finally:
        con.close()
