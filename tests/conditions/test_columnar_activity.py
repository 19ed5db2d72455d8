"""The per-profile activity the columnar back end reads (``act``: event and interaction counts, first and last
times) equals a plain pandas computation over the event log, whether the events come from the analytics
copy's ``profile_activity``, from the tail not yet copied, or both, and across merges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from lifeloop.analytics.store import store
from lifeloop.analytics.sync import sync
from lifeloop.columnar import Workspace
from lifeloop.events.models import events
from lifeloop.profiles.computed import INTERACTION_TYPES, NON_INTERACTION_EVENTS
from lifeloop.profiles.models import profiles
from tests.conditions.store import Person, seed
from tests.conftest import Brand

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
COLUMNS = ["events", "first_ts", "last_ts", "interactions", "first_interaction", "last_interaction"]


def _person(days: list[int], kinds: list[tuple[str, str | None]]) -> Person:
    return Person(
        events=[
            (t, n, NOW - timedelta(days=d, minutes=i), None)
            for i, (d, (t, n)) in enumerate(zip(days, kinds, strict=True))
        ]
    )


def expected_activity(engine: sa.Engine, workspace_id: int) -> pd.DataFrame:
    """pandas over the log: each event on the profile that survives merges, then grouped."""
    e, p = events.c, profiles.c
    with engine.connect() as conn:
        log = pd.DataFrame(
            conn.execute(
                sa.select(e.profile_id, e.type, e.event, e.timestamp).where(
                    e.workspace_id == workspace_id, e.profile_id.is_not(None)
                )
            ).all(),
            columns=["pid", "type", "event", "ts"],
        )
        merged = dict(
            conn.execute(
                sa.select(p.id, p.merged_into).where(
                    p.workspace_id == workspace_id, p.merged_into.is_not(None)
                )
            ).all()
        )
    log["pid"] = log["pid"].map(lambda pid: merged.get(pid, pid))
    log["ts"] = pd.to_datetime(log["ts"], utc=True).dt.tz_localize(None)
    own = log["event"].fillna("").str.startswith("$") | log["event"].isin(NON_INTERACTION_EVENTS)
    log["interaction"] = log["type"].isin(("page", "screen")) | ((log["type"] == "track") & ~own)
    assert set(INTERACTION_TYPES) == {"track", "page", "screen"}
    inter = log[log["interaction"]].groupby("pid")["ts"]
    frame = pd.DataFrame(
        {
            "events": log.groupby("pid").size(),
            "first_ts": log.groupby("pid")["ts"].min(),
            "last_ts": log.groupby("pid")["ts"].max(),
            "interactions": inter.size(),
            "first_interaction": inter.min(),
            "last_interaction": inter.max(),
        }
    )
    frame["interactions"] = frame["interactions"].fillna(0).astype("int64")
    return frame.sort_index()


def columnar_activity(engine: sa.Engine, workspace_id: int, copy: Path, *, kept: bool) -> pd.DataFrame:
    """``act`` as a Workspace reads it; ``kept``: whether it must read the copy's ``profile_activity``."""
    with Workspace(engine, workspace_id, copy, now=NOW) as columnar:
        columnar.refresh()
        frame = columnar.db.execute(f"SELECT pid, {', '.join(COLUMNS)} FROM act").df()
        view = columnar.db.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'act'").fetchall()
        assert ("profile_activity" in view[0][0]) is kept
    frame = frame.set_index("pid").sort_index()
    frame.index = frame.index.astype("int64")
    return frame.astype({"events": "int64", "interactions": "int64"})


def assert_equal(found: pd.DataFrame, expected: pd.DataFrame) -> None:
    expected = expected.reindex(found.index.union(expected.index))
    found = found.reindex(expected.index)
    for column in COLUMNS:
        left, right = found[column].tolist(), expected[column].tolist()
        same = [a == b or (pd.isna(a) and pd.isna(b)) for a, b in zip(left, right, strict=True)]
        assert all(same), (column, left, right)


def add_events(
    engine: sa.Engine, workspace_id: int, pid: int, rows: list[tuple[str, str | None, datetime]]
) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.insert(events),
            [
                {
                    "workspace_id": workspace_id,
                    "message_id": f"extra-{pid}-{n}",
                    "type": t,
                    "event": name,
                    "profile_id": pid,
                    "timestamp": ts,
                    "received_at": ts,
                    "properties": None,
                }
                for n, (t, name, ts) in enumerate(rows)
            ],
        )


def test_activity_from_the_copy_the_tail_and_merges_equals_pandas(
    engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    ws, copy = brand.workspace_id, tmp_path / "copy.duckdb"
    people = [
        _person([40, 3, 1], [("track", "Channel Followed"), ("page", None), ("track", "Order Completed")]),
        _person([20, 2], [("identify", None), ("track", "Message Delivered")]),  # no interaction at all
        _person([10], [("track", "Menu Clicked")]),
        _person([5, 4], [("track", "$internal"), ("screen", None)]),
        Person(),  # no event
    ]
    with engine.begin() as conn:
        ids = seed(conn, ws, people, now=NOW)
    # Nothing copied: every event is the tail.
    assert_equal(columnar_activity(engine, ws, copy, kept=False), expected_activity(engine, ws))
    sync(engine, copy, workspace_id=ws)
    with store(copy) as con:
        kept = con.execute("SELECT count(*) FROM profile_activity WHERE workspace_id = ?", [ws]).fetchall()
    assert kept == [(4,)]
    assert_equal(columnar_activity(engine, ws, copy, kept=True), expected_activity(engine, ws))
    # Later events, earlier and later than what was copied, then a merge: copy and tail combined.
    add_events(engine, ws, ids[0], [("track", "Menu Clicked", NOW - timedelta(days=90)), ("page", None, NOW)])
    add_events(engine, ws, ids[1], [("track", "Product Viewed", NOW - timedelta(hours=1))])
    add_events(engine, ws, ids[4], [("identify", None, NOW - timedelta(days=1))])
    with engine.begin() as conn:
        merge = sa.update(profiles).where(profiles.c.workspace_id == ws, profiles.c.id == ids[2])
        conn.execute(merge.values(merged_into=ids[1]))
    assert_equal(columnar_activity(engine, ws, copy, kept=True), expected_activity(engine, ws))
    sync(engine, copy, workspace_id=ws)
    assert_equal(columnar_activity(engine, ws, copy, kept=True), expected_activity(engine, ws))


def test_activity_is_grouped_from_the_events_when_the_copy_does_not_hold_it(
    engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    ws, copy = brand.workspace_id, tmp_path / "copy.duckdb"
    with engine.begin() as conn:
        seed(conn, ws, [_person([3, 1], [("page", None), ("identify", None)])], now=NOW)
    sync(engine, copy, workspace_id=ws)
    with store(copy) as con:  # e.g. events loaded into the copy without the sync
        con.execute("DELETE FROM profile_activity")
        con.execute("UPDATE rollup_state SET events = events + 1")
    assert_equal(columnar_activity(engine, ws, copy, kept=False), expected_activity(engine, ws))
