"""Customer lifetime value and churn-risk flags built on fitted BG/NBD and Gamma-Gamma models."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from ._validation import as_float, broadcast, check_non_negative, series_index, validate_rfm, wrap
from .bgnbd import BetaGeoModel
from .gamma_gamma import GammaGammaModel

__all__ = ["churn_risk", "customer_lifetime_value"]


def customer_lifetime_value(
    bgnbd: BetaGeoModel,
    gg: GammaGammaModel,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary_value: ArrayLike,
    months: int = 12,
    discount_rate_monthly: float = 0.01,
    period_days: float = 7.0,
    days_per_month: float = 30.0,
) -> Any:
    """Discounted expected value of each customer's purchases over the next ``months`` months.

    ``CLV = sum_{m=1..months} E[spend] * (E[Y(m L)] - E[Y((m-1) L)]) / (1 + discount_rate_monthly) ** m``

    where ``E[Y(t)]`` is the BG/NBD conditional expected number of purchases in (T, T + t], ``E[spend]`` the
    Gamma-Gamma conditional expected average profit, and ``L = days_per_month / period_days`` one month in
    model time units. This is the definition of ``lifetimes``' ``customer_lifetime_value``.

    Time unit: ``recency`` and ``T`` (and the BG/NBD fit) must be in periods of ``period_days`` days, i.e.
    7.0 for weeks (as in ``rfm_summary(..., freq_days=7.0)``) or 1.0 for days. ``lifetimes`` instead takes
    ``freq`` and silently assumes days; its months are 30 days for ``freq="D"`` and 4.345 weeks for
    ``freq="W"``, so pass ``days_per_month=30.415`` to reproduce ``freq="W"`` exactly.
    """
    if int(months) != months or months < 1:
        raise ValueError(f"months must be a positive integer, got {months}")
    if not np.isfinite(discount_rate_monthly) or discount_rate_monthly <= -1:
        raise ValueError(f"discount_rate_monthly must be > -1, got {discount_rate_monthly}")
    for name, value in (("period_days", period_days), ("days_per_month", days_per_month)):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number of days, got {value}")
    index = series_index(frequency, recency, T, monetary_value)
    x, tx, t_obs = validate_rfm(frequency, recency, T)
    m = as_float("monetary_value", monetary_value)
    check_non_negative("monetary_value", m)
    x, tx, t_obs, m = np.atleast_1d(
        *broadcast(("frequency", "recency", "T", "monetary_value"), (x, tx, t_obs, m))
    )

    spend = np.asarray(gg.conditional_expected_average_profit(x, m), dtype=np.float64)
    month = days_per_month / period_days
    cumulative = np.stack(
        [np.asarray(bgnbd.conditional_expected_purchases(k * month, x, tx, t_obs)) for k in range(months + 1)]
    )
    per_month = np.diff(cumulative, axis=0)
    discount = (1.0 + discount_rate_monthly) ** -np.arange(1, months + 1, dtype=np.float64)
    # einsum rather than a BLAS matrix product: see _validation.dot.
    clv = spend * np.einsum("m,mn->n", discount, per_month)
    return wrap(np.asarray(clv, dtype=np.float64), index, "clv")


def churn_risk(
    bgnbd: BetaGeoModel,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    *,
    p_alive_threshold: float = 0.5,
    gap_multiple: float = 2.0,
    single_purchase_gap: float | None = None,
) -> pd.DataFrame:
    """Flag customers at risk of having churned, with the reason.

    A customer is flagged ``low_p_alive`` when the BG/NBD probability of being alive is below
    ``p_alive_threshold``, and ``overdue`` when the time since their last purchase (``T - recency``) exceeds
    ``gap_multiple`` times their own mean gap between purchases (``recency / frequency``). Customers without
    repeat purchases have no gap of their own and, under BG/NBD, P(alive) = 1; they are only flagged
    (overdue) when ``single_purchase_gap`` is given and ``T`` exceeds ``gap_multiple`` times it.

    Returns one row per customer: p_alive, time_since_last, mean_gap (NaN without repeats), low_p_alive,
    overdue, at_risk and reason (``"low_p_alive"``, ``"overdue"``, ``"low_p_alive,overdue"`` or ``""``).
    """
    if not 0.0 <= p_alive_threshold <= 1.0:
        raise ValueError(f"p_alive_threshold must be within [0, 1], got {p_alive_threshold}")
    if not np.isfinite(gap_multiple) or gap_multiple <= 0:
        raise ValueError(f"gap_multiple must be > 0, got {gap_multiple}")
    if single_purchase_gap is not None and (not np.isfinite(single_purchase_gap) or single_purchase_gap <= 0):
        raise ValueError(f"single_purchase_gap must be > 0 when given, got {single_purchase_gap}")
    index = series_index(frequency, recency, T)
    x, tx, t_obs = np.atleast_1d(*validate_rfm(frequency, recency, T))

    p_alive = np.asarray(bgnbd.conditional_probability_alive(x, tx, t_obs), dtype=np.float64)
    since_last = t_obs - tx
    has = x > 0
    mean_gap = np.divide(tx, x, out=np.full_like(tx, np.nan), where=has)
    gap_used = mean_gap if single_purchase_gap is None else np.where(has, mean_gap, single_purchase_gap)
    # NaN gaps (single purchasers without a fallback) compare False, i.e. never overdue.
    with np.errstate(invalid="ignore"):
        overdue = since_last > gap_multiple * gap_used
    low = p_alive < p_alive_threshold
    reason = np.where(
        low & overdue, "low_p_alive,overdue", np.where(low, "low_p_alive", np.where(overdue, "overdue", ""))
    )
    return pd.DataFrame(
        {
            "p_alive": p_alive,
            "time_since_last": since_last,
            "mean_gap": mean_gap,
            "low_p_alive": low,
            "overdue": overdue,
            "at_risk": low | overdue,
            "reason": reason.astype(object),
        },
        index=index if index is not None and len(index) == x.size else None,
    )
