"""Analytics engines: where metrics, RFM and the CLV summary are computed (DuckDB or Spark).

``engine_for(settings, path)`` picks one by ``LIFELOOP_ANALYTICS_ENGINE``; see ``base`` for the protocol and
docs/analytics-engines.md for why one SQL definition (DuckDB dialect, transpiled by sqlglot) serves both.
"""

from __future__ import annotations

from lifeloop.analytics.engines.base import ENGINE_NAMES, AnalyticsEngine, engine_for

__all__ = ["ENGINE_NAMES", "AnalyticsEngine", "engine_for"]
