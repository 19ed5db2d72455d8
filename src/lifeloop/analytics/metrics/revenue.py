"""Revenue per user (ARPU, ARPPU), repeat-purchase rate and channel ROI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pandas as pd

from lifeloop.analytics.metrics.base import ORDER_EVENT, Metric, line_chart, lit
from lifeloop.analytics.metrics.retention import period_start

if TYPE_CHECKING:
    from lifeloop.analytics.rollups import Rollups

Interval = Literal["day", "week", "month"]


class Revenue(Metric):
    """Per day / week / month (clipped to the range): active users, purchasers, orders, revenue,
    ARPU = revenue / active users and ARPPU = revenue / purchasers."""

    name: ClassVar[str] = "revenue"
    title: ClassVar[str] = "Revenue, ARPU and ARPPU"

    interval: Interval = "day"

    def to_query(self) -> str:
        order = lit(ORDER_EVENT)
        ctes = self.common_ctes()
        ctes.append(f"""per_period AS (
    SELECT CAST(DATE_TRUNC({self._trunc}, day) AS DATE) AS period,
           COUNT(DISTINCT CASE WHEN interactive THEN user_id END) AS active_users,
           COUNT(DISTINCT CASE WHEN event = {order} THEN user_id END) AS purchasers,
           COUNT(CASE WHEN event = {order} THEN 1 END) AS orders,
           SUM(CASE WHEN event = {order} THEN revenue END) AS revenue
    FROM uev WHERE day BETWEEN {lit(self.start)} AND {lit(self.end)}
    GROUP BY CAST(DATE_TRUNC({self._trunc}, day) AS DATE)
)""")
        return self._per_period(ctes)

    def rollup_query(self, rollups: Rollups) -> str | None:
        """From ``profile_days`` (a row per profile and day with an interaction or an order, merged
        profiles read as their survivor); not with population filters."""
        if self.filtered:
            return None
        from lifeloop.analytics.rollups import merge_ctes

        ctes = merge_ctes(self.workspace_id)
        ctes.append(f"""per_period AS (
    SELECT CAST(DATE_TRUNC({self._trunc}, d.day) AS DATE) AS period,
           COUNT(DISTINCT CASE WHEN d.active THEN COALESCE(m.canonical_id, d.profile_id) END) AS active_users,
           COUNT(DISTINCT CASE WHEN d.orders > 0 THEN COALESCE(m.canonical_id, d.profile_id) END)
               AS purchasers,
           SUM(d.orders) AS orders, SUM(d.revenue) AS revenue
    FROM profile_days d LEFT JOIN merged m ON m.profile_id = d.profile_id
    WHERE d.workspace_id = {lit(self.workspace_id)} AND d.day BETWEEN {lit(self.start)} AND {lit(self.end)}
    GROUP BY CAST(DATE_TRUNC({self._trunc}, d.day) AS DATE)
)""")
        return self._per_period(ctes)

    @property
    def _trunc(self) -> str:
        return f"'{self.interval}'"

    def _per_period(self, ctes: list[str]) -> str:
        """Every period of the range, with the figures of ``per_period(period, active_users, purchasers,
        orders, revenue)`` (zeros where it has no row)."""
        step = {"day": "INTERVAL 1 DAY", "week": "INTERVAL 7 DAY", "month": "INTERVAL 1 MONTH"}[self.interval]
        first = self.start if self.interval == "day" else period_start(self.start, self.interval)
        last = self.end if self.interval == "day" else period_start(self.end, self.interval)
        ctes.append(
            f"periods AS (SELECT CAST(d AS DATE) AS period "
            f"FROM UNNEST(GENERATE_SERIES({lit(first)}, {lit(last)}, {step})) AS t(d))"
        )
        return self.with_(
            ctes,
            """SELECT p.period, COALESCE(r.active_users, 0) AS active_users,
       COALESCE(r.purchasers, 0) AS purchasers,
       CAST(COALESCE(r.orders, 0) AS BIGINT) AS orders, COALESCE(r.revenue, 0) AS revenue,
       COALESCE(r.revenue, 0) / NULLIF(r.active_users, 0) AS arpu,
       COALESCE(r.revenue, 0) / NULLIF(r.purchasers, 0) AS arppu
FROM periods p LEFT JOIN per_period r ON r.period = p.period
ORDER BY p.period""",
        )

    def chart(self, frame: pd.DataFrame) -> dict[str, Any]:
        return line_chart("period", "arpu", "arppu")


class RepeatPurchase(Metric):
    """Of the users who ordered in the range, the share who ordered at least twice in it."""

    name: ClassVar[str] = "repeat_purchase"
    title: ClassVar[str] = "Repeat-purchase rate"

    def to_query(self) -> str:
        ctes = self.common_ctes()
        ctes.append(f"""orders AS (
    SELECT user_id, COUNT(*) AS n FROM uev
    WHERE event = {lit(ORDER_EVENT)} AND day BETWEEN {lit(self.start)} AND {lit(self.end)}
    GROUP BY user_id
)""")
        return self.with_(
            ctes,
            """SELECT COUNT(*) AS purchasers, COUNT(CASE WHEN n >= 2 THEN 1 END) AS repeat_purchasers,
       CAST(COUNT(CASE WHEN n >= 2 THEN 1 END) AS DOUBLE) / NULLIF(COUNT(*), 0) AS repeat_rate
