"""Retention: N-day (D1 / D7 / D30) per daily cohort, weekly / monthly cohort tables, churn rate."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pandas as pd
from pydantic import Field, field_validator

from lifeloop.analytics.metrics.base import Metric, lit, shift

if TYPE_CHECKING:
    from lifeloop.analytics.rollups import Rollups

Period = Literal["week", "month"]


def period_start(day: date, period: Period) -> date:
    """The Monday of ``day``'s ISO week, or the first of its month."""
    return day - timedelta(days=day.weekday()) if period == "week" else day.replace(day=1)


def periods_between(earlier: str, later: str, period: Period) -> str:
    """Whole weeks / months from period start ``earlier`` to period start ``later`` (SQL expressions)."""
    if period == "week":
        return f"CAST(DATE_DIFF('day', {earlier}, {later}) / 7 AS INTEGER)"
    return (
        f"((EXTRACT(YEAR FROM {later}) - EXTRACT(YEAR FROM {earlier})) * 12"
        f" + EXTRACT(MONTH FROM {later}) - EXTRACT(MONTH FROM {earlier}))"
    )


def observed_from_rollups(workspace_id: int, as_of: date | None) -> str:
    """``observed(last_day)``: ``as_of``, else the newest event's day as the rollups recorded it."""
    return (
        f"observed AS (SELECT COALESCE({lit(as_of)}, MAX(max_day)) AS last_day FROM rollup_state "
        f"WHERE workspace_id = {lit(workspace_id)})"
    )


def _split_ints(value: Any) -> Any:
    if isinstance(value, str):
        return [int(v) for v in value.replace(" ", "").split(",") if v]
    return value


class Retention(Metric):
    """For each day's cohort of new users (first active day in the range): the share active again exactly
    N days later, for each N in ``days``. A rate is empty while day N is not yet observed (after ``as_of``,
    by default the last day with any event)."""

    name: ClassVar[str] = "retention"
    title: ClassVar[str] = "N-day retention"

    days: list[int] = Field(default=[1, 7, 30], min_length=1, max_length=12)
    as_of: date | None = Field(default=None, description="Last observed day; default the newest event's day.")

    _split = field_validator("days", mode="before")(_split_ints)

    @field_validator("days")
    @classmethod
    def _positive(cls, days: list[int]) -> list[int]:
        if any(d < 1 or d > 3650 for d in days):
            raise ValueError("each day must be between 1 and 3650")
        return sorted(set(days))

    def to_query(self) -> str:
        ctes = self.common_ctes()
        # First days from the (fewer) distinct user-days: one pass over the events instead of two.
        ctes.append("user_days AS (SELECT DISTINCT user_id, day FROM uev WHERE interactive)")
        ctes.append("first_days AS (SELECT user_id, MIN(day) AS first_day FROM user_days GROUP BY user_id)")
        ctes.append(f"observed AS (SELECT COALESCE({lit(self.as_of)}, MAX(day)) AS last_day FROM ev)")
        ctes.append(f"""offsets AS (
    SELECT f.user_id, f.first_day, DATE_DIFF('day', f.first_day, a.day) AS k
    FROM first_days f
    JOIN user_days a ON a.user_id = f.user_id
    WHERE f.first_day BETWEEN {lit(self.start)} AND {lit(self.end)}
      AND DATE_DIFF('day', f.first_day, a.day) IN (0, {", ".join(str(d) for d in self.days)})
)""")
        # (user, k) is unique in offsets (user-days are distinct), so plain counts suffice: no DISTINCT.
        counts = ",\n           ".join(
            f"COUNT(CASE WHEN k = {d} THEN 1 END) AS d{d}_users" for d in self.days
        )
        ctes.append(f"""cohorts AS (
    SELECT first_day AS cohort, COUNT(CASE WHEN k = 0 THEN 1 END) AS users,
           {counts}
    FROM offsets GROUP BY first_day
)""")
        return self.with_(ctes, self._select())

    def _select(self, where: str = "") -> str:
        rates = ", ".join(
            f"d{d}_users, CASE WHEN {shift('c.cohort', d)} <= o.last_day "
            f"THEN CAST(d{d}_users AS DOUBLE) / users END AS d{d}"
            for d in self.days
        )
        return (
            f"SELECT c.cohort, c.users, {rates} FROM cohorts c CROSS JOIN observed o{where} ORDER BY cohort"
        )

    def rollup_query(self, rollups: Rollups) -> str | None:
        """From ``cohort_counts`` (day offsets), corrected for merges; not with population filters."""
        if self.filtered:
            return None
        from lifeloop.analytics.rollups import cohort_counts_cte

        ks = ", ".join(str(k) for k in (0, *self.days))
        where = f"first_day BETWEEN {lit(self.start)} AND {lit(self.end)} AND k IN ({ks})"
        ctes = cohort_counts_cte(self.workspace_id, "day", where)
        counts = ",\n           ".join(
            f"CAST(SUM(CASE WHEN k = {d} THEN users ELSE 0 END) AS BIGINT) AS d{d}_users" for d in self.days
        )
        ctes.append(f"""cohorts AS (
    SELECT first_day AS cohort, CAST(SUM(CASE WHEN k = 0 THEN users ELSE 0 END) AS BIGINT) AS users,
           {counts}
    FROM counts GROUP BY first_day
)""")
        ctes.append(observed_from_rollups(self.workspace_id, self.as_of))
        # a cohort emptied by merges (its users' first day moved) is no cohort, as in the raw query
        return self.with_(ctes, self._select(" WHERE c.users > 0"))

    def chart(self, frame: pd.DataFrame) -> dict[str, Any]:
        return {"type": "line", "x": "cohort", "series": [f"d{d}" for d in self.days]}


