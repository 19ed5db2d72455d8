"""Benchmark lifeloop's BG/NBD and Gamma-Gamma fits against the `lifetimes` package.

Data sets: the CDNOW summary shipped in tests/data/cdnow (2,357 customers, weeks) and a synthetic sample drawn
from the BG/NBD generative process at the published CDNOW parameters (default 200,000 customers, T uniform
on 13..78 weeks), with Gamma-Gamma spend for its repeat buyers.

For each data set and model: fit wall time (best and median of several runs, after a warm-up), fitted
parameters of both implementations, and the total log-likelihood of both parameter sets evaluated by the
same (lifeloop) code, since lifetimes stores a per-customer mean on rescaled time. On CDNOW it also checks
that both implementations give the same predictions and CLV at identical parameters.

Run:  python bench/clv_fit.py            (lifetimes is optional: pip install lifetimes 'setuptools<81')
Writes bench/results/clv_fit.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy

ROOT = Path(__file__).resolve().parents[1]
try:
    from lifeloop.analytics.clv import BetaGeoModel, GammaGammaModel, customer_lifetime_value
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(ROOT / "src"))
    from lifeloop.analytics.clv import BetaGeoModel, GammaGammaModel, customer_lifetime_value

CDNOW_CSV = ROOT / "tests" / "data" / "cdnow" / "cdnow_customers_summary_with_transactions.csv"
BGNBD_TRUE = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
GG_TRUE = {"p": 6.25, "q": 3.74, "gamma": 15.44}


def _load_lifetimes() -> Any:
    """Import lifetimes if available; it imports pkg_resources and emits deprecation noise on import."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import lifetimes
        except ImportError as exc:
            print(f"lifetimes not available ({exc}); benchmarking lifeloop only", file=sys.stderr)
            return None
    return lifetimes


def _time(fn: Callable[[], Any], repeats: int) -> tuple[Any, dict[str, float]]:
    """Run once to warm up, then ``repeats`` timed runs; return the last result and timings in seconds."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, {"best_s": min(times), "median_s": statistics.median(times), "runs": repeats}


def _datasets(n_synthetic: int, seed: int) -> dict[str, pd.DataFrame]:
    cdnow = pd.read_csv(CDNOW_CSV, index_col="ID").rename(
        columns={"x": "frequency", "t_x": "recency", "zbar": "monetary_value"}
    )
    rng = np.random.default_rng(seed)
    sim = BetaGeoModel.from_params(**BGNBD_TRUE).sample(
        n_synthetic, rng.uniform(13.0, 78.0, size=n_synthetic), rng=rng
    )
    sim["monetary_value"] = GammaGammaModel.from_params(**GG_TRUE).sample_monetary(sim["frequency"], rng)
    return {"cdnow": cdnow, f"synthetic_{n_synthetic // 1000}k": sim}


def _bench_bgnbd(data: pd.DataFrame, lifetimes: Any, repeats: int, lt_repeats: int) -> dict[str, Any]:
    f, r, t = data["frequency"], data["recency"], data["T"]
    ours, ours_time = _time(lambda: BetaGeoModel().fit(f, r, t), repeats)
    out: dict[str, Any] = {
        "n_customers": len(data),
        "lifeloop": {
            "params": ours.params._asdict(),
            "std_errors": ours.standard_errors._asdict(),
            "total_log_likelihood": ours.log_likelihood,
            "n_eval": ours.fit_summary.n_eval,
            **ours_time,
        },
    }
    if lifetimes is None:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, theirs_time = _time(lambda: lifetimes.BetaGeoFitter().fit(f, r, t), lt_repeats)
    params = {k: float(theirs.params_[k]) for k in ("r", "alpha", "a", "b")}
    same_code_ll = float(BetaGeoModel.from_params(**params).customer_log_likelihood(f, r, t).sum())
    out["lifetimes"] = {"params": params, "total_log_likelihood": same_code_ll, **theirs_time}
    out["max_rel_param_diff"] = max(abs(params[k] / ours.params._asdict()[k] - 1) for k in params)
    out["speedup"] = theirs_time["median_s"] / ours_time["median_s"]
    return out


def _bench_gamma_gamma(data: pd.DataFrame, lifetimes: Any, repeats: int, lt_repeats: int) -> dict[str, Any]:
    rep = data[data["frequency"] > 0]
    f, m = rep["frequency"], rep["monetary_value"]
    ours, ours_time = _time(lambda: GammaGammaModel().fit(f, m), repeats)
    out: dict[str, Any] = {
        "n_repeat_buyers": len(rep),
        "lifeloop": {
            "params": ours.params._asdict(),
            "total_log_likelihood": ours.log_likelihood,
            **ours_time,
        },
    }
    if lifetimes is None:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, theirs_time = _time(lambda: lifetimes.GammaGammaFitter().fit(f, m), lt_repeats)
    params = {
        "p": float(theirs.params_["p"]),
        "q": float(theirs.params_["q"]),
        "gamma": float(theirs.params_["v"]),
    }
    out["lifetimes"] = {"params": params, **theirs_time}
    out["max_rel_param_diff"] = max(abs(params[k] / ours.params._asdict()[k] - 1) for k in params)
    out["speedup"] = theirs_time["median_s"] / ours_time["median_s"]
    return out


def _prediction_agreement(data: pd.DataFrame, lifetimes: Any) -> dict[str, float]:
    """Max relative differences between the two implementations' predictions at identical parameters."""
    f, r, t, m = data["frequency"], data["recency"], data["T"], data["monetary_value"]
    bg = BetaGeoModel().fit(f, r, t)
    gg = GammaGammaModel().fit(f, m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lbg = lifetimes.BetaGeoFitter().fit(f, r, t)
        lgg = lifetimes.GammaGammaFitter().fit(f[f > 0], m[f > 0])
        lbg.params_[["r", "alpha", "a", "b"]] = list(bg.params)
        lgg.params_[["p", "q", "v"]] = list(gg.params)
        their_alive = lbg.conditional_probability_alive(f, r, t)
        their_e39 = lbg.conditional_expected_number_of_purchases_up_to_time(39.0, f, r, t)
        their_ex = lbg.expected_number_of_purchases_up_to_time(np.array([1.0, 39.0, 78.0]))
        their_clv = lgg.customer_lifetime_value(lbg, f, r, t, m, time=12, discount_rate=0.01, freq="W")

    def rel(a: Any, b: Any) -> float:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))

    # lifetimes' weekly month is 4.345 weeks.
    our_clv = customer_lifetime_value(
        bg, gg, f, r, t, m, months=12, period_days=7.0, days_per_month=4.345 * 7
    )
    return {
        "p_alive": rel(bg.conditional_probability_alive(f, r, t), their_alive),
        "conditional_expected_purchases_39w": rel(
            bg.conditional_expected_purchases(39.0, f, r, t), their_e39
        ),
        "expected_purchases": rel(bg.expected_purchases(np.array([1.0, 39.0, 78.0])), their_ex),
        "clv_12m": rel(our_clv, their_clv),
    }


