"""Funnels with a conversion window, and paths after / before an event (Sankey)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pandas as pd
from pydantic import Field, field_validator

from lifeloop.analytics.metrics.base import Metric, lit


def _split_names(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class Funnel(Metric):
    """Users who did the first step in the range (their first time in the range starts the attempt), then
    each later step in order, each at or after the previous one and within ``window_days`` of the first."""

    name: ClassVar[str] = "funnel"
    title: ClassVar[str] = "Funnel"

    steps: list[str] = Field(min_length=2, max_length=10, description="Event names, in order.")
    window_days: int = Field(default=7, ge=1, le=365)

    _split = field_validator("steps", mode="before")(_split_names)

    @field_validator("steps")
    @classmethod
    def _distinct(cls, steps: list[str]) -> list[str]:
        if len(set(steps)) != len(steps):
            raise ValueError("steps must be distinct event names")
        return steps

    def to_query(self) -> str:
        ctes = self.common_ctes()
        ctes.append(f"""s1 AS (
    SELECT user_id, MIN(ts) AS t FROM uev
    WHERE event = {lit(self.steps[0])} AND day BETWEEN {lit(self.start)} AND {lit(self.end)}
    GROUP BY user_id
)""")
        for k, step in enumerate(self.steps[1:], start=2):
            ctes.append(f"""s{k} AS (
    SELECT p.user_id, MIN(e.ts) AS t
    FROM s{k - 1} p JOIN s1 ON s1.user_id = p.user_id
    JOIN uev e ON e.user_id = p.user_id AND e.event = {lit(step)}
      AND e.ts >= p.t AND e.ts <= s1.t + INTERVAL {self.window_days} DAY
    GROUP BY p.user_id
)""")
        counts = "\nUNION ALL\n".join(
            f"SELECT {k} AS step, {lit(step)} AS event, COUNT(*) AS users FROM s{k}"
            for k, step in enumerate(self.steps, start=1)
        )
        return self.with_(ctes, f"SELECT step, event, users FROM ({counts}) t ORDER BY step")

    def finish(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({"step": "int64", "users": "int64"})
        first = frame["users"].iloc[0] if len(frame) else 0
        frame["conversion"] = frame["users"] / first if first else float("nan")
        frame["step_conversion"] = frame["users"] / frame["users"].shift(1)
        frame.loc[0, "step_conversion"] = 1.0 if first else float("nan")
        return frame

    def chart(self, frame: pd.DataFrame) -> dict[str, Any]:
        return {"type": "funnel", "name": "event", "value": "users"}


class Paths(Metric):
    """From each user's first ``event`` in the range, the next (or previous) ``depth`` interactions:
    step-to-step transitions counted by users, ready for a Sankey diagram."""

    name: ClassVar[str] = "paths"
    title: ClassVar[str] = "Paths"

    event: str = Field(min_length=1)
    direction: Literal["after", "before"] = "after"
    depth: int = Field(default=3, ge=1, le=10)

    def to_query(self) -> str:
        after = self.direction == "after"
        cmp = ">" if after else "<"
        order = "e.ts, e.id" if after else "e.ts DESC, e.id DESC"
        ctes = self.common_ctes()
        ctes.append(f"""anchor AS (
    SELECT user_id, ts, id FROM (
        SELECT user_id, ts, id, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY ts, id) AS rn
        FROM uev WHERE event = {lit(self.event)} AND day BETWEEN {lit(self.start)} AND {lit(self.end)}
    ) t WHERE rn = 1
)""")
        ctes.append(f"""seq AS (
    SELECT e.user_id, e.event, ROW_NUMBER() OVER (PARTITION BY e.user_id ORDER BY {order}) AS pos
    FROM uev e JOIN anchor a ON a.user_id = e.user_id
    WHERE e.interactive AND (e.ts {cmp} a.ts OR (e.ts = a.ts AND e.id {cmp} a.id))
)""")
        ctes.append(f"""nodes AS (
    SELECT user_id, 0 AS pos, {lit(self.event)} AS event FROM anchor
    UNION ALL
    SELECT user_id, pos, event FROM seq WHERE pos <= {self.depth}
)""")
        return self.with_(
            ctes,
            """SELECT a.pos + 1 AS step, a.event AS source, b.event AS target, COUNT(*) AS users
FROM nodes a JOIN nodes b ON b.user_id = a.user_id AND b.pos = a.pos + 1
GROUP BY a.pos, a.event, b.event
ORDER BY step, users DESC, source, target""",
        )

    def chart(self, frame: pd.DataFrame) -> dict[str, Any]:
        sign = 1 if self.direction == "after" else -1
        names: dict[str, None] = {}
        links = []
        for step, source, target, users in frame[["step", "source", "target", "users"]].itertuples(
            index=False, name=None
        ):
            a, b = f"{sign * (int(step) - 1)}:{source}", f"{sign * int(step)}:{target}"
            names.setdefault(a)
            names.setdefault(b)
            links.append({"source": a, "target": b, "value": int(users)})
        return {"type": "sankey", "nodes": [{"name": n} for n in names], "links": links}
