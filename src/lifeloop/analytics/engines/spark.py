"""The Spark engine: the same SQL definitions, transpiled by sqlglot to Spark SQL, on a Spark cluster.

Input: the analytical store's tables that the queries read (``events``, ``profile_map``,
``channel_costs``) are exported from the DuckDB file to Parquet in a work directory and registered as
Spark temporary views of the same names, so the transpiled SQL runs unchanged. The DuckDB store stays
the one place the operational data is flattened (sync: resolved events only, merges via ``profile_map``);
Spark reads the same rows, so both engines answer the same question. Reading the operational database
over JDBC instead would need a driver jar fetched at run time and a second copy of the flattening rules.
A snapshot is exported again only when the store changed (see ``_fingerprint``). With a cluster master
the work directory must be on storage the executors can read (a shared mount).

SQL: ``to_spark_sql`` = ``sqlglot.transpile(duckdb → spark)`` plus the rewrites in ``REWRITES``, each
closing a gap where the two engines would parse the same text into different numbers:

- ``decimal_literals_as_double``: ``7.0`` is a DECIMAL in both, but DuckDB divides decimals in DOUBLE while
  Spark keeps DECIMAL (``DATEDIFF(...) / 7.0`` → ``decimal(9,6)``, 6 digits). Spark gets ``CAST(7.0 AS
  DOUBLE)``.
- ``date_diff_boundaries``: DuckDB's ``DATE_DIFF(unit, a, b)`` counts unit *boundaries* crossed; Spark's
  ``DATEDIFF(unit, a, b)`` counts whole units elapsed (0.9 s → 1.1 s: 1 vs 0). Spark gets the difference of
  both sides truncated to the unit (days: of their dates).

Results come back through Arrow (``DataFrame.toArrow``) and are cast to the column types DuckDB gives the
same statement (bound, not run: ``LIMIT 0``), so a frame has the same dtypes whichever engine made it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from lifeloop.analytics.metrics.base import Metric, MetricResult
from lifeloop.analytics.rfm import RfmConfig, rfm_query
from lifeloop.analytics.rollups import METRIC_TABLES, Rollups, read_all_rollups, snapshot
from lifeloop.analytics.service import clv_summary_query
from lifeloop.analytics.store import store

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Tables the queries read (the events and their rollups); rfm_scores / sync_state are outputs and bookkeeping.
TABLES = ("events", "profile_map", "channel_costs", *METRIC_TABLES)

# Session settings that make Spark SQL mean what the DuckDB SQL means.
SQL_CONF = {
    # The store keeps naive UTC timestamps; TIMESTAMP literals must be naive too, and any conversion UTC.
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.timestampType": "TIMESTAMP_NTZ",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


# ---------------------------------------------------------------------------------------------- SQL


def decimal_literals_as_double(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Literal) and not node.is_string and any(c in node.this for c in ".eE"):
        parent = node.parent
        if not (isinstance(parent, exp.Cast) and parent.this is node):
            return exp.cast(node.copy(), exp.DataType.build("double"))
    return node


_TRUNCATABLE = {"SECOND", "MINUTE", "HOUR"}


def date_diff_boundaries(node: exp.Expression) -> exp.Expression:
    if not (isinstance(node, exp.DateDiff) and node.args.get("date_part_boundary")):
        return node
    unit = node.text("unit").upper()
    end, start = node.this, node.expression
    if unit == "DAY":
        as_date = exp.DataType.build("date")
        return exp.DateDiff(
            this=exp.cast(end.copy(), as_date),
            expression=exp.cast(start.copy(), as_date),
            unit=exp.var("DAY"),
        )
    if unit in _TRUNCATABLE:
        return exp.DateDiff(
            this=exp.TimestampTrunc(this=end.copy(), unit=exp.var(unit)),
            expression=exp.TimestampTrunc(this=start.copy(), unit=exp.var(unit)),
            unit=exp.var(unit),
        )
    raise sqlglot.errors.UnsupportedError(f"DATE_DIFF by {unit!r} has no Spark rewrite")


REWRITES: tuple[Callable[[exp.Expression], exp.Expression], ...] = (
    decimal_literals_as_double,
    date_diff_boundaries,
)


def to_spark_sql(sql: str, fired: dict[str, int] | None = None) -> str:
    """``sql`` (DuckDB dialect, one statement) as Spark SQL; ``fired`` counts the rewrites applied."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    for rewrite in REWRITES:

        def counted(
            node: exp.Expression, rewrite: Callable[[exp.Expression], exp.Expression] = rewrite
        ) -> Any:
            out = rewrite(node)
            if out is not node and fired is not None:
                fired[rewrite.__name__] = fired.get(rewrite.__name__, 0) + 1
            return out

        tree = tree.transform(counted)
    return tree.sql(dialect="spark", unsupported_level=ErrorLevel.RAISE)