class CohortRetention(Metric):
    """Weekly or monthly cohorts (by first active day in the range) × period offset: the share of the cohort
    active in that later period. Offsets not yet begun by ``as_of`` are left out."""

    name: ClassVar[str] = "cohort_retention"
    title: ClassVar[str] = "Cohort retention"

    period: Period = "week"
    periods: int = Field(default=8, ge=1, le=60)
    as_of: date | None = None

    def to_query(self) -> str:
        trunc = f"'{self.period}'"
        ctes = self.common_ctes()
        ctes.append(self.first_days_cte())
        ctes.append(f"observed AS (SELECT COALESCE({lit(self.as_of)}, MAX(day)) AS last_day FROM ev)")
        ctes.append(f"""cohort AS (
    SELECT user_id, CAST(DATE_TRUNC({trunc}, first_day) AS DATE) AS cohort FROM first_days
    WHERE first_day BETWEEN {lit(self.start)} AND {lit(self.end)}
)""")
        ctes.append(
            f"active AS (SELECT DISTINCT user_id, CAST(DATE_TRUNC({trunc}, day) AS DATE) AS period "
            "FROM uev WHERE interactive)"
        )
        # One row per (user, period) in active, so (cohort, user, k) is unique: COUNT needs no DISTINCT.
        ctes.append(f"""offsets AS (
    SELECT c.cohort, c.user_id, {periods_between("c.cohort", "a.period", self.period)} AS k
    FROM cohort c JOIN active a ON a.user_id = c.user_id AND a.period >= c.cohort
)""")
        ctes.append("sizes AS (SELECT cohort, COUNT(*) AS users FROM cohort GROUP BY cohort)")
        ctes.append(self._grid())
        observed_k = self._observed_k(trunc)
        return self.with_(
            ctes,
            f"""SELECT g.cohort, g.k AS period, g.users AS cohort_users,
       COUNT(x.user_id) AS active_users,
       CAST(COUNT(x.user_id) AS DOUBLE) / g.users AS rate
FROM grid g CROSS JOIN observed o
LEFT JOIN offsets x ON x.cohort = g.cohort AND x.k = g.k
WHERE g.k <= {observed_k}
GROUP BY g.cohort, g.k, g.users
ORDER BY g.cohort, g.k""",
        )

    def _grid(self) -> str:
        """Every (cohort, offset) to report, from the cohort sizes in ``sizes``."""
        return f"""grid AS (
    SELECT s.cohort, s.users, n.k
    FROM sizes s CROSS JOIN UNNEST(GENERATE_SERIES(0, {self.periods - 1})) AS n(k)
)"""

    def _observed_k(self, trunc: str) -> str:
        """The last offset of a cohort that has been observed (by ``observed.last_day``)."""
        return periods_between("g.cohort", f"CAST(DATE_TRUNC({trunc}, o.last_day) AS DATE)", self.period)

    def rollup_query(self, rollups: Rollups) -> str | None:
        """From ``cohort_counts`` (week / month offsets by first day), corrected for merges; not with
        population filters."""
        if self.filtered:
            return None
        from lifeloop.analytics.rollups import cohort_counts_cte

        trunc = f"'{self.period}'"
        where = f"first_day BETWEEN {lit(self.start)} AND {lit(self.end)} AND k < {self.periods}"
        ctes = cohort_counts_cte(self.workspace_id, self.period, where)
        ctes.append(observed_from_rollups(self.workspace_id, self.as_of))
        cohort = f"CAST(DATE_TRUNC({trunc}, first_day) AS DATE)"
        ctes.append(
            f"cohort_k AS (SELECT {cohort} AS cohort, k, CAST(SUM(users) AS BIGINT) AS n FROM counts "
            f"GROUP BY {cohort}, k)"
        )
        # every user is active in the period of their first day: offset 0 is the cohort's size
        ctes.append("sizes AS (SELECT cohort, n AS users FROM cohort_k WHERE k = 0 AND n > 0)")
        ctes.append(self._grid())
        observed_k = self._observed_k(trunc)
        return self.with_(
            ctes,
            f"""SELECT g.cohort, g.k AS period, g.users AS cohort_users,
       COALESCE(x.n, 0) AS active_users,
       CAST(COALESCE(x.n, 0) AS DOUBLE) / g.users AS rate
FROM grid g CROSS JOIN observed o
LEFT JOIN cohort_k x ON x.cohort = g.cohort AND x.k = g.k
WHERE g.k <= {observed_k}
ORDER BY g.cohort, g.k""",
        )

    def chart(self, frame: pd.DataFrame) -> dict[str, Any]:
        return {"type": "heatmap", "x": "period", "y": "cohort", "value": "rate"}


