"""Every metric against an independent plain-pandas computation of its definition, on generated data.

The pandas side below is written from the definitions in docs/analytics.md, not from the SQL, and never
calls lifeloop code (only the generated data and the store loader are shared).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lifeloop.analytics.metrics import build_metric
from lifeloop.analytics.store import open_store
from tests.analytics.generated import History, day, generate, load

WS = 1


@pytest.fixture(scope="module")
def history() -> History:
    return generate(seed=11, users=400, workspace_id=WS)


@pytest.fixture(scope="module")
def con(history: History, tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    path = tmp_path_factory.mktemp("store") / "a.duckdb"
    load(history, path)
    # A second workspace's events must never leak into the first's metrics.
    other = generate(seed=99, users=50, workspace_id=2)
    other.events["id"] += 10_000_000
    load(other, path)
    connection = open_store(path)
    yield connection
    connection.close()


# ------------------------------------------------------------------------------------ pandas reference


def events(history: History) -> pd.DataFrame:
    e = history.events.copy()
    canonical = dict(zip(history.profile_map["profile_id"], history.profile_map["canonical_id"], strict=True))
    e["user"] = e["profile_id"].map(canonical)
    return e.sort_values(["ts", "id"]).reset_index(drop=True)


def population(e: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    users = set(e["user"])
    end = p["end"]
    if p.get("channel"):
        ch = e[e["channel"].notna()].groupby("user").first()["channel"]
        users &= set(ch[ch == p["channel"]].index)
    if p.get("stage"):
        s = e[(e["event"] == "Lifecycle Stage Entered") & (e["day"] <= end)]
        if p.get("stage_model"):
            s = s[s["lifecycle_model"] == p["stage_model"]]
        last = s.groupby("user").last()["stage"]
        users &= set(last[last == p["stage"]].index)
    if p.get("segment"):
        s = e[e["event"].isin(["Segment Entered", "Segment Exited"]) & (e["segment"] == p["segment"])]
        last = s[s["day"] <= end].groupby("user").last()["event"]
        users &= set(last[last == "Segment Entered"].index)
    return e[e["user"].isin(users)]


def days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def first_days(e: pd.DataFrame) -> pd.Series:
    return e[e["interactive"]].groupby("user")["day"].min()


def ref_active_users(e: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    act = e[e["interactive"]][["user", "day"]].drop_duplicates()
    out = []
    for d in days(p["start"], p["end"]):

        def n(lo: int, d: date = d) -> int:
            return act[(act["day"] >= d - timedelta(days=lo)) & (act["day"] <= d)]["user"].nunique()

        dau, wau, mau = n(0), n(6), n(29)
        out.append((d, dau, wau, mau, dau / mau if mau else None))
    return pd.DataFrame(out, columns=["day", "dau", "wau", "mau", "stickiness"])


def ref_new_users(e: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    fd = first_days(e)
    return pd.DataFrame(
        [(d, int((fd == d).sum())) for d in days(p["start"], p["end"])], columns=["day", "new_users"]
    )


def ref_retention(e: pd.DataFrame, p: dict[str, Any], all_events: pd.DataFrame) -> pd.DataFrame:
    last_day = all_events["day"].max()
    fd = first_days(e)
    active = set(map(tuple, e[e["interactive"]][["user", "day"]].to_numpy()))
    out = []
    for cohort in sorted(set(fd[(fd >= p["start"]) & (fd <= p["end"])])):
        members = fd[fd == cohort].index
        row: list[Any] = [cohort, len(members)]
        for n in p["days"]:
            back = sum((u, cohort + timedelta(days=n)) in active for u in members)
            row += [back, back / len(members) if cohort + timedelta(days=n) <= last_day else None]
        out.append(row)
    cols = ["cohort", "users"] + [c for n in p["days"] for c in (f"d{n}_users", f"d{n}")]
    return pd.DataFrame(out, columns=cols)


def start_of(d: date, period: str) -> date:
    return d - timedelta(days=d.weekday()) if period == "week" else date(d.year, d.month, 1)


def index_of(a: date, b: date, period: str) -> int:
    return (b - a).days // 7 if period == "week" else (b.year - a.year) * 12 + b.month - a.month


def ref_cohort_retention(e: pd.DataFrame, p: dict[str, Any], all_events: pd.DataFrame) -> pd.DataFrame:
    period = p["period"]
    last = start_of(all_events["day"].max(), period)
    fd = first_days(e)
    fd = fd[(fd >= p["start"]) & (fd <= p["end"])]
    cohort = fd.map(lambda d: start_of(d, period))
    act = e[e["interactive"]][["user", "day"]].copy()
    act["period"] = act["day"].map(lambda d: start_of(d, period))
    act = act[["user", "period"]].drop_duplicates()
    out = []
    for c in sorted(set(cohort)):
        members = set(cohort[cohort == c].index)
        for k in range(p["periods"]):
            if k > index_of(c, last, period):
                continue
            mine = act[act["user"].isin(members) & (act["period"] >= c)]
            n = int((mine["period"].map(lambda q, c=c: index_of(c, q, period)) == k).sum())
            out.append((c, k, len(members), n, n / len(members)))
    return pd.DataFrame(out, columns=["cohort", "period", "cohort_users", "active_users", "rate"])


def ref_churn(e: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    period = p["period"]
    act = e[e["interactive"]][["user", "day"]].copy()
    act["period"] = act["day"].map(lambda d: start_of(d, period))
    by_period = act.groupby("period")["user"].agg(set)
    out = []
    q = start_of(p["start"], period)
    while q <= p["end"]:
        prev = q - timedelta(days=7) if period == "week" else start_of(q - timedelta(days=1), "month")
        before = by_period.get(prev, set())
        churned = len(before - by_period.get(q, set()))
        out.append((q, len(before), churned, churned / len(before) if before else None))
        q = q + timedelta(days=7) if period == "week" else start_of(q + timedelta(days=32), "month")
    return pd.DataFrame(out, columns=["period", "active_before", "churned", "churn_rate"])


def ref_funnel(e: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    steps, window = p["steps"], timedelta(days=p["window_days"])
    first = e[(e["event"] == steps[0]) & (e["day"] >= p["start"]) & (e["day"] <= p["end"])]
    t1 = first.groupby("user")["ts"].min()
    reached = {u: t for u, t in t1.items()}
    counts = [len(reached)]
    for step in steps[1:]:
        nxt = {}
        for u, t in reached.items():
            cand = e[(e["user"] == u) & (e["event"] == step) & (e["ts"] >= t) & (e["ts"] <= t1[u] + window)]
            if len(cand):
                nxt[u] = cand["ts"].min()
        reached = nxt
        counts.append(len(reached))
    out = pd.DataFrame({"step": range(1, len(steps) + 1), "event": steps, "users": counts})
    out["conversion"] = out["users"] / counts[0]
    out["step_conversion"] = out["users"] / out["users"].shift(1)
    out.loc[0, "step_conversion"] = 1.0
    return out


def ref_paths(e: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    after = p["direction"] == "after"
    links: dict[tuple[int, str, str], int] = {}
    anchors = e[(e["event"] == p["event"]) & (e["day"] >= p["start"]) & (e["day"] <= p["end"])]
    for user, rows in anchors.groupby("user"):
        a = rows.iloc[0]  # e is sorted by (ts, id)
        mine = e[(e["user"] == user) & e["interactive"]]
        key = list(zip(mine["ts"], mine["id"], strict=True))
        if after:
            seq = [ev for k, ev in zip(key, mine["event"], strict=True) if k > (a["ts"], a["id"])]
        else:
            seq = [ev for k, ev in zip(key, mine["event"], strict=True) if k < (a["ts"], a["id"])][::-1]
        path = [p["event"], *seq[: p["depth"]]]
        for i in range(1, len(path)):
            links[(i, path[i - 1], path[i])] = links.get((i, path[i - 1], path[i]), 0) + 1
    out = pd.DataFrame(
        [(s, a, b, n) for (s, a, b), n in links.items()], columns=["step", "source", "target", "users"]
    )
    return out.sort_values(["step", "users", "source", "target"], ascending=[True, False, True, True])


def ref_revenue(e: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    interval = p["interval"]
    r = e[(e["day"] >= p["start"]) & (e["day"] <= p["end"])].copy()
    key = {"day": lambda d: d, "week": lambda d: start_of(d, "week"), "month": lambda d: start_of(d, "month")}
    r["period"] = r["day"].map(key[interval])
    periods = sorted({key[interval](d) for d in days(p["start"], p["end"])})
    out = []
    for q in periods:
        x = r[r["period"] == q]
        o = x[x["event"] == "Order Completed"]
        active, buyers, rev = x[x["interactive"]]["user"].nunique(), o["user"].nunique(), o["revenue"].sum()
        out.append(
            (
                q,
                active,
                buyers,
                len(o),
                rev,
                rev / active if active else None,
                rev / buyers if buyers else None,
            )
        )
    return pd.DataFrame(
        out, columns=["period", "active_users", "purchasers", "orders", "revenue", "arpu", "arppu"]
    )


def ref_repeat(e: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    o = e[(e["event"] == "Order Completed") & (e["day"] >= p["start"]) & (e["day"] <= p["end"])]
    n = o.groupby("user").size()
    return pd.DataFrame(
        [(len(n), int((n >= 2).sum()), (n >= 2).sum() / len(n) if len(n) else None)],
        columns=["purchasers", "repeat_purchasers", "repeat_rate"],
    )


def ref_channel_roi(e: pd.DataFrame, p: dict[str, Any], history: History) -> pd.DataFrame:
    fd = first_days(e)
    fd = fd[(fd >= p["start"]) & (fd <= p["end"])]
    touch = e[e["channel"].notna()].groupby("user").first()["channel"]
    rows: dict[str, list[float]] = {}
    for user, first in fd.items():
        ch = touch.get(user, "(none)")
        o = e[
            (e["user"] == user)
            & (e["event"] == "Order Completed")
            & (e["day"] >= first)
            & (e["day"] <= p["end"])
        ]
        acc = rows.setdefault(ch, [0, 0, 0.0])
        acc[0] += 1
        acc[1] += int(len(o) > 0)
        acc[2] += o["revenue"].fillna(0).sum()
    c = history.costs[(history.costs["day"] >= p["start"]) & (history.costs["day"] <= p["end"])]
    cost = c.groupby("channel")["cost"].sum()
    out = []
    for ch in sorted(set(rows) | set(cost.index)):
        acquired, converted, revenue = rows.get(ch, [0, 0, 0.0])
        spent = cost.get(ch)
        out.append(
            (
                ch,
                acquired,
                converted,
                revenue,
                spent if spent is not None else 0.0,
                spent / acquired if spent is not None and acquired else None,
                spent / converted if spent is not None and converted else None,
                (revenue - spent) / spent if spent else None,
            )
        )
    cols = [
        "channel",
        "acquired",
        "converted",
        "revenue",
        "cost",
        "cost_per_acquired",
        "cost_per_converted",
        "roi",
    ]
    return pd.DataFrame(out, columns=cols)


def ref_stage_distribution(e: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    s = e[e["event"] == "Lifecycle Stage Entered"]
    if p.get("model"):
        s = s[s["lifecycle_model"] == p["model"]]
    counts: dict[tuple[date, str, str], int] = {}
    for d in days(p["start"], p["end"]):
        upto = s[s["day"] <= d]
        for (_user, model), rows in upto.groupby(["user", "lifecycle_model"]):
            k = (d, model, rows.iloc[-1]["stage"])
            counts[k] = counts.get(k, 0) + 1
    out = pd.DataFrame([(*k, n) for k, n in counts.items()], columns=["day", "model", "stage", "users"])
    return out.sort_values(["day", "model", "stage"])


def ref_stage_flows(e: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    s = e[
        (e["event"] == "Lifecycle Stage Entered") & (e["day"] >= p["start"]) & (e["day"] <= p["end"])
    ].copy()
    if p.get("model"):
        s = s[s["lifecycle_model"] == p["model"]]
    s["source"] = s["previous_stage"].fillna("(entry)")
    g = (
        s.groupby(["source", "stage"])
        .agg(transitions=("id", "size"), users=("user", "nunique"))
        .reset_index()
    )
    g = g.rename(columns={"stage": "target"})
    return g.sort_values(["transitions", "source", "target"], ascending=[False, True, True])


def ref_journey(e: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    j = e[
        (e["event"] == "Journey Entered")
        & (e["journey_id"] == p["journey_id"])
        & (e["day"] >= p["start"])
        & (e["day"] <= p["end"])
    ]
    entry = j.groupby("user").first()
    window = timedelta(days=p["window_days"])
    out = []
    for arm, rows in entry.groupby(entry["journey_group"].fillna("treatment")):
        conv = 0
        for user, r in rows.iterrows():
            g = e[
                (e["user"] == user)
                & (e["event"] == p["goal"])
                & (e["ts"] >= r["ts"])
                & (e["ts"] <= r["ts"] + window)
            ]
            conv += int(len(g) > 0)
        out.append((arm, len(rows), conv, conv / len(rows)))
    frame = pd.DataFrame(out, columns=["arm", "users", "converted", "rate"])
    control = frame[frame["arm"] == "control"].iloc[0]
    uplift: list[float | None] = []
    pvals: list[float | None] = []
    for _, r in frame.iterrows():
        if r["arm"] == "control":
            uplift.append(None)
            pvals.append(None)
            continue
        uplift.append(r["rate"] - control["rate"])
        # chi-square on the 2x2 table without continuity correction equals the pooled two-proportion z-test
        table = [
            [r["converted"], r["users"] - r["converted"]],
            [control["converted"], control["users"] - control["converted"]],
        ]
        pvals.append(stats.chi2_contingency(table, correction=False)[1])
    frame["uplift"] = pd.Series(uplift, dtype="float64")
    frame["p_value"] = pd.Series(pvals, dtype="float64")
    return frame


# ------------------------------------------------------------------------------------------- cases

BASE = {"start": day(30), "end": day(100)}
CASES: list[tuple[str, dict[str, Any]]] = [
    ("active_users", {}),
    ("active_users", {"channel": "line"}),
    ("active_users", {"stage": "loyal", "stage_model": "line"}),
    ("active_users", {"segment": "vip"}),
    ("new_users", {}),
    ("new_users", {"channel": "wecom", "segment": "vip"}),
    ("retention", {"days": [1, 7, 30]}),
    ("retention", {"days": [2, 14], "stage": "silent"}),
    ("cohort_retention", {"period": "week", "periods": 6}),
    ("cohort_retention", {"period": "month", "periods": 4, "start": day(0), "end": day(149)}),
    ("churn_rate", {"period": "month"}),
    ("churn_rate", {"period": "week", "channel": "ads"}),
    ("funnel", {"steps": ["Product Viewed", "Product Added", "Order Completed"], "window_days": 7}),
    ("funnel", {"steps": ["Page Viewed", "Checkout Started"], "window_days": 2, "segment": "newsletter"}),
    ("paths", {"event": "Product Added", "direction": "after", "depth": 3}),
    ("paths", {"event": "Order Completed", "direction": "before", "depth": 2}),
    ("revenue", {"interval": "day"}),
    ("revenue", {"interval": "week", "channel": "line"}),
    ("revenue", {"interval": "month", "start": day(3), "end": day(140)}),
    ("repeat_purchase", {}),
    ("repeat_purchase", {"stage": "new"}),
    ("channel_roi", {}),
    ("stage_distribution", {"model": "line"}),
    ("stage_distribution", {"start": day(10), "end": day(20)}),
    ("stage_flows", {}),
    ("stage_flows", {"model": "mall"}),
    ("journey_conversion", {"journey_id": "1", "goal": "Order Completed", "window_days": 7}),
    ("journey_conversion", {"journey_id": "2", "goal": "Product Added", "window_days": 14}),
]


def reference(name: str, p: dict[str, Any], history: History) -> pd.DataFrame:
    e = events(history)
    pop = population(e, p)
    match name:
        case "active_users":
            return ref_active_users(pop, p)
        case "new_users":
            return ref_new_users(pop, p)
        case "retention":
            return ref_retention(pop, p, e)
        case "cohort_retention":
            return ref_cohort_retention(pop, p, e)
        case "churn_rate":
            return ref_churn(pop, p)
        case "funnel":
            return ref_funnel(pop, p)
        case "paths":
            return ref_paths(pop, p)
        case "revenue":
            return ref_revenue(pop, p)
        case "repeat_purchase":
            return ref_repeat(pop, p)
        case "channel_roi":
            return ref_channel_roi(pop, p, history)
        case "stage_distribution":
            return ref_stage_distribution(pop, p)
        case "stage_flows":
            return ref_stage_flows(pop, p)
        case "journey_conversion":
            return ref_journey(pop, p)
    raise AssertionError(name)


def normalise(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    def cell(v: Any) -> Any:
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        if isinstance(v, pd.Timestamp):
            return v.date()
        return v

    return [tuple(cell(v) for v in row) for row in frame.itertuples(index=False, name=None)]


def same(a: Any, b: Any) -> bool:
    """Counts, names and dates exactly; sums and ratios of floats to 1e-9 (addition order differs)."""
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b and type(a) is type(b) if isinstance(a, date) else a == b


@pytest.mark.parametrize(("name", "params"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_metric_matches_pandas(
    name: str, params: dict[str, Any], con: duckdb.DuckDBPyConnection, history: History
) -> None:
    p = {**BASE, **params}
    metric = build_metric(name, {"workspace_id": WS, **p})
    # Both paths: the rollups where they answer the parameters, and the raw events always.
    got, raw = metric.run(con).frame, metric.run(con, use_rollups=False).frame
    p = {**metric.model_dump(), **p}  # defaults (window_days, direction…) as the metric saw them
    expected = reference(name, p, history)
    x = normalise(expected)
    assert len(x) > 0
    for frame in (got, raw):
        assert list(frame.columns) == list(expected.columns)
        g = normalise(frame)
        assert len(g) == len(x), f"{len(g)} rows, expected {len(x)}"
        for row_got, row_exp in zip(g, x, strict=True):
            assert len(row_got) == len(row_exp)
            assert all(same(a, b) for a, b in zip(row_got, row_exp, strict=True)), (row_got, row_exp)
    pd.testing.assert_frame_equal(got, raw, check_exact=False, rtol=0, atol=1e-9)
