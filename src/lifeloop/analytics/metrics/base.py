"""Metrics as query objects: parameters in, ``to_query()`` builds SQL, ``run()`` executes it.

The SQL is written in DuckDB's dialect but kept to what ``sqlglot`` transpiles to Spark SQL: CTEs,
window functions, ``CASE``, ``DATE_TRUNC``, ``DATE_DIFF``, ``INTERVAL`` arithmetic and
``UNNEST(GENERATE_SERIES(…))`` for calendars (Spark: ``EXPLODE(SEQUENCE(…))``). Parameters are
inlined as typed literals (never raw user text: strings are quoted by ``lit``), so one statement is
self-contained and the same text can run on another engine.

Every metric reads the common CTEs:

- ``ev``: the workspace's events with ``user_id`` = the canonical profile (merges followed);
- ``uev``: ``ev`` restricted to the population chosen by the ``segment`` / ``stage`` / ``channel``
  filters (identical to ``ev`` without filters).

A user is *active* on a day when they have an interaction (``interactive``) that day; a user's
*first day* is their first active day; days are calendar days in the workspace's time zone.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import duckdb
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lifeloop.errors import InvalidInput

if TYPE_CHECKING:
    from lifeloop.analytics.rollups import Rollups

log = logging.getLogger(__name__)

ORDER_EVENT = "Order Completed"
STAGE_EVENT = "Lifecycle Stage Entered"
JOURNEY_EVENT = "Journey Entered"
SEGMENT_ENTERED = "Segment Entered"
SEGMENT_EXITED = "Segment Exited"


def lit(value: Any) -> str:
    """A SQL literal for a parameter value (strings quoted, dates typed)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.strftime('%Y-%m-%d %H:%M:%S.%f')}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def days_between(start: str, end: str) -> str:
    """A one-column ``day`` calendar from ``start`` to ``end`` (SQL expressions), inclusive."""
    return (
        f"SELECT CAST(d AS DATE) AS day FROM UNNEST(GENERATE_SERIES({start}, {end}, INTERVAL 1 DAY)) AS t(d)"
    )


def shift(day_expr: str, days: int) -> str:
    """``day_expr`` moved by a whole number of days, still a DATE."""
    sign = "+" if days >= 0 else "-"
    return f"CAST({day_expr} {sign} INTERVAL {abs(days)} DAY AS DATE)"


def events_cte(workspace_id: int) -> str:
    """``ev``: the workspace's events, ``user_id`` being the canonical (surviving) profile."""
    return f"""ev AS (
    SELECT e.id, COALESCE(m.canonical_id, e.profile_id) AS user_id, e.type, e.event, e.name, e.category,
           e.ts, e.day, e.interactive, e.revenue, e.channel, e.stage, e.previous_stage, e.lifecycle_model,
           e.journey_id, e.journey_group, e.segment
    FROM events e
    LEFT JOIN (
        -- only merged-away profiles: a small build side, so the join costs little on every query
        SELECT profile_id, canonical_id FROM profile_map
        WHERE workspace_id = {lit(workspace_id)} AND canonical_id <> profile_id
    ) m ON m.profile_id = e.profile_id
    WHERE e.workspace_id = {lit(workspace_id)}
)"""


class MetricResult:
    """A metric's rows plus what the console needs to draw them."""

    def __init__(self, metric: Metric, frame: pd.DataFrame, sql: str, timings: dict[str, float]):
        self.metric = metric
        self.frame = frame
        self.sql = sql
        self.timings = timings

    def to_json(self) -> dict[str, Any]:
        """Chart-ready JSON: an ECharts ``dataset``-style table plus how to draw it."""
        frame = self.frame
        data = [[_json_value(v) for v in row] for row in frame.itertuples(index=False, name=None)]
        return {
            "metric": self.metric.name,
            "params": self.metric.model_dump(mode="json", exclude={"workspace_id"}),
            "columns": list(frame.columns),
            "data": data,
            "chart": self.metric.chart(frame),
            "timings_ms": {k: round(v * 1000, 3) for k, v in self.timings.items()},
        }


def _json_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return _json_value(value.item())
    return value


