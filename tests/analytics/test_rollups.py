"""The per-profile rollups: maintained chunk by chunk they equal a rebuild from the events, and every answer
read from them equals the raw-event SQL's — with merges (made before or after the events arrived, chained,
undone), events out of time order, duplicate chunks, and a store upgraded from schema version 1."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from lifeloop.analytics import rollups
from lifeloop.analytics.metrics import build_metric
from lifeloop.analytics.rfm import RfmConfig, rfm_query
from lifeloop.analytics.service import clv_summary_query
from lifeloop.analytics.store import SCHEMA, SCHEMA_VERSION, open_store
from tests.analytics.generated import EVENT_COLUMNS, History, day, generate, load

WS = 1
AT = datetime(2024, 7, 1, tzinfo=UTC)  # after every generated event
THRESHOLDS = RfmConfig(method="thresholds", recency_days=(5, 15, 40, 80), frequency=(2, 3, 4, 6))

# (metric, parameters): the rollup-backed metrics over several ranges and options
METRIC_CASES: list[tuple[str, dict[str, Any]]] = [
    ("retention", {"start": day(30), "end": day(100), "days": [1, 7, 30]}),
    ("retention", {"start": day(0), "end": day(149), "days": [2, 14, 60], "as_of": day(90)}),
    ("cohort_retention", {"start": day(30), "end": day(100), "period": "week", "periods": 6}),
    ("cohort_retention", {"start": day(3), "end": day(140), "period": "month", "periods": 5}),
    ("cohort_retention", {"start": day(10), "end": day(80), "period": "week", "as_of": day(60)}),
    ("new_users", {"start": day(30), "end": day(60)}),
    ("active_users", {"start": day(30), "end": day(40)}),
    ("active_users", {"start": day(0), "end": day(149)}),
    ("churn_rate", {"start": day(20), "end": day(140), "period": "month"}),
    ("churn_rate", {"start": day(35), "end": day(90), "period": "week"}),
    ("revenue", {"start": day(20), "end": day(130), "interval": "week"}),
    ("revenue", {"start": day(0), "end": day(149), "interval": "month"}),
    ("revenue", {"start": day(40), "end": day(70)}),
    ("channel_roi", {"start": day(10), "end": day(90)}),
    ("channel_roi", {"start": day(0), "end": day(149)}),
]


@pytest.fixture(scope="module")
def history() -> History:
    return generate(seed=23, users=350, workspace_id=WS)


def append_in_chunks(con: duckdb.DuckDBPyConnection, events: pd.DataFrame, chunks: int, seed: int) -> None:
    """As the sync does: each chunk's events and their fold in one transaction; chunks in random order."""
    shuffled = events.sample(frac=1.0, random_state=seed)
    for i in range(chunks):
        con.register("chunk", shuffled.iloc[i::chunks][EVENT_COLUMNS])
        con.begin()
        rollups.append_events(con, "chunk")
        con.commit()
        con.unregister("chunk")


def set_map(con: duckdb.DuckDBPyConnection, mapping: pd.DataFrame) -> None:
    con.execute("DELETE FROM profile_map")
    con.register("m", mapping[["workspace_id", "profile_id", "canonical_id", "updated_at"]])
    con.execute("INSERT INTO profile_map SELECT * FROM m")
    con.unregister("m")


def dump(con: duckdb.DuckDBPyConnection) -> list[pd.DataFrame]:
    """The rollups' content: ``profile_days`` added up per (profile, day), zero counts left out."""
    return [
        con.execute("SELECT * FROM profile_summary ORDER BY ALL").df(),
        con.execute("SELECT * FROM cohort_counts WHERE users <> 0 ORDER BY ALL").df(),
        con.execute(
            """SELECT workspace_id, profile_id, day, BOOL_OR(active), MIN(first_active_ts), SUM(orders),
                      SUM(revenue), MIN(first_order_ts), MAX(last_order_ts), SUM(clv_orders), SUM(clv_amount)
               FROM profile_days GROUP BY ALL ORDER BY ALL"""
        ).df(),
        con.execute("SELECT * FROM rollup_state ORDER BY ALL").df(),
    ]


def assert_rollup_answers_equal_raw(con: duckdb.DuckDBPyConnection) -> None:
    covered = rollups.read_rollups(con, WS)
    assert covered is not None
    for name, params in METRIC_CASES:
        metric = build_metric(name, {"workspace_id": WS, **params})
        assert metric.rollup_query(covered) is not None
        got, raw = metric.run(con).frame, metric.run(con, use_rollups=False).frame
        assert len(raw) > 0
        pd.testing.assert_frame_equal(got, raw)
    for config in (RfmConfig(), THRESHOLDS):
        got = con.sql(rfm_query(WS, AT, config, covered)).df().sort_values("user_id", ignore_index=True)
        raw = con.sql(rfm_query(WS, AT, config)).df().sort_values("user_id", ignore_index=True)
        assert len(raw) > 100
        pd.testing.assert_frame_equal(got, raw, check_exact=False, rtol=0, atol=1e-9)
    for as_of, per in ((date(2024, 7, 1), 7.0), (date(2024, 6, 1), 1.0)):
        got = con.sql(clv_summary_query(WS, as_of, per, covered)).df()
        raw = con.sql(clv_summary_query(WS, as_of, per)).df()
        assert len(raw) > 100
        pd.testing.assert_frame_equal(got, raw, check_exact=False, rtol=0, atol=1e-9)


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = open_store(tmp_path / "a.duckdb")
    yield connection
    connection.close()


