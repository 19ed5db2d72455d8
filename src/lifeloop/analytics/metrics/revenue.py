"""Revenue per user (ARPU, ARPPU), repeat-purchase rate and channel ROI."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pandas as pd

from lifeloop.analytics.metrics.base import ORDER_EVENT, Metric, line_chart, lit
from lifeloop.analytics.metrics.retention import period_start

Interval = Literal["day", "week", "month"]


class Revenue(Metric):
    """Per day / week / month (clipped to the range): active users, purchasers, orders, revenue,
    ARPU = revenue / active users and ARPPU = revenue / purchasers."""

    name: ClassVar[str] = "revenue"
    title: ClassVar[str] = "Revenue, ARPU and ARPPU"

    interval: Interval = "day"

    def to_query(self) -> str:
        trunc = f"'{self.interval}'"
        step = {"day": "INTERVAL 1 DAY", "week": "INTERVAL 7 DAY", "month": "INTERVAL 1 MONTH"}[self.interval]
        first = self.start if self.interval == "day" else period_start(self.start, self.interval)
        last = self.end if self.interval == "day" else period_start(self.end, self.interval)
        order = lit(ORDER_EVENT)
        ctes = self.common_ctes()
        ctes.append(
            f"periods AS (SELECT CAST(d AS DATE) AS period "
            f"FROM UNNEST(GENERATE_SERIES({lit(first)}, {lit(last)}, {step})) AS t(d))"
        )
        ctes.append(f"""per_period AS (
    SELECT CAST(DATE_TRUNC({trunc}, day) AS DATE) AS period,
           COUNT(DISTINCT CASE WHEN interactive THEN user_id END) AS active_users,
           COUNT(DISTINCT CASE WHEN event = {order} THEN user_id END) AS purchasers,
           COUNT(CASE WHEN event = {order} THEN 1 END) AS orders,
           SUM(CASE WHEN event = {order} THEN revenue END) AS revenue
    FROM uev WHERE day BETWEEN {lit(self.start)} AND {lit(self.end)}
    GROUP BY CAST(DATE_TRUNC({trunc}, day) AS DATE)
)""")
        return self.with_(
            ctes,
            """SELECT p.period, COALESCE(r.active_users, 0) AS active_users,
       COALESCE(r.purchasers, 0) AS purchasers,
       COALESCE(r.orders, 0) AS orders, COALESCE(r.revenue, 0) AS revenue,
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
        ctes.append(f"""new_in_range AS (
    SELECT user_id, first_day FROM first_days WHERE first_day BETWEEN {lit(self.start)} AND {lit(self.end)}
)""")
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
        ctes.append(f"""bought AS (
    SELECT q.user_id, SUM(COALESCE(o.revenue, 0)) AS revenue
    FROM acquired q JOIN uev o ON o.user_id = q.user_id AND o.event = {lit(ORDER_EVENT)}
      AND o.day BETWEEN q.first_day AND {lit(self.end)}
    GROUP BY q.user_id
)""")
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
