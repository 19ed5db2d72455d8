"""Benchmark the DuckDB analytics (RFM, retention, CLV summary) against plain pandas, and the CLV model
fits against the `lifetimes` package, on one synthetic shop.

Data: `lifeloop.analytics.synthetic.shop_events` — by default 1,000,000 customers and 10,000,000 events
over two years; purchases follow BG/NBD at the CDNOW parameters, the rest is browsing.

For each computation, in the same run on the same data:
- DuckDB: the product's own SQL (`rfm_query`, the `retention` and `cohort_retention` metrics,
  `clv_summary_query`) on the analytics store file, as the product runs it: from the per-profile rollups the
  sync maintains (`lifeloop.analytics.rollups`; reading their coverage is part of the timed call), and,
  for comparison, the same definitions from the raw events;
- pandas: the same definitions written as idiomatic vectorised pandas (groupby / rank / merge) on an in-memory
  DataFrame already holding the events (loading is not counted against pandas);
and all results are checked to be equal before any time is reported.

What the rollups cost is measured too: building them from scratch over all events (what a store upgrade or
rebuild does), and keeping them current: appending one more chunk of events (100,000 and 10,000: the sync's
default) through the sync's own per-chunk step, events and rollups in one transaction. After that chunk the
rollup answers are checked again against the raw-event answers.

Then BG/NBD and Gamma-Gamma are fitted on the resulting customer summary by lifeloop and by `lifetimes`
(parameters compared, best of N fits each).

Run:  python bench/analytics.py [--users 1000000] [--events-per-user 10] [--fit-repeats 3]
Writes bench/results/analytics.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# One BLAS thread for both fits: SciPy's L-BFGS-B slows sharply when OpenBLAS threads compete for 2 busy
# cores (see the CLV section of docs/benchmarks.md); set before NumPy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
try:
    import lifeloop  # noqa: F401
except ImportError:  # a checkout without the package installed
    sys.path.insert(0, str(ROOT / "src"))

import duckdb  # noqa: E402

from lifeloop.analytics.clv import BetaGeoModel, GammaGammaModel, rfm_summary  # noqa: E402
from lifeloop.analytics.metrics import CohortRetention, Retention  # noqa: E402
from lifeloop.analytics.rfm import RfmConfig, rfm_query  # noqa: E402
from lifeloop.analytics.rollups import append_events, read_rollups, rebuild  # noqa: E402
from lifeloop.analytics.service import clv_summary_query  # noqa: E402
from lifeloop.analytics.store import open_store  # noqa: E402
from lifeloop.analytics.synthetic import load_events, shop_events  # noqa: E402

ORDER = "Order Completed"


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[Any, float]:
    """Best wall time of ``repeats`` runs (seconds) and the last result."""
    best = float("inf")
    result = None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return result, best


# ----------------------------------------------------------------------------------------- pandas versions


def pandas_rfm(df: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    at = pd.Timestamp(as_of.replace(tzinfo=None))
    ev = df[df["ts"] < at]
    out = ev.loc[ev["interactive"]].groupby("user")["ts"].min().rename("first_seen").to_frame()
    orders = ev.loc[ev["event"] == ORDER]
    g = orders.groupby("user")
    agg = g.agg(
        orders=("ts", "size"),
        monetary=("revenue", "sum"),
        first_order=("ts", "min"),
        last_order=("ts", "max"),
    )
    out = out.join(agg)
    out["orders"] = out["orders"].fillna(0).astype(np.int64)
    out["monetary"] = out["monetary"].fillna(0.0).round(6)  # as the SQL: equal spend ranks equal
    out["recency_days"] = (at - out["last_order"]).dt.total_seconds() // 86400
    buyers = out["orders"] > 0
    n = int(buyers.sum())
    b = out.loc[buyers]

    def quint(s: pd.Series) -> pd.Series:
        return 1 + (5 * (s.rank(method="min").astype(np.int64) - 1)) // n

    out.loc[buyers, "r"] = quint(-b["recency_days"])
    out.loc[buyers, "f"] = quint(b["orders"])
    out.loc[buyers, "m"] = quint(b["monetary"])
    r, f, m, k = out["r"], out["f"], out["m"], out["orders"]
    out["layer"] = np.select(
        [
            (r >= 4) & (f >= 4) & (m >= 4),
            (k == 1) & (out["first_order"] > at - timedelta(days=30)),
            (r >= 3) & ((f >= 4) | (m >= 4)),
            ((k == 0) & (out["first_seen"] < at - timedelta(days=30))) | ((r == 1) & (f == 1)),
            (r <= 2) & (k >= 1),
        ],
        ["high_value", "new", "potential", "lost", "sleeping"],
        "regular",
    )
    return out.sort_index()


def pandas_retention(df: pd.DataFrame, start: Any, end: Any, days: list[int]) -> pd.DataFrame:
    act = df.loc[df["interactive"], ["user", "day"]].drop_duplicates()
    first = act.groupby("user")["day"].min().rename("first")
    act = act.join(first, on="user")
    act = act[(act["first"] >= start) & (act["first"] <= end)]
    act["k"] = (act["day"] - act["first"]).dt.days
    out = act.loc[act["k"] == 0].groupby("first").size().rename("users").to_frame()
    for n in days:
        out[f"d{n}_users"] = act.loc[act["k"] == n].groupby("first").size().reindex(out.index, fill_value=0)
    return out


def pandas_cohorts(df: pd.DataFrame, start: Any, end: Any, periods: int) -> pd.DataFrame:
    act = df.loc[df["interactive"], ["user", "day"]]
    first = act.groupby("user")["day"].min()
    first = first[(first >= start) & (first <= end)]
    # months as integers (year * 12 + month): vectorised, no Period objects
    month = act["day"].dt.year.to_numpy() * 12 + act["day"].dt.month.to_numpy()
    p = pd.DataFrame({"user": act["user"].to_numpy(), "month": month}).drop_duplicates()
    cohort = (first.dt.year * 12 + first.dt.month).rename("cohort")
    p = p.join(cohort, on="user", how="inner")
    p["k"] = p["month"] - p["cohort"]
    p = p[p["k"] < periods]
    return p.groupby(["cohort", "k"]).size().rename("active_users").to_frame()


def pandas_clv_summary(df: pd.DataFrame, last_day: Any) -> pd.DataFrame:
    orders = df.loc[df["event"] == ORDER, ["user", "day", "revenue"]]
    return rfm_summary(orders, "user", "day", "revenue", last_day, freq_days=7.0)


def next_chunk(events: pd.DataFrame, last_day: Any, size: int, first_id: int, seed: int) -> pd.DataFrame:
    """``size`` further events of existing customers on the day after ``last_day``, with ids from
    ``first_id``: what the next sync chunk of a live shop looks like (orders at the data's own share)."""
    rng = np.random.default_rng(seed)
    chunk = events.iloc[rng.integers(0, len(events), size=size)].copy()
    chunk["id"] = first_id + np.arange(size, dtype=np.int64)
    start = pd.Timestamp(last_day) + pd.Timedelta(days=1)
    chunk["ts"] = start + pd.to_timedelta(np.sort(rng.integers(0, 86400, size=size)), unit="s")
    chunk["day"] = chunk["ts"].dt.date
    chunk["channel"] = None
    return chunk.reset_index(drop=True)


# -------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events-per-user", type=float, default=10.0)
    parser.add_argument("--fit-repeats", type=int, default=3)
    parser.add_argument("--no-lifetimes", action="store_true", help="Skip the lifetimes comparison.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "analytics.json")
    args = parser.parse_args()

    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "duckdb": duckdb.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
        },
    }

    events, t_gen = timed(lambda: shop_events(args.users, events_per_user=args.events_per_user, seed=42))
    events, last_day = events
    print(f"generated {len(events):,} events for {args.users:,} customers in {t_gen:.1f} s", flush=True)
    results["data"] = {
        "customers": args.users,
        "events": len(events),
        "orders": int((events["event"] == ORDER).sum()),
    }

    workdir = Path(tempfile.mkdtemp(prefix="lifeloop-bench-"))
    con = open_store(workdir / "analytics.duckdb")
    _, t_load = timed(lambda: load_events(con, events))
    print(f"loaded into DuckDB in {t_load:.1f} s", flush=True)
    results["load_seconds"] = t_load
    _, t_build = timed(lambda: rebuild(con, 1))
    sizes = {
        t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchall()[0][0]
        for t in ("profile_days", "profile_summary", "cohort_counts")
    }
    print(f"rollups built from scratch in {t_build:.1f} s ({sizes})", flush=True)
    results["rollups"] = {"build_from_scratch_s": t_build, "rows": sizes}

    # pandas gets the events in memory, typed as a pandas user would have them.
    pdf = pd.DataFrame(
        {
            "user": events["profile_id"].to_numpy(),
            "ts": events["ts"].to_numpy(),
            "day": events["day"].to_numpy(),
            "event": events["event"].astype("category"),
            "revenue": events["revenue"].to_numpy(),
            "interactive": events["interactive"].to_numpy(dtype=bool),
        }
    )
    first_day = pdf["day"].min().date()
    as_of = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    start, end = first_day, last_day - timedelta(days=31)
    rows: list[dict[str, Any]] = []

    def compare(
        name: str,
        duck: Callable[[bool], Any],
        pand: Callable[[], Any],
        check: Callable[[Any, Any], None],
    ) -> None:
        d, t_d = timed(lambda: duck(True))
        r, t_r = timed(lambda: duck(False))
        p, t_p = timed(pand)
        check(d, p)
        check(r, p)
        rows.append(
            {
                "computation": name,
                "duckdb_s": t_d,
                "duckdb_raw_events_s": t_r,
                "pandas_s": t_p,
                "speedup": t_p / t_d,
                "speedup_raw_events": t_p / t_r,
            }
        )
        print(
            f"{name:<28} duckdb {t_d:7.2f} s (raw events {t_r:5.2f} s)   pandas {t_p:7.2f} s   "
            f"× {t_p / t_d:.1f} (raw × {t_p / t_r:.1f})",
            flush=True,
        )

    def rollups_if(use: bool) -> Any:
        """The coverage the product reads before each query (None: the raw-event SQL)."""
        return read_rollups(con, 1) if use else None

    def duck_rfm(use: bool, at: datetime = as_of) -> pd.DataFrame:
        return con.sql(rfm_query(1, at, RfmConfig(), rollups_if(use))).to_arrow_table().to_pandas()

    def duck_summary(use: bool, day: Any = last_day) -> pd.DataFrame:
        sql = clv_summary_query(1, day, 7.0, rollups_if(use))
        return con.sql(sql).to_arrow_table().to_pandas().set_index("user_id")

    # RFM scores and layers
    def check_rfm(d: pd.DataFrame, p: pd.DataFrame) -> None:
        d = d.set_index("user_id").sort_index()
        assert list(d.index) == list(p.index)
        assert (d["orders"].to_numpy() == p["orders"].to_numpy()).all()
        for col in ("r", "f", "m"):
            differ = d[col].fillna(0).to_numpy(dtype=np.int64) != p[col].fillna(0).to_numpy(dtype=np.int64)
            assert not differ.any(), (
                f"{col} differs for {differ.sum()} users, e.g. {d.index[differ][:5].tolist()}"
            )
        assert (d["layer"].to_numpy() == p["layer"].to_numpy()).all()

    compare("RFM scores + layers", duck_rfm, lambda: pandas_rfm(pdf, as_of), check_rfm)

    # N-day retention by daily cohort
    retention = Retention(workspace_id=1, start=start, end=end, days=[1, 7, 30])

    def check_retention(d: Any, p: pd.DataFrame) -> None:
        frame = d.frame.set_index("cohort")
        p.index = [x.date() if hasattr(x, "date") else x for x in p.index]
        assert list(frame.index) == list(p.index)
        for col in ("users", "d1_users", "d7_users", "d30_users"):
            assert (frame[col].to_numpy() == p[col].to_numpy()).all(), col

    compare(
        "D1/D7/D30 retention",
        lambda use: retention.run(con, use_rollups=use),
        lambda: pandas_retention(pdf, pd.Timestamp(start), pd.Timestamp(end), [1, 7, 30]),
        check_retention,
    )

    cohorts = CohortRetention(workspace_id=1, start=start, end=end, period="month", periods=12)

    def check_cohorts(d: Any, p: pd.DataFrame) -> None:
        frame = d.frame
        got = {
            (c.strftime("%Y-%m"), int(k)): int(n)
            for c, k, n in frame[["cohort", "period", "active_users"]].to_numpy()
            if n
        }
        exp = {
            (f"{(c - 1) // 12}-{(c - 1) % 12 + 1:02d}", int(k)): int(n)
            for (c, k), n in p["active_users"].items()
        }
        assert got == exp

    compare(
        "monthly cohort retention",
        lambda use: cohorts.run(con, use_rollups=use),
        lambda: pandas_cohorts(pdf, pd.Timestamp(start), pd.Timestamp(end), 12),
        check_cohorts,
    )

    def check_summary(d: pd.DataFrame, p: pd.DataFrame) -> None:
        assert list(d.index) == list(p.index)
        assert (d["frequency"].to_numpy() == p["frequency"].to_numpy()).all()
        for col in ("recency", "T", "monetary_value"):
            assert np.allclose(d[col].to_numpy(), p[col].to_numpy(), rtol=1e-9, atol=1e-9), col

    compare(
        "CLV summary (F, R, T, M)",
        duck_summary,
        lambda: pandas_clv_summary(pdf, pd.Timestamp(last_day)),
        check_summary,
    )
    results["analytics"] = rows
    total = {k: sum(r[k] for r in rows) for k in ("duckdb_s", "duckdb_raw_events_s", "pandas_s")}
    total["speedup"] = total["pandas_s"] / total["duckdb_s"]
    total["speedup_raw_events"] = total["pandas_s"] / total["duckdb_raw_events_s"]
    results["analytics_total"] = total
    print(
        f"{'total':<28} duckdb {total['duckdb_s']:7.2f} s (raw events {total['duckdb_raw_events_s']:5.2f} s)"
        f"   pandas {total['pandas_s']:7.2f} s   × {total['speedup']:.1f}"
        f" (raw × {total['speedup_raw_events']:.1f})"
    )
    summary = duck_summary(True)

    # ---- keeping the rollups current: the sync's per-chunk step (events + rollups, one transaction)
    incremental: dict[str, Any] = {}
    next_id = int(events["id"].max()) + 1
    for size in (100_000, 10_000):
        chunk = next_chunk(events, last_day + timedelta(days=len(incremental)), size, next_id, seed=size)
        next_id += size
        con.register("bench_chunk", chunk)

        def append() -> int:
            con.begin()
            added = append_events(con, "bench_chunk")
            con.commit()
            return added

        added, t_chunk = timed(append)
        assert added == size, f"{added} of {size} events appended"
        con.unregister("bench_chunk")
        incremental[f"chunk_{size}_events_s"] = t_chunk
        print(f"one sync chunk of {size:,} events (events + rollups): {t_chunk:.2f} s", flush=True)
    # The rollups still answer exactly what the raw events do (a new as-of past the added days).
    after_day = last_day + timedelta(days=2)
    after = datetime.combine(after_day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    check_rfm(duck_rfm(True, after), duck_rfm(False, after).set_index("user_id").sort_index())
    for metric in (
        Retention(workspace_id=1, start=start, end=after_day, days=[1, 7, 30]),
        CohortRetention(workspace_id=1, start=start, end=after_day, period="month", periods=12),
    ):
        pd.testing.assert_frame_equal(metric.run(con).frame, metric.run(con, use_rollups=False).frame)
    pd.testing.assert_frame_equal(
        duck_summary(True, after_day), duck_summary(False, after_day), check_exact=False, rtol=1e-9
    )
    print("after the added chunks, rollup answers still equal raw-event answers", flush=True)
    incremental["checked_equal_after"] = True
    results["rollups"]["incremental"] = incremental

    # ---- CLV model fits vs lifetimes (on the summary before the added chunks)
    con.close()
    x, tx, t, mv = summary["frequency"], summary["recency"], summary["T"], summary["monetary_value"]
    repeat = (x > 0) & (mv > 0)
    bg, t_bg = timed(lambda: BetaGeoModel().fit(x, tx, t), args.fit_repeats)
    gg, t_gg = timed(lambda: GammaGammaModel().fit(x[repeat], mv[repeat]), args.fit_repeats)
    fits: dict[str, Any] = {
        "customers": len(summary),
        "repeat_customers": int(repeat.sum()),
        "lifeloop": {
            "bgnbd_s": t_bg,
            "gamma_gamma_s": t_gg,
            "bgnbd": bg.params._asdict(),
            "gamma_gamma": gg.params._asdict(),
        },
    }
    print(f"lifeloop fit: BG/NBD {t_bg:.2f} s {bg.params}, Gamma-Gamma {t_gg:.2f} s {gg.params}", flush=True)
    if not args.no_lifetimes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                import lifetimes
            except ImportError as error:
                lifetimes = None
                print(f"lifetimes not available ({error})", file=sys.stderr)
        if lifetimes is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lbg, lt_bg = timed(lambda: lifetimes.BetaGeoFitter().fit(x, tx, t), args.fit_repeats)
                lgg, lt_gg = timed(
                    lambda: lifetimes.GammaGammaFitter().fit(x[repeat], mv[repeat]), args.fit_repeats
                )
            lp = {k: float(lbg.params_[k]) for k in ("r", "alpha", "a", "b")}
            lq = {k: float(lgg.params_[k]) for k in ("p", "q", "v")}
            fits["lifetimes"] = {"bgnbd_s": lt_bg, "gamma_gamma_s": lt_gg, "bgnbd": lp, "gamma_gamma": lq}
            ours = {**bg.params._asdict(), **{"p": gg.params.p, "q": gg.params.q, "v": gg.params.gamma}}
            theirs = {**lp, **lq}
            fits["max_relative_parameter_difference"] = max(
                abs(ours[k] - theirs[k]) / abs(theirs[k]) for k in theirs
            )
            fits["speedup"] = {"bgnbd": lt_bg / t_bg, "gamma_gamma": lt_gg / t_gg}
            print(f"lifetimes fit: BG/NBD {lt_bg:.2f} s {lp}, Gamma-Gamma {lt_gg:.2f} s {lq}")
            print(
                f"speed-up × {lt_bg / t_bg:.1f} (BG/NBD), × {lt_gg / t_gg:.1f} (Gamma-Gamma); "
                f"max parameter difference {fits['max_relative_parameter_difference']:.1e}"
            )
    results["clv_fit"] = fits
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