class ChurnRate(Metric):
    """Per week / month in the range: of the users active in the previous period, the share not active in
    this one. The current, unfinished period overstates churn."""

    name: ClassVar[str] = "churn_rate"
    title: ClassVar[str] = "Churn rate"

    period: Period = "month"

    def _span(self) -> tuple[date, date]:
        """The days whose activity counts: from the period before the first one to the end of the last."""
        first, last = period_start(self.start, self.period), period_start(self.end, self.period)
        if self.period == "week":
            return first - timedelta(days=7), last + timedelta(days=6)
        before = period_start(first - timedelta(days=1), "month")
        after = period_start(last + timedelta(days=31), "month") - timedelta(days=1)
        return before, after

    def to_query(self) -> str:
        since, until = self._span()
        ctes = self.common_ctes()
        ctes.append(
            "user_days AS (SELECT DISTINCT user_id, day FROM uev WHERE interactive "
            f"AND day BETWEEN {lit(since)} AND {lit(until)})"
        )
        return self._churned(ctes)

    def rollup_query(self, rollups: Rollups) -> str | None:
        """The active user-days from ``profile_days``; not with population filters."""
        if self.filtered:
            return None
        from lifeloop.analytics.rollups import active_user_days_cte

        since, until = self._span()
        # ``active`` keeps each user once per period: a distinct user-day first would only cost time
        user_days = active_user_days_cte(self.workspace_id, lit(since), lit(until), distinct=False)
        return self._churned(user_days)

    def _churned(self, ctes: list[str]) -> str:
        """The churn of each period from ``user_days(user_id, day)`` covering ``_span``."""
        trunc = f"'{self.period}'"
        step = "INTERVAL 7 DAY" if self.period == "week" else "INTERVAL 1 MONTH"
        first, last = period_start(self.start, self.period), period_start(self.end, self.period)
        previous = (
            shift("p.period", -7) if self.period == "week" else "CAST(p.period - INTERVAL 1 MONTH AS DATE)"
        )
        ctes.append(
            f"periods AS (SELECT CAST(d AS DATE) AS period "
            f"FROM UNNEST(GENERATE_SERIES({lit(first)}, {lit(last)}, {step})) AS t(d))"
        )
        ctes.append(
            f"active AS (SELECT DISTINCT user_id, CAST(DATE_TRUNC({trunc}, day) AS DATE) AS period "
            "FROM user_days)"
        )
        return self.with_(
            ctes,
            f"""SELECT p.period, COUNT(b.user_id) AS active_before,
       COUNT(CASE WHEN c.user_id IS NULL THEN b.user_id END) AS churned,
       CAST(COUNT(CASE WHEN c.user_id IS NULL THEN b.user_id END) AS DOUBLE)
           / NULLIF(COUNT(b.user_id), 0) AS churn_rate
FROM periods p
LEFT JOIN active b ON b.period = {previous}
LEFT JOIN active c ON c.user_id = b.user_id AND c.period = p.period
GROUP BY p.period ORDER BY p.period""",
        )

    def chart(self, frame: pd.DataFrame) -> dict[str, Any]:
        return {"type": "line", "x": "period", "series": ["churn_rate"]}
