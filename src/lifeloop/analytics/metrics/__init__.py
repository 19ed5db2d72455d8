"""Analytics metrics, one query object per metric family (see ``base`` for the protocol).

``METRICS`` maps the public name (used by the API ``/api/v1/analytics/{name}`` and the CLI
``lifeloop analytics metric NAME``) to its class.
"""

from __future__ import annotations

from typing import Any

from lifeloop.analytics.metrics.activity import ActiveUsers, NewUsers
from lifeloop.analytics.metrics.base import Metric, MetricResult
from lifeloop.analytics.metrics.funnel import Funnel, Paths
from lifeloop.analytics.metrics.lifecycle import JourneyConversion, StageDistribution, StageFlows
from lifeloop.analytics.metrics.messaging import MessagesSent
from lifeloop.analytics.metrics.retention import ChurnRate, CohortRetention, Retention
from lifeloop.analytics.metrics.revenue import ChannelRoi, RepeatPurchase, Revenue
from lifeloop.errors import NotFound

METRICS: dict[str, type[Metric]] = {
    m.name: m
    for m in (
        ActiveUsers,
        NewUsers,
        Retention,
        CohortRetention,
        ChurnRate,
        Funnel,
        Paths,
        Revenue,
        RepeatPurchase,
        ChannelRoi,
        StageDistribution,
        StageFlows,
        JourneyConversion,
        MessagesSent,
    )
}


def build_metric(name: str, params: dict[str, Any]) -> Metric:
    """The metric ``name`` with ``params`` validated (NotFound / InvalidInput otherwise)."""
    cls = METRICS.get(name)
    if cls is None:
        raise NotFound(f"no metric {name!r}; known: {', '.join(sorted(METRICS))}")
    return cls.parse(params)


__all__ = [
    "METRICS",
    "ActiveUsers",
    "ChannelRoi",
    "ChurnRate",
    "CohortRetention",
    "Funnel",
    "JourneyConversion",
    "MessagesSent",
    "Metric",
    "MetricResult",
    "NewUsers",
    "Paths",
    "RepeatPurchase",
    "Retention",
    "Revenue",
    "StageDistribution",
    "StageFlows",
    "build_metric",
]
