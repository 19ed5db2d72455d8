"""The default engine: the existing DuckDB behaviour behind the engine protocol."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pandas as pd

from lifeloop.analytics.metrics.base import Metric, MetricResult
from lifeloop.analytics.rfm import RfmConfig, rfm_query
from lifeloop.analytics.service import clv_summary_query
from lifeloop.analytics.store import store


class DuckDBEngine:
    """Runs each query on the DuckDB store file, opened per operation (as the rest of analytics does)."""

    name = "duckdb"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def query(self, sql: str) -> pd.DataFrame:
        """Rows of ``sql`` through Arrow, so DATE columns stay ``datetime.date``."""
        with store(self.path) as con:
            return con.sql(sql).to_arrow_table().to_pandas()

    def run_metric(self, metric: Metric) -> MetricResult:
        with store(self.path) as con:
            return metric.run(con)

    def rfm(self, workspace_id: int, as_of: datetime, config: RfmConfig) -> pd.DataFrame:
        frame = self.query(rfm_query(workspace_id, as_of, config))
        return frame.drop(columns="workspace_id").sort_values("user_id", ignore_index=True)

    def clv_summary(self, workspace_id: int, as_of: date, freq_days: float = 7.0) -> pd.DataFrame:
        return self.query(clv_summary_query(workspace_id, as_of, freq_days)).set_index("user_id")

    def close(self) -> None:
        """Nothing held: the store is opened per operation."""
