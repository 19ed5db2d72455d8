"""The metric SQL stays portable (transpiles to Spark SQL) and parameters can never change its meaning."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot.errors import ErrorLevel

from lifeloop.analytics.metrics import METRICS, build_metric
from lifeloop.analytics.metrics.base import lit
from lifeloop.analytics.rfm import RfmConfig, rfm_query
from lifeloop.analytics.rollups import Rollups
from lifeloop.analytics.service import clv_summary_query
from lifeloop.analytics.store import store
from lifeloop.errors import InvalidInput
from tests.analytics.generated import generate, load

EXTRA: dict[str, dict[str, Any]] = {
    "funnel": {"steps": ["Product Viewed", "Order Completed"]},
    "paths": {"event": "Product Added"},
    "journey_conversion": {"journey_id": "1"},
}
FILTERS = {"segment": "vip", "stage": "loyal", "stage_model": "line", "channel": "line"}


def queries() -> list[tuple[str, str]]:
    out = []
    for name in METRICS:
        for filtered in (False, True):
            params = {
                "workspace_id": 1,
                "start": date(2024, 1, 1),
                "end": date(2024, 3, 1),
                **EXTRA.get(name, {}),
            }
            if filtered:
                params.update(FILTERS)
            out.append((f"{name}{'-filtered' if filtered else ''}", build_metric(name, params).to_query()))
    # the same answers read from the per-profile rollups
    covered = Rollups(1, datetime(2024, 2, 1), date(2024, 2, 1), date(2024, 2, 1))
    at = datetime(2024, 3, 1, tzinfo=UTC)
    for name, extra in (("retention", {}), ("cohort_retention", {"period": "month"}), ("new_users", {})):
        sql = build_metric(
            name, {"workspace_id": 1, "start": date(2024, 1, 1), "end": date(2024, 3, 1), **extra}
        )
        out.append((f"{name}-rollups", sql.query(covered)))
    for method in ("quantile", "thresholds"):
        out.append((f"rfm-{method}", rfm_query(1, at, RfmConfig(method=method))))
        out.append((f"rfm-{method}-rollups", rfm_query(1, at, RfmConfig(method=method), covered)))
    out.append(("clv-summary", clv_summary_query(1, date(2024, 3, 1))))
    out.append(("clv-summary-rollups", clv_summary_query(1, date(2024, 3, 1), 7.0, covered)))
    assert all(("profile_summary" in q or "cohort_counts" in q) == n.endswith("-rollups") for n, q in out)
    return out


@pytest.mark.parametrize(("name", "sql"), queries(), ids=[n for n, _ in queries()])
def test_transpiles_to_spark(name: str, sql: str) -> None:
    spark = sqlglot.transpile(sql, read="duckdb", write="spark", unsupported_level=ErrorLevel.RAISE)
    assert len(spark) == 1 and "SELECT" in spark[0]
    # and Spark's dialect reads its own output back
    sqlglot.parse_one(spark[0], read="spark")


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("line", "'line'"),
        ("it's", "'it''s'"),
        (date(2024, 2, 29), "DATE '2024-02-29'"),
        (datetime(2024, 1, 2, 3, 4, 5, 6), "TIMESTAMP '2024-01-02 03:04:05.000006'"),
        (3, "3"),
        (None, "NULL"),
        (True, "TRUE"),
    ],
)
def test_literals(value: Any, literal: str) -> None:
    assert lit(value) == literal


def test_quotes_in_parameters_are_data(tmp_path: Path) -> None:
    path = tmp_path / "a.duckdb"
    history = generate(seed=1, users=30)
    load(history, path)
    hostile = "line' OR '1'='1"
    params = {"workspace_id": 1, "start": date(2024, 1, 1), "end": date(2024, 2, 1), "channel": hostile}
    with store(path) as con:
        frame = build_metric("new_users", params).run(con).frame
        events = con.execute("SELECT count(*) FROM events").fetchone()
    assert frame["new_users"].sum() == 0  # nobody was acquired through a channel of that name
    assert events == (len(history.events),)  # the store is untouched


def test_unknown_parameters_are_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        build_metric("new_users", {"workspace_id": 1, "start": "2024-01-01", "end": "2024-01-02", "x": 1})
    assert caught.value.field == "x"


def test_concurrent_readers_in_one_process(tmp_path: Path) -> None:
    """API requests run metrics from a thread pool, each opening the store: none may disturb another."""
    import threading

    from lifeloop.analytics.service import run_metric

    path = tmp_path / "a.duckdb"
    load(generate(seed=2, users=100), path)
    errors: list[BaseException] = []
    totals: list[int] = []

    def reader() -> None:
        try:
            for _ in range(5):
                result = run_metric(path, 1, "new_users", {"start": "2024-01-01", "end": "2024-05-29"})
                totals.append(int(result.frame["new_users"].sum()))
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(totals) == 30 and len(set(totals)) == 1 and totals[0] > 0
