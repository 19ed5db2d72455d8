"""Lifecycle stage distribution over time, stage-to-stage flows, and journey conversion vs control.

Built on the events the lifecycle and journey engines emit (their contract):
``Lifecycle Stage Entered`` {stage, previous_stage, model} and ``Journey Entered`` {journey_id, group}.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pandas as pd
from pydantic import Field

from lifeloop.analytics.metrics.base import JOURNEY_EVENT, STAGE_EVENT, Metric, days_between, lit
from lifeloop.experiments import two_proportion_p


class StageDistribution(Metric):
    """Per day: users in each stage at the end of that day (their latest stage entry so far)."""

    name: ClassVar[str] = "stage_distribution"
    title: ClassVar[str] = "Lifecycle stages over time"

    model: str | None = Field(default=None, description="Lifecycle model; default every model, as a column.")

    def to_query(self) -> str:
        only = f" AND lifecycle_model = {lit(self.model)}" if self.model else ""
        ctes = self.common_ctes()
        ctes.append(f"days AS ({days_between(lit(self.start), lit(self.end))})")
        ctes.append(f"""entries AS (
    SELECT user_id, lifecycle_model AS model, stage, day,
           LEAD(day) OVER (PARTITION BY user_id, lifecycle_model ORDER BY ts, id) AS next_day
    FROM uev WHERE event = {lit(STAGE_EVENT)} AND day <= {lit(self.end)}{only}
)""")
        return self.with_(
            ctes,
            """SELECT d.day, s.model, s.stage, COUNT(*) AS users
FROM days d JOIN entries s ON s.day <= d.day AND (s.next_day IS NULL OR s.next_day > d.day)
GROUP BY d.day, s.model, s.stage
ORDER BY d.day, s.model, s.stage""",
        )

    def chart(self, frame: pd.DataFrame) -> dict[str, Any]:
        return {"type": "stacked_area", "x": "day", "group": "stage", "value": "users"}


class StageFlows(Metric):
    """Stage changes in the range: from → to, with how many changes and distinct users (a Sankey)."""

    name: ClassVar[str] = "stage_flows"
    title: ClassVar[str] = "Stage-to-stage flows"

    model: str | None = None

    def to_query(self) -> str:
        only = f" AND lifecycle_model = {lit(self.model)}" if self.model else ""
        return self.with_(
            self.common_ctes(),
            f"""SELECT COALESCE(previous_stage, '(entry)') AS source, stage AS target,
       COUNT(*) AS transitions, COUNT(DISTINCT user_id) AS users
FROM uev
WHERE event = {lit(STAGE_EVENT)} AND day BETWEEN {lit(self.start)} AND {lit(self.end)}{only}
GROUP BY COALESCE(previous_stage, '(entry)'), stage
ORDER BY transitions DESC, source, target""",
        )

    def chart(self, frame: pd.DataFrame) -> dict[str, Any]:
        # Stages recur (silent → loyal → silent); a Sankey must be acyclic, so sources and targets are
        # separate nodes ("from:x" on the left, "to:x" on the right).
        names: dict[str, None] = {}
        links = []
        for source, target, transitions in frame[["source", "target", "transitions"]].itertuples(
            index=False, name=None
        ):
            a, b = f"from:{source}", f"to:{target}"
            names.setdefault(a)
            names.setdefault(b)
            links.append({"source": a, "target": b, "value": int(transitions)})
        return {"type": "sankey", "nodes": [{"name": n} for n in names], "links": links}


class JourneyConversion(Metric):
    """Users entering a journey in the range, per group (``treatment`` / ``control``): how many did the
    ``goal`` event within ``window_days`` of entering, the uplift over control and its p-value
    (pooled two-proportion z-test). A user counts once, in the group of their first entry."""

    name: ClassVar[str] = "journey_conversion"
    title: ClassVar[str] = "Journey conversion vs control"

    journey_id: str = Field(min_length=1)
    goal: str = Field(default="Order Completed", min_length=1)
    window_days: int = Field(default=7, ge=1, le=365)

    def to_query(self) -> str:
        ctes = self.common_ctes()
        ctes.append(f"""entries AS (
    SELECT user_id, arm, ts FROM (
        SELECT user_id, COALESCE(journey_group, 'treatment') AS arm, ts,
               ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts, id) AS rn
        FROM uev WHERE event = {lit(JOURNEY_EVENT)} AND journey_id = {lit(self.journey_id)}
          AND day BETWEEN {lit(self.start)} AND {lit(self.end)}
    ) t WHERE rn = 1
)""")
        ctes.append(f"""converted AS (
    SELECT DISTINCT n.user_id FROM entries n
    JOIN uev g ON g.user_id = n.user_id AND g.event = {lit(self.goal)}
      AND g.ts >= n.ts AND g.ts <= n.ts + INTERVAL {self.window_days} DAY
)""")
        return self.with_(
            ctes,
            """SELECT n.arm, COUNT(*) AS users, COUNT(c.user_id) AS converted,
       CAST(COUNT(c.user_id) AS DOUBLE) / COUNT(*) AS rate
FROM entries n LEFT JOIN converted c ON c.user_id = n.user_id
GROUP BY n.arm ORDER BY n.arm""",
        )

    def finish(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({"users": "int64", "converted": "int64"})
        control = frame[frame["arm"] == "control"]
        uplift: list[float | None] = []
        p_values: list[float | None] = []
        for arm, users, converted, rate in frame[["arm", "users", "converted", "rate"]].itertuples(
            index=False, name=None
        ):
            if arm == "control" or control.empty:
                uplift.append(None)
                p_values.append(None)
                continue
            c_users, c_converted = int(control["users"].iloc[0]), int(control["converted"].iloc[0])
            uplift.append(rate - c_converted / c_users)
            p_values.append(two_proportion_p(int(converted), int(users), c_converted, c_users))
        frame["uplift"] = pd.Series(uplift, dtype="float64", index=frame.index)
        frame["p_value"] = pd.Series(p_values, dtype="float64", index=frame.index)
        return frame

    def chart(self, frame: pd.DataFrame) -> dict[str, Any]:
        return {"type": "bar", "x": "arm", "series": ["rate"]}
