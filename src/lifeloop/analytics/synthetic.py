"""Synthetic shop histories at any scale, in the analytics store's ``events`` shape (benchmarks, tests).

Purchases follow the BG/NBD process (each customer buys at a Gamma-distributed Poisson rate and may drop
out after each purchase with a Beta-distributed probability) and order values the Gamma-Gamma model, so
CLV models have something true to find;
browsing events fall between a customer's first day and shortly after their last purchase.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd

from lifeloop.analytics.sync import EVENT_COLUMNS

START = datetime(2023, 1, 1)
BROWSE = np.array(["Page Viewed", "Product Viewed", "Product Added", "Checkout Started", "Menu Clicked"])
CHANNELS = np.array(["line", "wecom", "ads", "search"])


def shop_events(
    users: int,
    *,
    events_per_user: float = 10.0,
    days: int = 730,
    seed: int = 0,
    workspace_id: int = 1,
    params: tuple[float, float, float, float] = (0.243, 4.414, 0.793, 2.426),
    spend: tuple[float, float, float] = (6.25, 3.74, 15.44),
) -> tuple[pd.DataFrame, date]:
    """``(events, last_day)``: about ``users × events_per_user`` events over ``days`` days (UTC days).

    ``params`` are BG/NBD (r, alpha per week, a, b) and ``spend`` Gamma-Gamma (p, q, gamma); the defaults
    are the published CDNOW fits.
    """
    rng = np.random.default_rng(seed)
    r, alpha, a, b = params
    join = rng.integers(0, days - 7, size=users)  # first purchase day
    t_weeks = (days - 1 - join) / 7.0
    lam = rng.gamma(r, 1.0 / alpha, size=users)
    p = rng.beta(a, b, size=users)
    with np.errstate(divide="ignore", over="ignore"):
        lifetime = np.floor(rng.exponential(size=users) / -np.log1p(-p)) + 1.0
    arrivals = rng.poisson(lam * t_weeks)
    repeats = np.minimum(lifetime, arrivals).astype(np.int64)
    # The first `repeats` of `arrivals` uniform points on [0, T]: draw all points, keep each user's smallest.
    owner = np.repeat(np.arange(users), arrivals)
    when = rng.random(owner.size) * t_weeks[owner]
    order = np.lexsort((when, owner))
    owner, when = owner[order], when[order]
    rank = np.arange(owner.size) - np.repeat(np.cumsum(arrivals) - arrivals, arrivals)
    keep = rank < repeats[owner]
    buyer = np.concatenate([np.arange(users), owner[keep]])
    seconds = np.concatenate(
        [join * 86400 + rng.integers(0, 86400, size=users), (join[owner[keep]] + when[keep] * 7) * 86400]
    ).astype(np.int64)
    # Browsing: the rest of the budget, spread from the first day to two weeks after the last purchase.
    last_buy = np.full(users, -1, dtype=np.int64)
    np.maximum.at(last_buy, buyer, seconds)
    n_browse = max(int(users * events_per_user) - buyer.size, 0)
    browser = rng.integers(0, users, size=n_browse)
    lo = join[browser] * 86400
    hi = np.minimum(last_buy[browser] + 14 * 86400, days * 86400 - 1)
    browse_at = lo + (rng.random(n_browse) * (hi - lo + 1)).astype(np.int64)
    total = buyer.size + n_browse
    who = np.concatenate([buyer, browser])
    at = np.concatenate([seconds, browse_at])
    is_order = np.arange(total) < buyer.size
    events = pd.DataFrame(
        {
            "id": np.arange(1, total + 1, dtype=np.int64),
            "workspace_id": np.int64(workspace_id),
            "profile_id": who.astype(np.int64) + 1,
            "type": "track",
            "event": np.where(is_order, "Order Completed", BROWSE[rng.integers(0, BROWSE.size, size=total)]),
            "ts": pd.Timestamp(START) + pd.to_timedelta(at, unit="s"),
        }
    )
    events = events.sort_values("ts", kind="stable").reset_index(drop=True)
    events["id"] = np.arange(1, total + 1, dtype=np.int64)
    ordered = (events["event"] == "Order Completed").to_numpy()
    events["name"] = None
    events["category"] = None
    events["day"] = events["ts"].dt.normalize()  # UTC days; ``load_events`` stores them as DATE
    events["interactive"] = True
    # Spend per Gamma-Gamma (CDNOW: p 6.25, q 3.74, gamma 15.44): customer rate nu ~ Gamma(q, gamma),
    # each order's value ~ Gamma(p, nu).
    p_spend, q_spend, g_spend = spend
    nu = rng.gamma(q_spend, 1.0 / g_spend, size=users)
    value = rng.gamma(p_spend, 1.0 / nu[events["profile_id"].to_numpy() - 1])
    events["revenue"] = np.where(ordered, np.round(value, 2), np.nan)
    first_event = ~events["profile_id"].duplicated().to_numpy()
    events["channel"] = np.where(
        first_event, CHANNELS[(events["profile_id"].to_numpy() * 7) % CHANNELS.size], None
    )
    for column in ("stage", "previous_stage", "lifecycle_model", "journey_id", "journey_group", "segment"):
        events[column] = None
    events["properties"] = None
    return events[EVENT_COLUMNS], (START + timedelta(days=days - 1)).date()


def load_events(con: duckdb.DuckDBPyConnection, events: pd.DataFrame, *, canonical: bool = True) -> None:
    """Append ``events`` (store columns) to the store, and map each profile to itself in ``profile_map``."""
    columns = ", ".join("CAST(day AS DATE)" if c == "day" else c for c in EVENT_COLUMNS)
    con.register("synthetic_events", events)
    con.execute(f"INSERT INTO events SELECT {columns} FROM synthetic_events")
    con.unregister("synthetic_events")
    if canonical:
        con.register("synthetic_map", identity_map(events, int(events["workspace_id"].iloc[0])))
        con.execute(
            "INSERT INTO profile_map SELECT workspace_id, profile_id, canonical_id, updated_at "
            "FROM synthetic_map ON CONFLICT DO NOTHING"
        )
        con.unregister("synthetic_map")


def identity_map(events: pd.DataFrame, workspace_id: int = 1) -> pd.DataFrame:
    """A ``profile_map`` where every profile is its own canonical profile."""
    ids = np.unique(events["profile_id"].to_numpy())
    return pd.DataFrame(
        {
            "workspace_id": workspace_id,
            "profile_id": ids,
            "canonical_id": ids,
            "updated_at": pd.Timestamp(START),
        }
    )