# ------------------------------------------------------------------------------------------- session

_sessions_lock = threading.Lock()


def is_local(master: str) -> bool:
    return master == "local" or master.startswith("local[")


def spark_session(master: str, app_name: str = "lifeloop-analytics") -> SparkSession:
    """The process's Spark session for ``master`` (created once: a JVM start takes seconds)."""
    with _sessions_lock:
        if is_local(master):
            # Local mode never needs an interface beyond loopback (and must not resolve the host name).
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        with warnings.catch_warnings():
            # pyspark 4.x warns on pandas 3 at import; we convert through Arrow ourselves.
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"pyspark\..*")
            from pyspark.sql import SparkSession

            builder = SparkSession.builder.master(master).appName(app_name)
            builder = builder.config("spark.ui.enabled", "false")
            builder = builder.config("spark.ui.showConsoleProgress", "false")
            if is_local(master):
                builder = builder.config("spark.driver.host", "127.0.0.1").config(
                    "spark.driver.bindAddress", "127.0.0.1"
                )
                # One shuffle partition per local core: the default 200 only add scheduling overhead.
                cores = master[len("local[") : -1] if master.startswith("local[") else "1"
                partitions = (os.cpu_count() or 2) if cores == "*" else int(cores.split(",")[0])
                builder = builder.config("spark.sql.shuffle.partitions", str(partitions))
            for key, value in SQL_CONF.items():
                builder = builder.config(key, value)
            session = builder.getOrCreate()
        # getOrCreate returns an existing session unchanged: make sure the SQL semantics hold on it too.
        for key, value in SQL_CONF.items():
            session.conf.set(key, value)
        return session


# -------------------------------------------------------------------------------------------- engine


