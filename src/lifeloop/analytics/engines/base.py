"""The engine protocol and its selection by configuration.

An engine runs the *same* definitions: each metric's ``to_query()``, ``rfm.rfm_query`` and
``service.clv_summary_query`` (DuckDB-dialect SQL), and returns the same pandas frames whichever engine ran
them, so callers (service, CLI, API) never branch on the engine. The CLV model fits stay in NumPy: they
need one row per purchaser, which fits one machine long after the event log does not.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import pandas as pd

if TYPE_CHECKING:
    from lifeloop.analytics.metrics.base import Metric, MetricResult
    from lifeloop.analytics.rfm import RfmConfig
    from lifeloop.config import Settings

EngineName = Literal["duckdb", "spark"]
ENGINE_NAMES: tuple[EngineName, ...] = ("duckdb", "spark")


@runtime_checkable
class AnalyticsEngine(Protocol):
    """Computes analytics over the analytical store at ``path``."""

    name: str

    def run_metric(self, metric: Metric) -> MetricResult:
        """The metric's rows (after its ``finish``), the SQL that ran and timing spans."""
        ...

    def rfm(self, workspace_id: int, as_of: datetime, config: RfmConfig) -> pd.DataFrame:
        """RFM scores, layer and segments per user (``rfm_query`` without ``workspace_id``), by user id."""
        ...

    def clv_summary(self, workspace_id: int, as_of: date, freq_days: float = 7.0) -> pd.DataFrame:
        """frequency, recency, T, monetary_value per purchaser, indexed by ``user_id``."""
        ...

    def close(self) -> None:
        """Release what the engine holds (files, sessions)."""
        ...


def engine_for(settings: Settings, path: str | Path) -> AnalyticsEngine:
    """The engine ``settings.analytics_engine`` names, over the analytical store at ``path``."""
    name = settings.analytics_engine
    if name == "duckdb":
        from lifeloop.analytics.engines.duckdb import DuckDBEngine

        return DuckDBEngine(path)
    if name == "spark":
        # Imported only when chosen: pyspark (and a JVM) are not needed to run on DuckDB.
        from lifeloop.analytics.engines.spark import SparkEngine

        return SparkEngine(path, master=settings.spark_master)
    raise ValueError(f"unknown analytics engine {name!r}; known: {', '.join(ENGINE_NAMES)}")
