"""Incremental sync into DuckDB: resolved-only, resumable, idempotent, merges, flattening rules."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lifeloop.analytics.metrics import build_metric
from lifeloop.analytics.rfm import RfmConfig, rfm_query
from lifeloop.analytics.rollups import read_rollups
from lifeloop.analytics.store import store
from lifeloop.analytics.sync import sync as sync_now
from lifeloop.config import Settings
from lifeloop.events.messages import parse_message
from lifeloop.events.models import events
from lifeloop.events.service import ingest
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.store.engine import create_store_engine
from lifeloop.store.migrate import upgrade
from lifeloop.workspaces.models import SourceKey
from tests.conftest import Brand, make_brand

T0 = datetime(2024, 3, 1, 15, 30, tzinfo=UTC)  # 23:30 in Asia/Taipei: the brand's day is 1 March


def send(engine: sa.Engine, brand: Brand, *raw: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    messages = [parse_message(m, received_at=now) for m in raw]
    ingest(engine, SourceKey(workspace_id=brand.workspace_id, source_id=brand.source_id), messages)


def track(
    mid: str, event: str, *, user: str | None = None, anon: str | None = None, at: datetime = T0, **kw: Any
):
    msg: dict[str, Any] = {"type": "track", "messageId": mid, "event": event, "timestamp": at.isoformat()}
    if user:
        msg["userId"] = user
    if anon:
        msg["anonymousId"] = anon
    msg.update(kw)
    return msg


def sync(engine: sa.Engine, path: Path, **kw: Any):
    """A sync that does not wait for events to settle (they were all committed before it starts)."""
    return sync_now(engine, path, settle_seconds=0, **kw)


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with store(path) as con:
        return con.execute(sql).fetchall()


def test_only_resolved_events_are_copied_and_reruns_copy_nothing(
    engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    path = tmp_path / "a.duckdb"
    send(engine, brand, *(track(f"m{i}", "Product Viewed", user="u1") for i in range(3)))
    first = sync(engine, path)
    if first.events == 0:  # ingest leaves events unresolved: the cursor must wait for the resolver
        assert first.waiting_at[brand.workspace_id] > 0
        assert rows(path, "SELECT count(*) FROM events") == [(0,)]
    resolve_pending(engine)
    sync(engine, path)
    again = sync(engine, path)
    assert again.events == 0
    assert rows(path, "SELECT count(*), count(DISTINCT id) FROM events") == [(3, 3)]


def test_sync_stops_before_the_first_unresolved_event(
    engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    path = tmp_path / "a.duckdb"
    send(engine, brand, track("a1", "Product Viewed", user="u1"), track("a2", "Product Viewed", user="u2"))
    resolve_pending(engine)
    send(engine, brand, track("b1", "Product Viewed", user="u3"))  # committed, not yet resolved
    report = sync(engine, path)
    (waiting,) = report.waiting_at.values()
    assert rows(path, "SELECT count(*), max(id) < ? FROM events".replace("?", str(waiting))) == [(2, True)]
    assert rows(
        path, "SELECT cursor < ? FROM sync_state WHERE stream = 'events'".replace("?", str(waiting))
    ) == [(True,)]
    resolve_pending(engine)
    again = sync(engine, path)
    assert again.events == 1 and again.waiting_at == {}
    assert rows(path, "SELECT count(*), max(id) FROM events") == [(3, waiting)]


def test_a_crash_between_chunks_resumes_without_duplicates(
    engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    send(engine, brand, *(track(f"m{i}", "Product Viewed", user=f"u{i % 7}") for i in range(25)))
    resolve_pending(engine)

    class Crash(Exception):
        pass

    def crash_after_first_chunk(copied: int, remaining: int) -> None:
        raise Crash

    crashed = tmp_path / "crashed.duckdb"
    with pytest.raises(Crash):
        sync(engine, crashed, chunk_size=10, progress=crash_after_first_chunk)
    assert rows(crashed, "SELECT count(*) FROM events") == [(10,)]
    (cursor,) = rows(crashed, "SELECT cursor FROM sync_state WHERE stream = 'events'")[0]
    assert cursor == rows(crashed, "SELECT max(id) FROM events")[0][0]

    resumed = sync(engine, crashed, chunk_size=10)
    assert resumed.events == 15
    clean = tmp_path / "clean.duckdb"
    sync(engine, clean, chunk_size=1000)
    dump = "SELECT * EXCLUDE (ts), epoch_us(ts) FROM events ORDER BY id"
    assert rows(crashed, dump) == rows(clean, dump)
    assert rows(crashed, "SELECT count(*), count(DISTINCT id) FROM events") == [(25, 25)]
    # the rollups were committed with their chunk: the resumed store holds what the clean one does
    for table in ("profile_summary", "cohort_counts", "rollup_state"):
        assert rows(crashed, f"SELECT * FROM {table} ORDER BY ALL") == rows(
            clean, f"SELECT * FROM {table} ORDER BY ALL"
        )
    per_day = (
        "SELECT profile_id, day, bool_or(active), sum(orders) FROM profile_days GROUP BY ALL ORDER BY ALL"
    )
    assert rows(crashed, per_day) == rows(clean, per_day)


def test_workspaces_keep_their_own_cursor(engine: sa.Engine, brand: Brand, tmp_path: Path) -> None:
    other = make_brand(engine, "other")
    send(engine, brand, track("x1", "Product Viewed", user="u1"))
    send(engine, other, track("y1", "Product Viewed", user="u1"), track("y2", "Product Viewed", user="u2"))
    resolve_pending(engine)
    path = tmp_path / "a.duckdb"
    sync(engine, path, workspace_id=other.workspace_id)
    assert rows(path, "SELECT workspace_id, count(*) FROM events GROUP BY 1") == [(other.workspace_id, 2)]
    sync(engine, path)
    assert sorted(rows(path, "SELECT workspace_id, count(*) FROM events GROUP BY 1")) == sorted(
        [(brand.workspace_id, 1), (other.workspace_id, 2)]
    )


def test_a_merge_after_sync_maps_the_old_profile_to_the_survivor(
    engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    path = tmp_path / "a.duckdb"
    send(
        engine, brand, track("a1", "Product Viewed", anon="anon-1"), track("b1", "Product Viewed", user="ann")
    )
    resolve_pending(engine)
    sync(engine, path)
    assert rows(path, "SELECT count(DISTINCT profile_id) FROM events") == [(2,)]
    send(engine, brand, {"type": "alias", "messageId": "al", "previousId": "anon-1", "userId": "ann"})
    resolve_pending(engine)
    sync(engine, path)
    canonical = rows(
        path,
        """SELECT count(DISTINCT coalesce(m.canonical_id, e.profile_id)) FROM events e
           LEFT JOIN profile_map m ON m.workspace_id = e.workspace_id AND m.profile_id = e.profile_id""",
    )
    assert canonical == [(1,)]
    # the rollups, kept per raw profile, answer for the merged user as the raw events do
    retention = build_metric(
        "retention", {"workspace_id": brand.workspace_id, "start": "2024-02-01", "end": "2024-03-31"}
    )
    with store(path) as con:
        got, raw = retention.run(con).frame, retention.run(con, use_rollups=False).frame
        assert read_rollups(con, brand.workspace_id) is not None
        at = datetime(2024, 4, 1, tzinfo=UTC)
        rfm = [
            con.sql(rfm_query(brand.workspace_id, at, RfmConfig(), r)).fetchall()
            for r in (read_rollups(con, brand.workspace_id), None)
        ]
    assert got["users"].tolist() == raw["users"].tolist() == [1]
    assert rfm[0] == rfm[1] and len(rfm[0]) == 1


CASES: list[tuple[dict[str, Any], str, float | None, str | None, bool]] = [
    # (event props / context, expected event, revenue, channel, interactive)
    ({"event": "Order Completed", "properties": {"revenue": "12.50"}}, "Order Completed", 12.5, None, True),
    (
        {"event": "Order Completed", "properties": {"total": 30, "value": 99}},
        "Order Completed",
        30.0,
        None,
        True,
    ),
    (
        {"event": "Order Completed", "properties": {"revenue": "n/a", "value": 7}},
        "Order Completed",
        7.0,
        None,
        True,
    ),
    ({"event": "Order Completed", "properties": {"revenue": "n/a"}}, "Order Completed", None, None, True),
    ({"event": "Product Viewed", "properties": {"revenue": 5}}, "Product Viewed", None, None, True),
    (
        {"event": "Channel Followed", "properties": {"channel": "LINE"}, "context": {"channel": "WeCom "}},
        "Channel Followed",
        None,
        "wecom",
        True,
    ),
    (
        {"event": "X", "properties": {"channel": "line"}, "context": {"campaign": {"source": "Facebook"}}},
        "X",
        None,
        "facebook",
        True,
    ),
    ({"event": "X", "properties": {"channel": "line"}}, "X", None, "line", True),
    (
        {"event": "Message Delivered", "properties": {"channel": "sms"}},
        "Message Delivered",
        None,
        "sms",
        False,
    ),
    (
        {"event": "Lifecycle Stage Entered", "properties": {"stage": "new"}},
        "Lifecycle Stage Entered",
        None,
        None,
        False,
    ),
]


def test_flattening_rules(engine: sa.Engine, brand: Brand, tmp_path: Path) -> None:
    msgs = [
        track(f"c{i}", kw["event"], user="u1", **{k: v for k, v in kw.items() if k != "event"})
        for i, (kw, *_rest) in enumerate(CASES)
    ]
    msgs.append(
        {
            "type": "page",
            "messageId": "p1",
            "userId": "u1",
            "name": "Home",
            "properties": {"category": "booking"},
            "timestamp": T0.isoformat(),
        }
    )
    msgs.append(
        {
            "type": "identify",
            "messageId": "i1",
            "userId": "u1",
            "traits": {"name": "Ann"},
            "timestamp": (T0 + timedelta(hours=1)).isoformat(),
        }
    )
    send(engine, brand, *msgs)
    resolve_pending(engine)
    path = tmp_path / "a.duckdb"
    sync(engine, path)
    got = rows(path, "SELECT event, revenue, channel, interactive, category, day FROM events ORDER BY id")
    expected: list[tuple[Any, ...]] = [
        (e, rev, ch, inter, None, date(2024, 3, 1)) for _kw, e, rev, ch, inter in CASES
    ]
    expected.append(("Page Viewed", None, None, True, "booking", date(2024, 3, 1)))
    expected.append(("identify", None, None, False, None, date(2024, 3, 2)))  # 00:30 in Taipei
    assert got == expected


def test_recent_events_wait_to_settle_on_postgresql(engine: sa.Engine, brand: Brand, tmp_path: Path) -> None:
    send(engine, brand, track("s1", "Product Viewed", user="u1"))
    resolve_pending(engine)
    report = sync_now(engine, tmp_path / "a.duckdb")  # the default settle time
    if engine.dialect.name == "sqlite":  # writers are serialised: ids commit in order, nothing to wait for
        assert report.events == 1
    else:
        assert report.events == 0 and brand.workspace_id in report.waiting_at
    assert sync_now(engine, tmp_path / "b.duckdb", settle_seconds=0).events == 1


def test_a_copy_of_another_database_or_of_a_later_state_is_copied_afresh(
    engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    path = tmp_path / "a.duckdb"
    # Another database (a new SQLite file, its own identity) with a workspace of the same id.
    other_engine = create_store_engine(
        Settings(database_url=f"sqlite:///{tmp_path / 'other.db'}"), poolclass=sa.NullPool
    )
    upgrade(other_engine)
    other = make_brand(other_engine, "other")
    assert other.workspace_id == brand.workspace_id
    send(other_engine, other, *(track(f"o{i}", "Order Completed", user="x", revenue=10) for i in range(5)))
    resolve_pending(other_engine)
    assert sync(other_engine, path).events == 5

    send(engine, brand, *(track(f"m{i}", "Product Viewed", user="u1") for i in range(2)))
    resolve_pending(engine)
    assert sync(engine, path).events == 2  # the other database's copy is dropped, not added to
    assert rows(path, "SELECT event, revenue FROM events ORDER BY id") == [("Product Viewed", None)] * 2
    assert rows(path, "SELECT events FROM profile_activity") == [(2,)]
    kept = 1 if engine.dialect.name == "sqlite" else 0  # (the state copy is kept on SQLite only)
    assert rows(path, "SELECT count(*) FROM state_profiles") == [(kept,)]
    assert sync(engine, path).events == 0  # its own copy is kept

    # This database restored from an older backup: the copy holds an event it no longer has.
    with engine.begin() as conn:
        conn.execute(
            sa.delete(events).where(events.c.workspace_id == brand.workspace_id, events.c.message_id == "m1")
        )
    assert sync(engine, path).events == 1
    assert rows(path, "SELECT count(*), sum(CASE WHEN interactive THEN 1 END) FROM events") == [(1, 1)]
    other_engine.dispose()