class Metric(BaseModel):
    """Base of every metric: the common filters and the build / run protocol."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ClassVar[str]
    title: ClassVar[str]

    workspace_id: int
    start: date = Field(
        description="First day of the range (workspace time zone), inclusive; default end − 89 days."
    )
    end: date = Field(description="Last day of the range, inclusive; default today (UTC).")
    segment: str | None = Field(default=None, description="Only users currently in this segment.")
    stage: str | None = Field(default=None, description="Only users whose current lifecycle stage is this.")
    stage_model: str | None = Field(default=None, description="Lifecycle model the `stage` filter refers to.")
    channel: str | None = Field(default=None, description="Only users acquired through this channel.")

    @field_validator("channel")
    @classmethod
    def _lower_channel(cls, value: str | None) -> str | None:
        return value.strip().lower() if value else value

    @model_validator(mode="before")
    @classmethod
    def _default_range(cls, data: Any) -> Any:
        """Without a range, the last 90 days: what a dashboard shows first."""
        if not isinstance(data, dict) or (data.get("start") and data.get("end")):
            return data
        data = dict(data)
        if not data.get("end"):
            data["end"] = datetime.now(UTC).date()
        if not data.get("start"):
            end = data["end"]
            try:
                end = end if isinstance(end, date) else date.fromisoformat(str(end))
            except ValueError:
                end = datetime.now(UTC).date()  # the field validator reports the bad end itself
            data["start"] = end - timedelta(days=89)
        return data

    @model_validator(mode="after")
    def _range(self) -> Metric:
        if self.end < self.start:
            raise ValueError("end must not be before start")
        if (self.end - self.start).days > 3660:
            raise ValueError("the date range may span at most 10 years")
        return self

    @classmethod
    def parse(cls, params: dict[str, Any]) -> Metric:
        """Build from loosely typed parameters (query string, CLI), as InvalidInput on bad values."""
        try:
            return cls.model_validate(params)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or None
            raise InvalidInput(
                f"{cls.name}: {where + ': ' if where else ''}{first['msg']}", field=where
            ) from None

    # ------------------------------------------------------------------ SQL building blocks

    def common_ctes(self) -> list[str]:
        """``ev`` and ``uev`` (see the module docstring)."""
        ctes = [events_cte(self.workspace_id)]
        conditions: list[str] = []
        as_of = shift(lit(self.end), 1)  # filters describe the population at the end of the range
        if self.channel is not None:
            ctes.append("""acquisition AS (
    SELECT user_id, channel FROM (
        SELECT user_id, channel, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts, id) AS rn
        FROM ev WHERE channel IS NOT NULL
    ) t WHERE rn = 1
)""")
            conditions.append(
                f"user_id IN (SELECT user_id FROM acquisition WHERE channel = {lit(self.channel)})"
            )
        if self.stage is not None:
            model = f" AND lifecycle_model = {lit(self.stage_model)}" if self.stage_model else ""
            ctes.append(f"""current_stage AS (
    SELECT user_id, stage FROM (
        SELECT user_id, stage, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts DESC, id DESC) AS rn
        FROM ev WHERE event = {lit(STAGE_EVENT)} AND day < {as_of}{model}
    ) t WHERE rn = 1
)""")
            conditions.append(
                f"user_id IN (SELECT user_id FROM current_stage WHERE stage = {lit(self.stage)})"
            )
        if self.segment is not None:
            ctes.append(f"""segment_state AS (
    SELECT user_id, event FROM (
        SELECT user_id, event, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts DESC, id DESC) AS rn
        FROM ev WHERE event IN ({lit(SEGMENT_ENTERED)}, {lit(SEGMENT_EXITED)})
          AND segment = {lit(self.segment)} AND day < {as_of}
    ) t WHERE rn = 1
)""")
            conditions.append(
                f"user_id IN (SELECT user_id FROM segment_state WHERE event = {lit(SEGMENT_ENTERED)})"
            )
        where = " AND ".join(conditions) if conditions else "1 = 1"
        ctes.append(f"uev AS (SELECT * FROM ev WHERE {where})")
        return ctes

    def first_days_cte(self) -> str:
        """``first_days(user_id, first_day)``: each user's first active day (over all history)."""
        return (
            "first_days AS (SELECT user_id, MIN(day) AS first_day FROM uev WHERE interactive "
            "GROUP BY user_id)"
        )

    @staticmethod
    def with_(ctes: list[str], select: str) -> str:
        return "WITH " + ",\n".join(ctes) + "\n" + select

    # ------------------------------------------------------------------ protocol

    @property
    def filtered(self) -> bool:
        """Whether a population filter (segment, stage, channel) applies."""
        return self.segment is not None or self.stage is not None or self.channel is not None

    @abstractmethod
    def to_query(self) -> str:
        """The SQL computing this metric from the raw events."""

    def rollup_query(self, rollups: Rollups) -> str | None:
        """The same result from the per-profile rollups (``lifeloop.analytics.rollups``), or None when they
        cannot answer these parameters (default: never)."""
        return None

    def query(self, rollups: Rollups | None = None) -> str:
        """The SQL to run: from the rollups when given and they answer these parameters, else raw events."""
        sql = self.rollup_query(rollups) if rollups is not None else None
        return sql if sql is not None else self.to_query()

    def finish(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Engine-independent post-processing of the query's rows (default: none)."""
        return frame

    def chart(self, frame: pd.DataFrame) -> dict[str, Any]:
        """How the console draws the result (ECharts series over ``columns``)."""
        return {"type": "table"}

    def run(self, con: duckdb.DuckDBPyConnection, *, use_rollups: bool = True) -> MetricResult:
        """Build and execute the query on the analytics store, with timing spans (``use_rollups=False``:
        always from the raw events)."""
        from lifeloop.analytics.rollups import read_rollups, snapshot

        timings: dict[str, float] = {}
        started = time.perf_counter()
        with snapshot(con):  # the coverage read and the query see the same store state
            rollups = read_rollups(con, self.workspace_id) if use_rollups else None
            sql = self.query(rollups)
            timings["build"] = time.perf_counter() - started
            started = time.perf_counter()
            # Through Arrow, DATE columns stay ``datetime.date`` (``.df()`` would turn them into timestamps).
            frame = con.sql(sql).to_arrow_table().to_pandas()
        timings["run"] = time.perf_counter() - started
        started = time.perf_counter()
        frame = self.finish(frame)
        timings["finish"] = time.perf_counter() - started
        log.debug("metric %s: %s", self.name, {k: f"{v * 1000:.1f} ms" for k, v in timings.items()})
        return MetricResult(self, frame, sql, timings)


def line_chart(x: str, *series: str, kind: str = "line") -> dict[str, Any]:
    return {"type": kind, "x": x, "series": list(series)}
