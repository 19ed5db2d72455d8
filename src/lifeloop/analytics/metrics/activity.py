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
        ctes.append(f"days AS ({days_between(lit(self.start), lit(self.end))})")
        ctes.append(
            "user_days AS (SELECT DISTINCT user_id, day FROM uev WHERE interactive "
            f"AND day BETWEEN {shift(lit(self.start), -29)} AND {lit(self.end)})"
        )
        ctes.append(f"""counts AS (
    SELECT d.day,
           COUNT(DISTINCT CASE WHEN u.day = d.day THEN u.user_id END) AS dau,
           COUNT(DISTINCT CASE WHEN u.day >= {shift("d.day", -6)} THEN u.user_id END) AS wau,
           COUNT(DISTINCT u.user_id) AS mau
    FROM days d LEFT JOIN user_days u ON u.day BETWEEN {shift("d.day", -29)} AND d.day
    GROUP BY d.day
)""")
        return self.with_(
            ctes,
            "SELECT day, dau, wau, mau, CAST(dau AS DOUBLE) / NULLIF(mau, 0) AS stickiness "
            "FROM counts ORDER BY day",
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