def _table(results: dict[str, Any]) -> str:
    lines = [
        f"{'data set':<16}{'model':<12}{'impl':<11}{'fit median s':>13}{'best s':>9}  params"
        + f"{'total LL':>40}",
        "-" * 120,
    ]
    for name, res in results["datasets"].items():
        for model in ("bgnbd", "gamma_gamma"):
            for impl in ("lifeloop", "lifetimes"):
                row = res[model].get(impl)
                if row is None:
                    continue
                params = " ".join(f"{k}={v:.4f}" for k, v in row["params"].items())
                ll = row.get("total_log_likelihood")
                ll_text = f"{ll:.2f}" if ll is not None else "-"
                lines.append(
                    f"{name:<16}{model:<12}{impl:<11}{row['median_s']:>13.4f}{row['best_s']:>9.4f}  "
                    f"{params:<44}{ll_text:>14}"
                )
            if "speedup" in res[model]:
                lines.append(
                    f"{'':<16}{'':<12}{'':<11}speed-up x{res[model]['speedup']:.1f}, "
                    f"max relative parameter difference {res[model]['max_rel_param_diff']:.1e}"
                )
    if "prediction_agreement_cdnow" in results:
        agree = ", ".join(f"{k} {v:.1e}" for k, v in results["prediction_agreement_cdnow"].items())
        lines.append(f"max relative prediction difference at identical parameters (CDNOW): {agree}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-synthetic", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of lifeloop's fits")
    parser.add_argument("--lifetimes-repeats", type=int, default=3, help="timed runs of lifetimes' fits")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "clv_fit.json")
    args = parser.parse_args(argv)

    lifetimes = _load_lifetimes()
    results: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "pandas": pd.__version__,
            "lifetimes": getattr(lifetimes, "__version__", None),
            # Timings are only comparable on an idle machine; BLAS thread pools slow down badly under load.
            "load_average_1m_at_start": os.getloadavg()[0],
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        },
        "synthetic": {"n": args.n_synthetic, "seed": args.seed, "bgnbd_true": BGNBD_TRUE, "gg_true": GG_TRUE},
        "datasets": {},
    }
    for name, data in _datasets(args.n_synthetic, args.seed).items():
        lt_repeats = args.lifetimes_repeats if len(data) < 50_000 else max(1, args.lifetimes_repeats - 1)
        results["datasets"][name] = {
            "bgnbd": _bench_bgnbd(data, lifetimes, args.repeats, lt_repeats),
            "gamma_gamma": _bench_gamma_gamma(data, lifetimes, args.repeats, lt_repeats),
        }
        if name == "cdnow" and lifetimes is not None:
            results["prediction_agreement_cdnow"] = _prediction_agreement(data, lifetimes)

    results["environment"]["load_average_1m_at_end"] = os.getloadavg()[0]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.output)
    print(_table(results))
    print(f"\nwrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
