"""Messages per day and channel, from the delivery outcomes the outbox reports back as events."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pandas as pd
from pydantic import Field

from lifeloop.analytics.metrics.base import Metric, days_between, lit

OUTCOME_EVENTS = {
    "delivered": "Message Delivered",
    "failed": "Message Failed",
    "suppressed": "Message Suppressed",
}


class MessagesSent(Metric):
    """Per day and channel: messages with the chosen outcome (default delivered), from the ``Message
    Delivered`` / ``Failed`` / ``Suppressed`` events, whose channel is the message's."""

    name: ClassVar[str] = "messages"
    title: ClassVar[str] = "Messages by channel"

    outcome: Literal["delivered", "failed", "suppressed"] = Field(default="delivered")

    def to_query(self) -> str:
        ctes = self.common_ctes()
        ctes.append(f"days AS ({days_between(lit(self.start), lit(self.end))})")
        ctes.append(f"""sent AS (
    SELECT day, COALESCE(channel, 'unknown') AS channel, COUNT(*) AS messages FROM uev
    WHERE event = {lit(OUTCOME_EVENTS[self.outcome])} AND day BETWEEN {lit(self.start)} AND {lit(self.end)}
    GROUP BY day, COALESCE(channel, 'unknown')
)""")
        return self.with_(
            ctes,
            "SELECT d.day, s.channel, s.messages FROM days d JOIN sent s ON s.day = d.day "
            "ORDER BY d.day, s.channel",
        )

    def chart(self, frame: pd.DataFrame) -> dict[str, Any]:
        return {"type": "stacked_area", "x": "day", "group": "channel", "value": "messages"}
