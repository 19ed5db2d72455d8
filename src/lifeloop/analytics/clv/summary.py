"""Per-customer RFM summary (frequency, recency, T, monetary value) from a transaction log."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["rfm_summary"]


def _to_day(value: Any, name: str, tz: Any) -> pd.Timestamp:
    """Calendar day of ``value`` as a naive timestamp, read in the transactions' time zone ``tz``."""
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} is not a valid date: {value!r} ({exc})") from None
    if pd.isna(stamp):
        raise ValueError(f"{name} must not be missing")
    if (stamp.tzinfo is None) != (tz is None):
        raise ValueError(f"{name} and the transaction datetimes must both be timezone-aware or both naive")
    if tz is not None:
        stamp = stamp.tz_convert(tz).tz_localize(None)
    return stamp.normalize()


def _daily_totals(
    transactions: pd.DataFrame, customer_col: str, datetime_col: str, monetary_col: str | None
) -> tuple[pd.DataFrame, Any]:
    """One row per (customer, calendar day) with that day's total spend, sorted by customer and day.

    Days are naive local dates so that differences are whole days even across DST changes; the time zone
    of the datetimes (or None) is returned alongside.
    """
    for col in (customer_col, datetime_col, monetary_col):
        if col is not None and col not in transactions.columns:
            raise ValueError(
                f"column {col!r} not found in transactions (columns: {list(transactions.columns)})"
            )
    if transactions.empty:
        raise ValueError("transactions is empty")
    frame = pd.DataFrame({"customer": transactions[customer_col].to_numpy()})
    if frame["customer"].isna().any():
        raise ValueError(f"column {customer_col!r} contains missing customer ids")
    raw_dates = transactions[datetime_col]
    if raw_dates.isna().any():
        raise ValueError(f"column {datetime_col!r} contains missing dates")
    try:
        dates = pd.to_datetime(raw_dates)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"column {datetime_col!r} could not be parsed as dates: {exc}") from None
    tz = dates.dt.tz
    if tz is not None:
        dates = dates.dt.tz_localize(None)
    frame["day"] = dates.dt.normalize().to_numpy()
    if monetary_col is None:
        frame["amount"] = 0.0
    else:
        amount = pd.to_numeric(transactions[monetary_col], errors="coerce").to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(amount)):
            raise ValueError(f"column {monetary_col!r} contains missing or non-numeric values")
        if np.any(amount < 0):
            raise ValueError(
                f"column {monetary_col!r} contains negative amounts; "
                "net refunds against their purchases first"
            )
        frame["amount"] = amount
    return frame.groupby(["customer", "day"], sort=True, as_index=False)["amount"].sum(), tz


def _summarise(daily: pd.DataFrame, end: pd.Timestamp, freq_days: float) -> pd.DataFrame:
    """Frequency, recency, T and repeat-purchase mean spend for rows already cut at ``end``."""
    grouped = daily.groupby("customer", sort=True)
    first = grouped["day"].min()
    last = grouped["day"].max()
    n_days = grouped.size()
    first_amount = grouped["amount"].first()  # rows are sorted by day within each customer
    total = grouped["amount"].sum()
    frequency = (n_days - 1).astype(np.int64)
    repeats = frequency.to_numpy()
    repeat_spend = (total - first_amount).to_numpy(dtype=np.float64)
    monetary = np.divide(repeat_spend, repeats, out=np.zeros_like(repeat_spend), where=repeats > 0)
    day = pd.Timedelta(days=1)
    return pd.DataFrame(
        {
            "frequency": frequency.to_numpy(),
            "recency": ((last - first) / day).to_numpy(dtype=np.float64) / freq_days,
            "T": ((end - first) / day).to_numpy(dtype=np.float64) / freq_days,
            "monetary_value": monetary,
        },
        index=first.index,
    )


def rfm_summary(
    transactions: pd.DataFrame,
    customer_col: str,
    datetime_col: str,
    monetary_col: str | None,
    observation_end: Any,
    freq_days: float = 1.0,
    calibration_end: Any = None,
) -> pd.DataFrame:
    """Build the per-customer summary that BG/NBD and Gamma-Gamma are fitted on.

    Times are truncated to calendar days and several purchases on one day count as one purchase whose value
    is the day's total. Per customer, with times in units of ``freq_days`` days (1.0 = days, 7.0 = weeks):

    - ``frequency``: repeat purchase days (distinct purchase days minus one);
    - ``recency``: last purchase day minus first purchase day;
    - ``T``: end of the (calibration) period minus first purchase day;
    - ``monetary_value``: mean daily total over the repeat purchase days (0 without repeats); the first
      purchase is left out, as the Gamma-Gamma model expects.

    Transactions after ``observation_end`` are ignored. With ``calibration_end``, the columns above describe
    the calibration period up to and including ``calibration_end`` (customers first seen later are left out)
    and ``frequency_holdout``, ``monetary_value_holdout`` and ``duration_holdout`` describe the purchase days
    in (``calibration_end``, ``observation_end``]. The index holds the customer ids, sorted.
    """
    if not np.isfinite(freq_days) or freq_days <= 0:
        raise ValueError(f"freq_days must be a positive number of days, got {freq_days}")
    daily, tz = _daily_totals(transactions, customer_col, datetime_col, monetary_col)
    obs_end = _to_day(observation_end, "observation_end", tz)
    daily = daily[daily["day"] <= obs_end]
    if daily.empty:
        raise ValueError(f"no transactions on or before observation_end {obs_end.date()}")

    if calibration_end is None:
        out = _summarise(daily, obs_end, freq_days)
    else:
        cal_end = _to_day(calibration_end, "calibration_end", tz)
        if cal_end >= obs_end:
            raise ValueError(
                f"calibration_end ({cal_end.date()}) must be before observation_end ({obs_end.date()})"
            )
        in_cal = daily["day"] <= cal_end
        if not in_cal.any():
            raise ValueError(f"no transactions on or before calibration_end {cal_end.date()}")
        out = _summarise(daily[in_cal], cal_end, freq_days)
        holdout = daily[~in_cal & daily["customer"].isin(out.index)].groupby("customer")["amount"]
        out["frequency_holdout"] = holdout.size().reindex(out.index, fill_value=0).astype(np.int64)
        out["monetary_value_holdout"] = holdout.mean().reindex(out.index, fill_value=0.0).astype(np.float64)
        out["duration_holdout"] = ((obs_end - cal_end) / pd.Timedelta(days=1)) / freq_days
    out.index.name = customer_col
    return out
