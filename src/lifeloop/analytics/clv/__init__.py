"""Customer-lifetime-value models: RFM summaries, BG/NBD purchases, Gamma-Gamma spend, CLV and churn risk.

Typical use, with times in weeks::

    summary = rfm_summary(tx, "customer_id", "timestamp", "amount", "2024-12-31", freq_days=7.0)
    bgnbd = BetaGeoModel().fit(summary["frequency"], summary["recency"], summary["T"])
    gg = GammaGammaModel().fit(summary["frequency"], summary["monetary_value"])
    clv = customer_lifetime_value(bgnbd, gg, summary["frequency"], summary["recency"], summary["T"],
                                  summary["monetary_value"], months=12, period_days=7.0)
"""

from __future__ import annotations

from ._validation import NotFittedError
from .bgnbd import BetaGeoModel, BetaGeoParams, FitSummary
from .gamma_gamma import GammaGammaModel, GammaGammaParams
from .summary import rfm_summary
from .value import churn_risk, customer_lifetime_value

__all__ = [
    "BetaGeoModel",
    "BetaGeoParams",
    "FitSummary",
    "GammaGammaModel",
    "GammaGammaParams",
    "NotFittedError",
    "churn_risk",
    "customer_lifetime_value",
    "rfm_summary",
]