def test_chunked_out_of_order_fold_equals_a_rebuild(con: duckdb.DuckDBPyConnection, history: History) -> None:
    # ids are not in time order and chunks are random slices: first days move back as late events arrive
    append_in_chunks(con, history.events, chunks=9, seed=1)
    again = history.events.sample(n=200, random_state=2)[EVENT_COLUMNS]  # a rerun chunk: nothing to fold
    con.register("again", again)
    con.begin()
    assert rollups.append_events(con, "again") == 0
    con.commit()
    incremental = dump(con)
    rollups.rebuild(con, WS)
    for got, expected in zip(incremental, dump(con), strict=True):
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)
    assert incremental[3]["events"].tolist() == [len(history.events)]


def test_answers_equal_raw_events_through_merges(con: duckdb.DuckDBPyConnection, history: History) -> None:
    # merges known before any event arrives (every 10th profile into the one before it)
    set_map(con, history.profile_map)
    append_in_chunks(con, history.events, chunks=5, seed=3)
    assert_rollup_answers_equal_raw(con)
    # merges after the events were folded, a chain (a → b → c, not yet collapsed), and an undone merge
    later = history.profile_map.copy()
    later.loc[later["profile_id"] == 10, "canonical_id"] = 10  # un-merged
    later.loc[later["profile_id"].isin([21, 22, 23]), "canonical_id"] = 24
    later.loc[later["profile_id"] == 24, "canonical_id"] = 25
    set_map(con, later)
    assert_rollup_answers_equal_raw(con)
    # and more events after the merges, spread over the whole history
    extra = history.events.sample(n=600, random_state=4).copy()
    extra["id"] += 1_000_000
    append_in_chunks(con, extra, chunks=3, seed=5)
    assert_rollup_answers_equal_raw(con)


def test_the_raw_events_answer_what_the_rollups_cannot(
    con: duckdb.DuckDBPyConnection, history: History, tmp_path: Path
) -> None:
    set_map(con, history.profile_map)
    append_in_chunks(con, history.events, chunks=2, seed=6)
    covered = rollups.read_rollups(con, WS)
    assert covered is not None and covered.max_ts is not None and covered.max_order_day is not None
    for filters in ({"segment": "vip"}, {"stage": "loyal"}, {"channel": "line"}):
        metric = build_metric("retention", {"workspace_id": WS, "start": day(30), "end": day(100), **filters})
        assert metric.query(covered) == metric.to_query()
    # cut-offs inside the folded history: only the raw events can leave later events out
    early = covered.max_ts.replace(tzinfo=UTC)
    assert rfm_query(WS, early, RfmConfig(), covered) == rfm_query(WS, early, RfmConfig())
    assert rfm_query(WS, AT, RfmConfig(), covered) != rfm_query(WS, AT, RfmConfig())
    last = covered.max_order_day
    assert clv_summary_query(WS, last, 7.0, covered) != clv_summary_query(WS, last, 7.0)
    before = date.fromordinal(last.toordinal() - 1)
    assert clv_summary_query(WS, before, 7.0, covered) == clv_summary_query(WS, before, 7.0)
    # events written without their fold (not by the sync): the rollups are not trusted
    other = tmp_path / "b.duckdb"
    load(history, other, rollups=False)
    with open_store(other) as stale:
        assert rollups.read_rollups(stale, WS) is None
        stale.execute("INSERT INTO rollup_state VALUES (1, 5, NULL, NULL, NULL)")
        assert rollups.read_rollups(stale, WS) is None


def test_a_version_1_store_gets_its_rollups_on_open(history: History, tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(SCHEMA)  # the version 1 schema: no rollup tables
    con.execute("INSERT INTO store_meta VALUES ('schema_version', '1')")
    con.close()
    load(history, path, rollups=False)  # opening upgrades first (nothing to fold), then the events arrive
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE profile_days; DROP TABLE profile_summary; DROP TABLE cohort_counts")
    con.execute("DROP TABLE rollup_state; UPDATE store_meta SET value = '1'")
    con.close()
    with open_store(path) as upgraded:
        version = upgraded.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchall()
        assert version == [(str(SCHEMA_VERSION),)]
        assert rollups.read_rollups(upgraded, WS) is not None
        assert_rollup_answers_equal_raw(upgraded)
