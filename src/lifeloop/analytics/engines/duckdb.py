"""The default engine: the existing DuckDB behaviour behind the engine protocol."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from lifeloop.analytics.metrics.base import Metric, MetricResult
from lifeloop.analytics.rfm import RfmConfig, rfm_query
from lifeloop.analytics.rollups import Rollups, read_rollups, snapshot
from lifeloop.analytics.service import clv_summary_query
from lifeloop.analytics.store import store


class DuckDBEngine:
    """Runs each query on the DuckDB store file, opened per operation (as the rest of analytics does)."""

    name = "duckdb"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def query(
        self, sql: str | Callable[[Rollups | None], str], workspace_id: int | None = None
    ) -> pd.DataFrame:
        """Rows of ``sql`` through Arrow, so DATE columns stay ``datetime.date``. ``sql`` may be built from
        the workspace's rollup coverage, read in the same transaction as the query runs."""
        with store(self.path) as con, snapshot(con):
            if callable(sql):
                sql = sql(read_rollups(con, workspace_id) if workspace_id is not None else None)
            return con.sql(sql).to_arrow_table().to_pandas()

    def run_metric(self, metric: Metric) -> MetricResult:
        with store(self.path) as con:
            return metric.run(con)

    def rfm(self, workspace_id: int, as_of: datetime, config: RfmConfig) -> pd.DataFrame:
        frame = self.query(lambda rollups: rfm_query(workspace_id, as_of, config, rollups), workspace_id)
        return frame.drop(columns="workspace_id").sort_values("user_id", ignore_index=True)

    def clv_summary(self, workspace_id: int, as_of: date, freq_days: float = 7.0) -> pd.DataFrame:
        sql = lambda rollups: clv_summary_query(workspace_id, as_of, freq_days, rollups)  # noqa: E731
        return self.query(sql, workspace_id).set_index("user_id")

    def close(self) -> None:
        """Nothing held: the store is opened per operation."""