FROM orders""",
        )

    def chart(self, frame: pd.DataFrame) -> dict[str, Any]:
        return {"type": "number", "value": "repeat_rate"}


class ChannelRoi(Metric):
    """Per acquisition channel (the channel of a user's earliest event that names one, ``(none)`` if
    none): users acquired in the range (first active day), how many ordered by the end of the range and
    their revenue, against the channel's cost in the range (``channel_costs``): cost per acquired user,
    cost per converted user and ROI = (revenue − cost) / cost."""

    name: ClassVar[str] = "channel_roi"
    title: ClassVar[str] = "Channel ROI"

    def to_query(self) -> str:
        ctes = self.common_ctes()
        ctes.append(self.first_days_cte())
        ctes += self._acquired()
        ctes.append(f"""bought AS (
    SELECT q.user_id, SUM(COALESCE(o.revenue, 0)) AS revenue
    FROM acquired q JOIN uev o ON o.user_id = q.user_id AND o.event = {lit(ORDER_EVENT)}
      AND o.day BETWEEN q.first_day AND {lit(self.end)}
    GROUP BY q.user_id
)""")
        return self._per_channel(ctes)

    def rollup_query(self, rollups: Rollups) -> str | None:
        """First days from ``profile_summary`` and orders from ``profile_days`` (scanning every event for
        each user's first day was half the query at a million customers); the first channel of the users
        acquired in the range still comes from their events. Not with population filters."""
        if self.filtered:
            return None
        from lifeloop.analytics.rollups import merge_ctes

        ws = lit(self.workspace_id)
        ctes = [*self.common_ctes(), *merge_ctes(self.workspace_id)]
        ctes.append(f"""first_days AS (
    SELECT COALESCE(m.canonical_id, s.profile_id) AS user_id, MIN(s.first_day) AS first_day
    FROM profile_summary s LEFT JOIN merged m ON m.profile_id = s.profile_id
    WHERE s.workspace_id = {ws} AND s.first_day IS NOT NULL
    GROUP BY COALESCE(m.canonical_id, s.profile_id)
)""")
        ctes += self._acquired()
        ctes.append(f"""bought AS (
    SELECT q.user_id, SUM(d.revenue) AS revenue
    FROM acquired q
    JOIN (
        SELECT COALESCE(m.canonical_id, d.profile_id) AS user_id, d.day, d.revenue
        FROM profile_days d LEFT JOIN merged m ON m.profile_id = d.profile_id
        WHERE d.workspace_id = {ws} AND d.orders > 0 AND d.day <= {lit(self.end)}
    ) d ON d.user_id = q.user_id AND d.day >= q.first_day
    GROUP BY q.user_id
)""")
        return self._per_channel(ctes)

    def _acquired(self) -> list[str]:
        """``acquired(user_id, first_day, channel)`` from ``first_days``: the users acquired in the range,
        each with the channel of their earliest event that names one."""
        ctes = [
            f"""new_in_range AS (
    SELECT user_id, first_day FROM first_days WHERE first_day BETWEEN {lit(self.start)} AND {lit(self.end)}
)"""
        ]
        # Only the users acquired in the range need their first channel: ranking every user's events
        # was most of the query's time at a million customers.
        ctes.append("""first_touch AS (
    SELECT user_id, channel FROM (
        SELECT e.user_id, e.channel, ROW_NUMBER() OVER (PARTITION BY e.user_id ORDER BY e.ts, e.id) AS rn
        FROM uev e JOIN new_in_range n ON n.user_id = e.user_id WHERE e.channel IS NOT NULL
    ) t WHERE rn = 1
)""")
        ctes.append("""acquired AS (
    SELECT f.user_id, f.first_day, COALESCE(a.channel, '(none)') AS channel
    FROM new_in_range f LEFT JOIN first_touch a ON a.user_id = f.user_id
)""")
        return ctes

    def _per_channel(self, ctes: list[str]) -> str:
        """Per channel, from ``acquired`` and ``bought(user_id, revenue)``, against its costs."""
        ctes.append("""per_channel AS (
    SELECT q.channel, COUNT(*) AS acquired, COUNT(b.user_id) AS converted,
           COALESCE(SUM(b.revenue), 0) AS revenue
    FROM acquired q LEFT JOIN bought b ON b.user_id = q.user_id
    GROUP BY q.channel
)""")
        ctes.append(f"""costs AS (
    SELECT channel, SUM(cost) AS cost FROM channel_costs
    WHERE workspace_id = {lit(self.workspace_id)} AND day BETWEEN {lit(self.start)} AND {lit(self.end)}
    GROUP BY channel
)""")
        return self.with_(
            ctes,
            """SELECT COALESCE(p.channel, c.channel) AS channel, COALESCE(p.acquired, 0) AS acquired,
       COALESCE(p.converted, 0) AS converted, COALESCE(p.revenue, 0) AS revenue, COALESCE(c.cost, 0) AS cost,
       c.cost / NULLIF(p.acquired, 0) AS cost_per_acquired,
       c.cost / NULLIF(p.converted, 0) AS cost_per_converted,
       (COALESCE(p.revenue, 0) - c.cost) / NULLIF(c.cost, 0) AS roi
FROM per_channel p FULL OUTER JOIN costs c ON c.channel = p.channel
ORDER BY channel""",
        )

    def chart(self, frame: pd.DataFrame) -> dict[str, Any]:
        return {"type": "bar", "x": "channel", "series": ["cost_per_acquired", "cost_per_converted"]}