class SparkEngine:
    """Runs the analytics SQL on Spark over a Parquet snapshot of the DuckDB store at ``path``."""

    name = "spark"

    def __init__(
        self,
        path: str | Path,
        *,
        master: str = "local[2]",
        work_dir: str | Path | None = None,
        session: SparkSession | None = None,
    ):
        self.path = Path(path)
        self.master = master
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="lifeloop-spark-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._base_session = session
        self._session: SparkSession | None = None
        self._snapshot: str | None = None
        self._rollups: dict[int, Rollups] = {}  # per workspace, as of the snapshot
        self._lock = threading.Lock()
        self.rewrites: dict[str, int] = {}  # rewrite name → times applied, over this engine's queries

    @property
    def session(self) -> SparkSession:
        """This engine's own SQL session (temporary views are per session) on the process's Spark context."""
        if self._session is None:
            base = self._base_session or spark_session(self.master)
            self._session = base.newSession()
            for key, value in SQL_CONF.items():
                self._session.conf.set(key, value)
        return self._session

    # -------------------------------------------------------------------------------- snapshot

    def _fingerprint(self, con: Any) -> str:
        """Changes whenever a sync, a merge or a cost upload changed what the queries read."""
        row = con.execute(
            """SELECT (SELECT COUNT(*) FROM events), (SELECT MAX(id) FROM events),
                      (SELECT COUNT(*) FROM profile_map), (SELECT MAX(updated_at) FROM profile_map),
                      (SELECT SUM(canonical_id) FROM profile_map),
                      (SELECT COUNT(*) FROM channel_costs), (SELECT SUM(cost) FROM channel_costs),
                      (SELECT MAX(synced_at) FROM sync_state),
                      (SELECT COUNT(*) FROM profile_days), (SELECT SUM(events) FROM rollup_state)"""
        ).fetchone()
        return hashlib.sha256(repr(row).encode()).hexdigest()[:16]

    def refresh(self) -> None:
        """Export the store's tables to Parquet and (re)register them as views, unless unchanged."""
        with self._lock, store(self.path) as con, snapshot(con):  # tables and fingerprint of one state
            key = self._fingerprint(con)
            if key == self._snapshot:
                return
            target = self.work_dir / f"snapshot-{key}"
            if not target.exists():
                partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=self.work_dir))
                for table in TABLES:
                    file = str(partial / f"{table}.parquet").replace("'", "''")
                    con.execute(f"COPY {table} TO '{file}' (FORMAT parquet)")
                partial.rename(target)  # readers only ever see a complete snapshot
            self._rollups = read_all_rollups(con)
            for table in TABLES:
                self.session.read.parquet(str(target / f"{table}.parquet")).createOrReplaceTempView(table)
            previous, self._snapshot = self._snapshot, key
        if previous is not None:
            shutil.rmtree(self.work_dir / f"snapshot-{previous}", ignore_errors=True)

    # --------------------------------------------------------------------------------- queries

    def _duckdb_schema(self, sql: str) -> pa.Schema:
        """The Arrow schema DuckDB gives ``sql`` (planned on an empty result, not computed)."""
        with store(self.path) as con:
            return con.sql(f"SELECT * FROM ({sql}) LIMIT 0").to_arrow_table().schema

    def query(self, sql: str, timings: dict[str, float] | None = None) -> tuple[pd.DataFrame, str]:
        """Rows of the DuckDB-dialect ``sql`` computed by Spark, typed as DuckDB types them."""
        timings = timings if timings is not None else {}
        started = time.perf_counter()
        self.refresh()
        timings["load"] = time.perf_counter() - started
        return self._run(sql, timings)

    def _run(self, sql: str, timings: dict[str, float]) -> tuple[pd.DataFrame, str]:
        """``sql`` transpiled and run on the current snapshot (no refresh: the caller chose the snapshot)."""
        started = time.perf_counter()
        spark_sql = to_spark_sql(sql, self.rewrites)
        timings["transpile"] = time.perf_counter() - started
        started = time.perf_counter()
        table = self.session.sql(spark_sql).toArrow()
        timings["run"] = time.perf_counter() - started
        schema = self._duckdb_schema(sql)
        if table.schema.names != schema.names:
            raise RuntimeError(f"Spark answered columns {table.schema.names}, DuckDB {schema.names}")
        return table.cast(schema).to_pandas(), spark_sql

    def query_built(
        self,
        build: Callable[[Rollups | None], str],
        workspace_id: int,
        timings: dict[str, float] | None = None,
    ) -> tuple[pd.DataFrame, str]:
        """``query`` of the SQL ``build`` makes from the workspace's rollup coverage in the snapshot."""
        timings = timings if timings is not None else {}
        started = time.perf_counter()
        self.refresh()
        timings["load"] = time.perf_counter() - started
        started = time.perf_counter()
        sql = build(self._rollups.get(workspace_id))
        timings["build"] = time.perf_counter() - started
        return self._run(sql, timings)

    def run_metric(self, metric: Metric) -> MetricResult:
        timings: dict[str, float] = {}
        frame, spark_sql = self.query_built(metric.query, metric.workspace_id, timings)
        started = time.perf_counter()
        frame = metric.finish(frame)
        timings["finish"] = time.perf_counter() - started
        return MetricResult(metric, frame, spark_sql, timings)

    def rfm(self, workspace_id: int, as_of: datetime, config: RfmConfig) -> pd.DataFrame:
        frame, _ = self.query_built(
            lambda rollups: rfm_query(workspace_id, as_of, config, rollups), workspace_id
        )
        return frame.drop(columns="workspace_id").sort_values("user_id", ignore_index=True)

    def clv_summary(self, workspace_id: int, as_of: date, freq_days: float = 7.0) -> pd.DataFrame:
        frame, _ = self.query_built(
            lambda rollups: clv_summary_query(workspace_id, as_of, freq_days, rollups), workspace_id
        )
        return frame.set_index("user_id")

    def close(self) -> None:
        """Drop the views and the snapshot files; the Spark context stays for the process (it is shared)."""
        if self._session is not None and self._snapshot is not None:
            for table in TABLES:
                self._session.catalog.dropTempView(table)
            shutil.rmtree(self.work_dir / f"snapshot-{self._snapshot}", ignore_errors=True)
        self._snapshot = None
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
