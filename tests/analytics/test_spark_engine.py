"""The Spark engine gives the DuckDB engine's numbers: every metric, RFM and the CLV summary.

Both engines read the same generated store (with merges, a second workspace, same-second ties and
unordered ids); frames must be equal with the same columns and dtypes, floats to 1e-9. One local Spark
session serves the whole run (starting a JVM takes ~15 s).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from lifeloop.analytics.engines import AnalyticsEngine, engine_for
from lifeloop.analytics.engines.duckdb import DuckDBEngine
from lifeloop.analytics.engines.spark import SparkEngine, to_spark_sql
from lifeloop.analytics.metrics import METRICS, build_metric
from lifeloop.analytics.rfm import RfmConfig
from lifeloop.analytics.store import store
from lifeloop.config import Settings
from tests.analytics.generated import generate, load

WS = 1
RANGE = {"start": date(2024, 1, 10), "end": date(2024, 4, 20)}

# (id, metric, extra parameters): every metric once, plus the variants that exercise other SQL paths
# (week / month truncation and month intervals, the population filters, paths backwards).
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("active_users", "active_users", {}),
    ("active_users-channel", "active_users", {"channel": "line"}),
    ("new_users", "new_users", {}),
    ("new_users-segment", "new_users", {"segment": "vip"}),
    ("retention", "retention", {"days": [1, 3, 7, 30]}),
    ("retention-as_of", "retention", {"as_of": date(2024, 3, 1)}),
    ("cohort_retention-week", "cohort_retention", {"period": "week"}),
    ("cohort_retention-month", "cohort_retention", {"period": "month", "periods": 4}),
    ("churn_rate-month", "churn_rate", {"period": "month"}),
    ("churn_rate-week", "churn_rate", {"period": "week", "stage": "loyal", "stage_model": "line"}),
    ("funnel", "funnel", {"steps": ["Product Viewed", "Product Added", "Order Completed"]}),
    ("paths-after", "paths", {"event": "Product Added"}),
    ("paths-before", "paths", {"event": "Order Completed", "direction": "before", "depth": 2}),
    ("revenue-day", "revenue", {}),
    ("revenue-week", "revenue", {"interval": "week", "channel": "wecom"}),
    ("revenue-month", "revenue", {"interval": "month"}),
    ("repeat_purchase", "repeat_purchase", {}),
    ("channel_roi", "channel_roi", {}),
    ("stage_distribution", "stage_distribution", {}),
    ("stage_distribution-model", "stage_distribution", {"model": "mall"}),
    ("stage_flows", "stage_flows", {"model": "line"}),
    ("journey_conversion", "journey_conversion", {"journey_id": "1"}),
    ("journey_conversion-filtered", "journey_conversion", {"journey_id": "2", "stage": "engaged"}),
    ("messages", "messages", {}),
    ("messages-line", "messages", {"channel": "line"}),
]


def assert_same(duck: pd.DataFrame, spark: pd.DataFrame) -> None:
    """Same columns, dtypes and rows; integers, strings and dates exactly, floats to 1e-9."""
    pd.testing.assert_frame_equal(duck, spark, check_exact=False, rtol=0, atol=1e-9)


# -------------------------------------------------------------------------------- without Spark


@pytest.mark.parametrize(
    ("duckdb_sql", "spark_sql"),
    [
        # DuckDB divides decimals in DOUBLE; Spark would keep DECIMAL(…, 6)
        ("SELECT x / 7.0 FROM t", "SELECT x / CAST(7.0 AS DOUBLE) FROM t"),
        ("SELECT CAST(1.5 AS DOUBLE) FROM t", "SELECT CAST(1.5 AS DOUBLE) FROM t"),
        ("SELECT x / 7 FROM t", "SELECT x / 7 FROM t"),
        ("SELECT 'a.b' FROM t", "SELECT 'a.b' FROM t"),
        # DuckDB counts boundaries crossed; Spark whole units elapsed
        (
            "SELECT DATE_DIFF('second', a, b) FROM t",
            "SELECT DATEDIFF(SECOND, DATE_TRUNC('SECOND', a), DATE_TRUNC('SECOND', b)) FROM t",
        ),
        (
            "SELECT DATE_DIFF('day', a, b) FROM t",
            "SELECT DATEDIFF(DAY, CAST(a AS DATE), CAST(b AS DATE)) FROM t",
        ),
    ],
)
def test_rewrites(duckdb_sql: str, spark_sql: str) -> None:
    assert to_spark_sql(duckdb_sql) == spark_sql


def test_unsupported_date_diff_unit_is_refused() -> None:
    with pytest.raises(Exception, match="no Spark rewrite"):
        to_spark_sql("SELECT DATE_DIFF('month', a, b) FROM t")


def test_every_metric_transpiles_with_counted_rewrites() -> None:
    fired: dict[str, int] = {}
    for name in METRICS:
        params = {"workspace_id": WS, **RANGE, **next(extra for _, n, extra in CASES if n == name)}
        assert "SELECT" in to_spark_sql(build_metric(name, params).to_query(), fired)
    assert set(fired) <= {"decimal_literals_as_double", "date_diff_boundaries"}


def test_engine_is_chosen_by_settings(tmp_path: Path) -> None:
    path = tmp_path / "a.duckdb"
    default = engine_for(Settings(), path)
    assert isinstance(default, DuckDBEngine) and isinstance(default, AnalyticsEngine)
    spark = engine_for(Settings(analytics_engine="spark", spark_master="local[1]"), path)
    assert isinstance(spark, SparkEngine) and spark.master == "local[1]"
    spark.close()  # no session was started: it is created on first use
    assert not spark.work_dir.exists()
    with pytest.raises(ValidationError):
        Settings(analytics_engine="presto")


# ----------------------------------------------------------------------------------- with Spark


@pytest.fixture(scope="session")
def spark_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from lifeloop.analytics.engines.spark import spark_session as start

    session = start("local[2]")
    assert session.conf.get("spark.ui.enabled") == "false"
    assert session.conf.get("spark.driver.host") == "127.0.0.1"
    yield session
    session.stop()


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("engines") / "a.duckdb"
    load(generate(seed=11, users=300, workspace_id=WS), path)
    other = generate(seed=99, users=40, workspace_id=2)  # must never leak into workspace 1
    other.events["id"] += 10_000_000
    load(other, path)
    return path


@pytest.fixture(scope="module")
def engines(
    store_path: Path, spark_session: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DuckDBEngine, SparkEngine]]:
    spark = SparkEngine(store_path, work_dir=tmp_path_factory.mktemp("spark-work"), session=spark_session)
    yield DuckDBEngine(store_path), spark
    spark.close()


@pytest.mark.spark
@pytest.mark.parametrize(("name", "extra"), [(n, e) for _, n, e in CASES], ids=[c[0] for c in CASES])
def test_metric_equals_duckdb(engines: tuple[DuckDBEngine, SparkEngine], name: str, extra: dict) -> None:
    duck, spark = engines
    metric = build_metric(name, {"workspace_id": WS, **RANGE, **extra})
    expected = duck.run_metric(metric)
    got = spark.run_metric(metric)
    assert len(expected.frame) > 0, "a case that selects nothing would prove nothing"
    assert_same(expected.frame, got.frame)
    assert got.sql != expected.sql and {"build", "load", "transpile", "run", "finish"} <= set(got.timings)
    assert got.to_json()["columns"] == expected.to_json()["columns"]


@pytest.mark.spark
@pytest.mark.parametrize(
    "config",
    [RfmConfig(), RfmConfig(method="thresholds"), RfmConfig(high_score=4, new_days=10, lost_days=60)],
    ids=["quantile", "thresholds", "custom"],
)
def test_rfm_equals_duckdb(engines: tuple[DuckDBEngine, SparkEngine], config: RfmConfig) -> None:
    duck, spark = engines
    as_of = datetime(2024, 4, 20, 6, 0, 0, 500_000, tzinfo=UTC)  # a fraction of a second: boundary counting
    expected, got = duck.rfm(WS, as_of, config), spark.rfm(WS, as_of, config)
    assert len(expected) > 100 and expected["layer"].nunique() >= 4
    assert_same(expected, got)


@pytest.mark.spark
@pytest.mark.parametrize(("as_of", "freq_days"), [(date(2024, 4, 20), 7.0), (date(2024, 3, 1), 1.0)])
def test_clv_summary_equals_duckdb(
    engines: tuple[DuckDBEngine, SparkEngine], as_of: date, freq_days: float
) -> None:
    duck, spark = engines
    expected, got = duck.clv_summary(WS, as_of, freq_days), spark.clv_summary(WS, as_of, freq_days)
    assert len(expected) > 100 and (expected["frequency"] > 0).sum() > 50
    assert_same(expected, got)


@pytest.mark.spark
@pytest.mark.parametrize(
    "sql",
    [
        # fractions of a second across a boundary: DuckDB counts 1
        "SELECT DATE_DIFF('second', TIMESTAMP '2024-01-01 00:00:00.9', TIMESTAMP '2024-01-01 00:00:01.1') n",
        "SELECT DATE_DIFF('day', TIMESTAMP '2024-01-01 23:59:59', TIMESTAMP '2024-01-02 00:00:01') AS n",
        "SELECT DATE_DIFF('day', DATE '2024-01-01', DATE '2024-03-01') / 7.0 AS weeks",
        "SELECT ROUND(SUM(x), 6) AS s FROM (VALUES (0.1), (0.2), (0.3)) AS t(x)",
    ],
)
def test_rewritten_expressions_mean_the_same(engines: tuple[DuckDBEngine, SparkEngine], sql: str) -> None:
    duck, spark = engines
    with store(duck.path) as con:
        expected = con.sql(sql).to_arrow_table().to_pandas()
    got, _ = spark.query(sql)
    assert_same(expected, got)


@pytest.mark.spark
def test_snapshot_follows_the_store(spark_session: Any, tmp_path: Path) -> None:
    """A sync or cost upload after a query is seen by the next one; unchanged data is not exported again."""
    path = tmp_path / "a.duckdb"
    load(generate(seed=3, users=40, workspace_id=WS), path)
    spark = SparkEngine(path, work_dir=tmp_path / "work", session=spark_session)
    duck = DuckDBEngine(path)
    metric = build_metric("channel_roi", {"workspace_id": WS, **RANGE})
    try:
        before = spark.run_metric(metric).frame
        snapshots = sorted(p.name for p in (tmp_path / "work").iterdir())
        spark.run_metric(metric)
        assert sorted(p.name for p in (tmp_path / "work").iterdir()) == snapshots  # nothing re-exported
        with store(path) as con:
            con.execute("INSERT INTO channel_costs VALUES (1, 'newsletter', DATE '2024-02-01', 123.5)")
        after = spark.run_metric(metric).frame
        assert "newsletter" in set(after["channel"]) and "newsletter" not in set(before["channel"])
        assert_same(duck.run_metric(metric).frame, after)
        assert len(list((tmp_path / "work").iterdir())) == 1  # the old snapshot is gone
        # views are per engine: another engine's store on the same Spark context is not disturbed
        assert "events" not in {t.name for t in spark_session.catalog.listTables()}
    finally:
        spark.close()
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())
