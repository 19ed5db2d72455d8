"""Active users (DAU / WAU / MAU, stickiness) and new users per day."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from lifeloop.analytics.metrics.base import Metric, days_between, line_chart, lit, shift

if TYPE_CHECKING:
    from lifeloop.analytics.rollups import Rollups


class ActiveUsers(Metric):
    """Per day: users active that day (DAU), in the 7 days (WAU) and 30 days (MAU) ending that day,
    and stickiness = DAU / MAU."""

    name: ClassVar[str] = "active_users"
    title: ClassVar[str] = "Active users"

    def to_query(self) -> str:
        ctes = self.common_ctes()
        ctes.append(
            "user_days AS (SELECT DISTINCT user_id, day FROM uev WHERE interactive "
            f"AND day BETWEEN {shift(lit(self.start), -29)} AND {lit(self.end)})"
        )
        return self._counted(ctes)

    def rollup_query(self, rollups: Rollups) -> str | None:
        """The active user-days from ``profile_days`` (one row per profile and active day, merged profiles
        read as their survivor); not with population filters."""
        if self.filtered:
            return None
        from lifeloop.analytics.rollups import active_user_days_cte

        ctes = active_user_days_cte(self.workspace_id, shift(lit(self.start), -29), lit(self.end))
        return self._counted(ctes)

    def _counted(self, ctes: list[str]) -> str:
        """DAU / WAU / MAU per day from ``user_days(user_id, day)`` in one pass over the user-days, not a
        join of every day with its 30-day window (30 rows per user-day, which at a million customers is
        most of the query): an active day ``a`` keeps its user in the 7-day (30-day) count from ``a`` until
        their next active day or ``a`` + 7 (+ 30), whichever comes first. These spans never overlap for
        one user, so each day's count is the running sum of spans opening minus spans closing."""
        ctes.append(
            "spans AS (SELECT day, LEAD(day) OVER (PARTITION BY user_id ORDER BY day) AS next_day "
            "FROM user_days)"
        )
        ctes.append(f"""edges AS (
    SELECT day, 1 AS dau, 1 AS wau, 1 AS mau FROM spans
    UNION ALL SELECT {shift("day", 1)}, -1, 0, 0 FROM spans
    UNION ALL SELECT LEAST(COALESCE(next_day, {shift("day", 7)}), {shift("day", 7)}), 0, -1, 0 FROM spans
    UNION ALL SELECT LEAST(COALESCE(next_day, {shift("day", 30)}), {shift("day", 30)}), 0, 0, -1 FROM spans
)""")
        ctes.append(
            "deltas AS (SELECT day, SUM(dau) AS dau, SUM(wau) AS wau, SUM(mau) AS mau "
            "FROM edges GROUP BY day)"
        )
        ctes.append(f"days AS ({days_between(shift(lit(self.start), -29), lit(self.end))})")
        ctes.append("""counts AS (
    SELECT d.day,
           SUM(COALESCE(x.dau, 0)) OVER w AS dau,
           SUM(COALESCE(x.wau, 0)) OVER w AS wau,
           SUM(COALESCE(x.mau, 0)) OVER w AS mau
    FROM days d LEFT JOIN deltas x ON x.day = d.day
    WINDOW w AS (ORDER BY d.day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)""")
        return self.with_(
            ctes,
            "SELECT day, CAST(dau AS BIGINT) AS dau, CAST(wau AS BIGINT) AS wau, CAST(mau AS BIGINT) AS mau, "
            "CAST(dau AS DOUBLE) / NULLIF(mau, 0) AS stickiness "
            f"FROM counts WHERE day >= {lit(self.start)} ORDER BY day",
        )

    def chart(self, frame: pd.DataFrame) -> dict[str, Any]:
        return line_chart("day", "dau", "wau", "mau")


class NewUsers(Metric):
    """Per day: users whose first active day it is."""

    name: ClassVar[str] = "new_users"
    title: ClassVar[str] = "New users"

    def to_query(self) -> str:
        ctes = self.common_ctes()
        ctes.append(f"days AS ({days_between(lit(self.start), lit(self.end))})")
        ctes.append(self.first_days_cte())
        return self.with_(
            ctes,
            "SELECT d.day, COUNT(f.user_id) AS new_users FROM days d "
            "LEFT JOIN first_days f ON f.first_day = d.day GROUP BY d.day ORDER BY d.day",
        )

    def rollup_query(self, rollups: Rollups) -> str | None:
        """Offset 0 of the daily ``cohort_counts`` (corrected for merges); not with population filters."""
        if self.filtered:
            return None
        from lifeloop.analytics.rollups import cohort_counts_cte

        where = f"first_day BETWEEN {lit(self.start)} AND {lit(self.end)} AND k = 0"
        ctes = cohort_counts_cte(self.workspace_id, "day", where)
        ctes.append(f"days AS ({days_between(lit(self.start), lit(self.end))})")
        return self.with_(
            ctes,
            "SELECT d.day, CAST(COALESCE(SUM(c.users), 0) AS BIGINT) AS new_users FROM days d "
            "LEFT JOIN counts c ON c.first_day = d.day GROUP BY d.day ORDER BY d.day",
        )

    def chart(self, frame: pd.DataFrame) -> dict[str, Any]:
        return line_chart("day", "new_users", kind="bar")
