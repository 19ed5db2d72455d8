"""Tests for lifeloop.analytics.clv: RFM summary, BG/NBD, Gamma-Gamma, CLV and churn risk."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special
from scipy.optimize import check_grad

from lifeloop.analytics.clv import (
    BetaGeoModel,
    BetaGeoParams,
    GammaGammaModel,
    NotFittedError,
    churn_risk,
    customer_lifetime_value,
    rfm_summary,
)
from lifeloop.analytics.clv import bgnbd as bgnbd_module
from lifeloop.analytics.clv import gamma_gamma as gg_module

CDNOW = Path(__file__).resolve().parents[1] / "data" / "cdnow"
CDNOW_PARAMS = BetaGeoParams(r=0.243, alpha=4.414, a=0.793, b=2.426)


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cdnow_transactions() -> pd.DataFrame:
    tx = pd.read_csv(
        CDNOW / "CDNOW_sample.txt",
        sep=r"\s+",
        header=None,
        names=["orig_id", "customer", "date", "cds", "amount"],
        dtype={"orig_id": str, "customer": np.int64, "date": str},
    )
    tx["date"] = pd.to_datetime(tx["date"], format="%Y%m%d")
    return tx


@pytest.fixture(scope="module")
def cdnow_summary() -> pd.DataFrame:
    return pd.read_csv(CDNOW / "cdnow_customers_summary_with_transactions.csv", index_col="ID")


@pytest.fixture(scope="module")
def cdnow_bgnbd(cdnow_summary: pd.DataFrame) -> BetaGeoModel:
    s = cdnow_summary
    return BetaGeoModel().fit(s["x"], s["t_x"], s["T"])


@pytest.fixture(scope="module")
def cdnow_gg(cdnow_summary: pd.DataFrame) -> GammaGammaModel:
    return GammaGammaModel().fit(cdnow_summary["x"], cdnow_summary["zbar"])


# ----------------------------------------------- independent numerical integration of the BG/NBD model


def _lambda_integral(x: int, c: float, f, r: float, alpha: float) -> float:
    """Quadrature of int_0^inf lambda^x e^(-lambda c) f(lambda) Gamma(lambda; shape r, rate alpha) dlambda."""
    s = alpha + c
    k = x + r - 1.0
    upper = 60.0 + 4.0 * (x + r)  # exp(-u) u^k is negligible beyond this in u = lambda * s
    opts = {"epsabs": 0.0, "epsrel": 1e-10, "limit": 200}
    # The algebraic weight handles the u^k singularity at 0 (k < 0 when x == 0); plain quad does the rest.
    head = integrate.quad(lambda u: math.exp(-u) * f(u / s), 0.0, 1.0, weight="alg", wvar=(k, 0.0), **opts)[0]
    tail = integrate.quad(lambda u: math.exp(k * math.log(u) - u) * f(u / s), 1.0, upper, **opts)[0]
    return (head + tail) * math.exp(r * math.log(alpha) - special.gammaln(r) - (x + r) * math.log(s))


def _numeric_bgnbd(
    params: BetaGeoParams, x: int, tx: float, T: float, t: float
) -> tuple[float, float, float]:
    """(log-likelihood, P(alive), E[purchases in (T, T+t]]) by integrating over lambda and p directly.

    Uses only the generative model: given (lambda, p) the data have likelihood
    (1-p)^x lambda^x e^{-lambda T} + [x>0] p (1-p)^(x-1) lambda^x e^{-lambda t_x}, and an alive customer
    makes (1 - exp(-lambda p t)) / p expected purchases in the next t.
    """
    r, alpha, a, b = params
    beta_ab = special.beta(a, b)

    def over_p(f) -> float:
        opts = {"epsabs": 0.0, "epsrel": 1e-10, "limit": 200}
        return integrate.quad(f, 0.0, 1.0, weight="alg", wvar=(a - 1.0, b - 1.0), **opts)[0] / beta_ab

    def future(lam: float, p: float) -> float:
        return -math.expm1(-lam * p * t) / p if p > 0 else lam * t

    alive_part = _lambda_integral(x, T, lambda lam: 1.0, r, alpha) * over_p(lambda p: (1 - p) ** x)
    dead_part = 0.0
    if x > 0:
        dead_part = _lambda_integral(x, tx, lambda lam: 1.0, r, alpha) * over_p(
            lambda p: p * (1 - p) ** (x - 1)
        )
    lik = alive_part + dead_part
    expected = over_p(lambda p: (1 - p) ** x * _lambda_integral(x, T, lambda lam: future(lam, p), r, alpha))
    return math.log(lik), alive_part / lik, expected / lik


def _half_up_cents(values: np.ndarray) -> np.ndarray:
    # The shipped CSV rounds half away from zero (22.345 -> 22.35); np.round would give 22.34 there.
    return np.floor(values * 100.0 + 0.5 + 1e-9) / 100.0


# ------------------------------------------------------------------------------------------ rfm_summary


def test_rfm_summary_rebuilds_cdnow_csv(
    cdnow_transactions: pd.DataFrame, cdnow_summary: pd.DataFrame
) -> None:
    out = rfm_summary(
        cdnow_transactions,
        "customer",
        "date",
        "amount",
        observation_end="1998-06-30",
        freq_days=7.0,
        calibration_end="1997-09-30",
    )
    assert len(out) == 2357
    assert out.index.name == "customer"
    np.testing.assert_array_equal(out.index.to_numpy(), cdnow_summary.index.to_numpy())
    np.testing.assert_array_equal(out["frequency"].to_numpy(), cdnow_summary["x"].to_numpy())
    for ours, theirs in (("recency", "t_x"), ("T", "T"), ("monetary_value", "zbar")):
        np.testing.assert_allclose(
            _half_up_cents(out[ours].to_numpy()), cdnow_summary[theirs].to_numpy(), rtol=0, atol=1e-9
        )
    assert (out["duration_holdout"] == 39.0).all()
    assert out["frequency_holdout"].dtype == np.int64

    # Cutting the log at the calibration end gives the same calibration columns.
    plain = rfm_summary(cdnow_transactions, "customer", "date", "amount", "1997-09-30", freq_days=7.0)
    pd.testing.assert_frame_equal(plain, out[["frequency", "recency", "T", "monetary_value"]])


def test_rfm_summary_by_hand() -> None:
    tx = pd.DataFrame(
        {
            "cid": ["a", "a", "a", "a", "b", "c", "c", "d", "a"],
            "ts": pd.to_datetime(
                [
                    "2024-01-01 09:00",
                    "2024-01-01 18:30",  # same day as the first: merged into one purchase day
                    "2024-01-08",
                    "2024-01-15 23:59",
                    "2024-01-10",
                    "2024-01-03",
                    "2024-02-05",  # holdout purchase
                    "2024-02-01",  # first seen in the holdout: not in the calibration summary
                    "2024-03-01",  # after observation_end: ignored
                ],
                format="ISO8601",
            ),
            "amt": [10.0, 5.0, 20.0, 40.0, 7.0, 3.0, 11.0, 9.0, 1000.0],
        }
    )
    days = rfm_summary(tx, "cid", "ts", "amt", observation_end="2024-02-10")
    assert list(days.index) == ["a", "b", "c", "d"]
    assert days.loc["a"].tolist() == [2, 14.0, 40.0, 30.0]  # repeats: 20 and 40; first day 10 + 5 left out
    assert days.loc["b"].tolist() == [0, 0.0, 31.0, 0.0]
    assert days.loc["c"].tolist() == [1, 33.0, 38.0, 11.0]
    assert days.loc["d"].tolist() == [0, 0.0, 9.0, 0.0]

    weeks = rfm_summary(tx, "cid", "ts", "amt", observation_end="2024-02-10", freq_days=7.0)
    np.testing.assert_allclose(weeks[["recency", "T"]].to_numpy() * 7.0, days[["recency", "T"]].to_numpy())

    cal = rfm_summary(tx, "cid", "ts", "amt", "2024-02-10", calibration_end="2024-01-31")
    assert list(cal.index) == ["a", "b", "c"]
    assert cal.loc["c", "frequency"] == 0
    assert cal.loc["c", "T"] == 28.0
    assert cal["frequency_holdout"].tolist() == [0, 0, 1]
    assert cal["monetary_value_holdout"].tolist() == [0.0, 0.0, 11.0]
    assert (cal["duration_holdout"] == 10.0).all()

    no_money = rfm_summary(tx, "cid", "ts", None, "2024-02-10")
    assert (no_money["monetary_value"] == 0.0).all()
    pd.testing.assert_series_equal(no_money["frequency"], days["frequency"])


def test_rfm_summary_counts_local_calendar_days_across_dst() -> None:
    # Paris moves to summer time on 2024-03-31: the two purchases are 2 calendar days (47 hours) apart.
    tx = pd.DataFrame(
        {
            "cid": [1, 1, 2],
            "ts": pd.to_datetime(["2024-03-30 23:00", "2024-04-01 00:30", "2024-01-02 12:00"]).tz_localize(
                "Europe/Paris"
            ),
            "amt": [1.0, 2.0, 3.0],
        }
    )
    # 01:00 UTC on 2024-04-02 is 03:00 on 2024-04-02 in Paris.
    out = rfm_summary(tx, "cid", "ts", "amt", pd.Timestamp("2024-04-02 01:00", tz="UTC"))
    assert out.loc[1].tolist() == [1, 2.0, 3.0, 2.0]
    assert out.loc[2, "T"] == 91.0
    with pytest.raises(ValueError, match="both be timezone-aware or both naive"):
        rfm_summary(tx, "cid", "ts", "amt", "2024-05-01")


@pytest.mark.parametrize(
    ("change", "kwargs", "message"),
    [
        (lambda df: df.iloc[0:0], {}, "empty"),
        (lambda df: df.drop(columns="amt"), {}, "column 'amt' not found"),
        (lambda df: df.assign(ts=[pd.NaT, *df["ts"][1:]]), {}, "missing dates"),
        (lambda df: df.assign(cid=[None, *df["cid"][1:]]), {}, "missing customer ids"),
        (lambda df: df.assign(amt=[-1.0, *df["amt"][1:]]), {}, "negative amounts"),
        (lambda df: df.assign(amt=[np.nan, *df["amt"][1:]]), {}, "missing or non-numeric"),
        (lambda df: df, {"freq_days": 0.0}, "freq_days"),
        (lambda df: df, {"calibration_end": "2024-03-01"}, "calibration_end"),
        (lambda df: df, {"observation_end": "2023-01-01"}, "no transactions on or before"),
    ],
)
def test_rfm_summary_rejects_bad_input(change, kwargs, message: str) -> None:
    tx = pd.DataFrame(
        {
            "cid": ["a", "a", "b"],
            "ts": pd.to_datetime(["2024-01-01", "2024-01-05", "2024-01-02"]),
            "amt": [1.0, 2.0, 3.0],
        }
    )
    args = {"observation_end": "2024-02-01"} | kwargs
    with pytest.raises(ValueError, match=message):
        rfm_summary(change(tx), "cid", "ts", "amt", **args)


# --------------------------------------------------------------------------------------------- BG/NBD


def test_bgnbd_reproduces_published_cdnow_fit(cdnow_bgnbd: BetaGeoModel) -> None:
    # Fader, Hardie & Lee (2005): r 0.243, alpha 4.414, a 0.793, b 2.426, LL -9582.4.
    for name, published in CDNOW_PARAMS._asdict().items():
        assert getattr(cdnow_bgnbd.params, name) == pytest.approx(published, rel=3e-3), name
    assert cdnow_bgnbd.log_likelihood == pytest.approx(-9582.4, abs=0.1)
    assert cdnow_bgnbd.fit_summary is not None and cdnow_bgnbd.fit_summary.converged
    assert cdnow_bgnbd.fit_summary.n_customers == 2357
    # Standard errors as printed by lifetimes' BetaGeoFitter summary for this data set.
    se = cdnow_bgnbd.standard_errors
    assert se == pytest.approx((0.012557, 0.378221, 0.185719, 0.705345), rel=2e-3)
    table = cdnow_bgnbd.summary()
    assert list(table.index) == ["r", "alpha", "a", "b"]
    assert (table["lower_95"] < table["estimate"]).all() and (table["estimate"] < table["upper_95"]).all()


def test_bgnbd_fit_is_start_and_grouping_invariant(
    cdnow_summary: pd.DataFrame, cdnow_bgnbd: BetaGeoModel
) -> None:
    s = cdnow_summary
    other = BetaGeoModel().fit(s["x"], s["t_x"], s["T"], initial_params=(3.0, 0.5, 5.0, 0.3))
    assert other.params == pytest.approx(cdnow_bgnbd.params, rel=1e-5)
    grouped = s.groupby(["x", "t_x", "T"]).size().reset_index(name="n")
    assert len(grouped) < len(s)
    weighted = BetaGeoModel().fit(grouped["x"], grouped["t_x"], grouped["T"], weights=grouped["n"])
    assert weighted.params == pytest.approx(cdnow_bgnbd.params, rel=1e-6)
    assert weighted.log_likelihood == pytest.approx(cdnow_bgnbd.log_likelihood, rel=1e-10)


def test_bgnbd_time_unit_only_rescales_alpha(cdnow_summary: pd.DataFrame, cdnow_bgnbd: BetaGeoModel) -> None:
    s = cdnow_summary
    in_days = BetaGeoModel().fit(s["x"], s["t_x"] * 7.0, s["T"] * 7.0)
    r, alpha, a, b = cdnow_bgnbd.params
    assert in_days.params == pytest.approx((r, alpha * 7.0, a, b), rel=1e-5)
    # Densities pick up a Jacobian of 7 per repeat purchase time.
    assert in_days.log_likelihood == pytest.approx(
        cdnow_bgnbd.log_likelihood - s["x"].sum() * math.log(7), rel=1e-9
    )


def test_bgnbd_gradient_is_exact(cdnow_summary: pd.DataFrame) -> None:
    s = cdnow_summary
    data = bgnbd_module._Data(*(s[c].to_numpy(float) for c in ("x", "t_x", "T")), np.ones(len(s)))
    for point in ([0.3, 3.0, 0.6, 2.0], [2.0, 20.0, 3.0, 0.7]):
        theta = np.log(point)
        err = check_grad(
            lambda th: bgnbd_module._neg_mean_loglik(th, data)[0],
            lambda th: bgnbd_module._neg_mean_loglik(th, data)[1],
            theta,
            epsilon=1e-7,
        )
        assert err < 1e-6


@pytest.mark.parametrize("params", [CDNOW_PARAMS, BetaGeoParams(1.5, 20.0, 2.5, 4.0)])
def test_bgnbd_closed_forms_match_numerical_integration(params: BetaGeoParams) -> None:
    model = BetaGeoModel.from_params(*params)
    histories = [(0, 0.0, 38.86), (1, 1.71, 38.86), (2, 30.43, 38.86), (7, 29.43, 35.0), (15, 10.0, 30.0)]
    for x, tx, T in histories:
        loglik, p_alive, expected = _numeric_bgnbd(params, x, tx, T, t=39.0)
        assert model.customer_log_likelihood(x, tx, T) == pytest.approx(loglik, rel=1e-9, abs=1e-9)
        assert model.conditional_probability_alive(x, tx, T) == pytest.approx(p_alive, rel=1e-8)
        assert model.conditional_expected_purchases(39.0, x, tx, T) == pytest.approx(expected, rel=1e-7)


def test_probability_alive_properties(cdnow_summary: pd.DataFrame, cdnow_bgnbd: BetaGeoModel) -> None:
    s = cdnow_summary
    p = cdnow_bgnbd.conditional_probability_alive(s["x"], s["t_x"], s["T"])
    assert isinstance(p, pd.Series) and p.index.equals(s.index)
    assert ((p >= 0) & (p <= 1)).all()
    assert (p[s["x"] == 0] == 1.0).all()
    # For a fixed history, a longer silence since the last purchase makes survival less likely.
    silence = cdnow_bgnbd.conditional_probability_alive(3, 10.0, np.linspace(10.0, 80.0, 15))
    assert np.all(np.diff(silence) < 0)
    assert cdnow_bgnbd.conditional_probability_alive(3, 10.0, 10.0) > 0.5


def test_conditional_expected_purchases_for_heavy_buyers(cdnow_bgnbd: BetaGeoModel) -> None:
    r, alpha, a, b = cdnow_bgnbd.params
    T, t = 38.86, 39.0
    z = t / (alpha + T + t)
    for x, tx in [(50, 30.0), (200, 38.0), (1000, 38.8)]:
        # FHL (2005) eq. 10 as printed; scipy still evaluates its hypergeometric term at these sizes.
        hyp = ((alpha + T) / (alpha + T + t)) ** (r + x) * special.hyp2f1(r + x, b + x, a + b + x - 1, z)
        textbook = (a + b + x - 1) / (a - 1) * (1 - hyp) * cdnow_bgnbd.conditional_probability_alive(x, tx, T)
        assert cdnow_bgnbd.conditional_expected_purchases(t, x, tx, T) == pytest.approx(textbook, rel=1e-9)
    # Past x ~ 2000 the printed form is inf * 0; the transformed one stays finite and keeps growing with x.
    heavy = cdnow_bgnbd.conditional_expected_purchases(t, [1000, 2000, 5000], 38.8, T)
    assert np.all(np.isfinite(heavy)) and np.all(np.diff(heavy) > 0)


def test_expected_purchases_is_continuous_at_a_equal_one() -> None:
    grid = [BetaGeoModel.from_params(0.5, 5.0, a, 2.5) for a in (1 - 1e-3, 1 - 1e-6, 1.0, 1 + 1e-6, 1 + 1e-3)]
    vals = np.array([m.conditional_expected_purchases(39.0, [0, 2, 20], [0, 5.0, 30.0], 38.0) for m in grid])
    assert np.all(np.isfinite(vals))
    # The a == 1 neighbourhood is interpolated: values there must lie on a smooth curve through the others.
    np.testing.assert_allclose(vals[2], 0.5 * (vals[1] + vals[3]), rtol=1e-9)
    np.testing.assert_allclose(vals[2], 0.5 * (vals[0] + vals[4]), rtol=1e-5)  # O(1e-3 ** 2) curvature
    np.testing.assert_allclose(vals[[0, 1, 3, 4]], np.broadcast_to(vals[2], (4, 3)), rtol=2e-3)


def test_simulated_holdout_matches_conditional_predictions() -> None:
    """Law of total expectation: mean predicted future purchases equals the simulated mean per history bin."""
    model = BetaGeoModel.from_params(*CDNOW_PARAMS)
    rng = np.random.default_rng(20240607)
    sim = model.sample(60_000, rng.uniform(20.0, 52.0, size=60_000), rng=rng, holdout=26.0)
    predicted = model.conditional_expected_purchases(26.0, sim["frequency"], sim["recency"], sim["T"])
    p_alive = model.conditional_probability_alive(sim["frequency"], sim["recency"], sim["T"])
    bins = pd.cut(sim["frequency"], [-1, 0, 1, 2, 4, 8, np.inf])
    for _, group in sim.groupby(bins, observed=True):
        actual = group["frequency_holdout"]
        z = (actual.mean() - predicted[group.index].mean()) / (actual.std(ddof=1) / math.sqrt(len(group)))
        assert abs(z) < 4.0
        alive = group["alive"].astype(float)
        if alive.std() > 0:
            z_alive = (alive.mean() - p_alive[group.index].mean()) / (
                alive.std(ddof=1) / math.sqrt(len(group))
            )
            assert abs(z_alive) < 4.0


def test_unconditional_expected_purchases_matches_simulation() -> None:
    model = BetaGeoModel.from_params(*CDNOW_PARAMS)
    sim = model.sample(150_000, 0.0, rng=7, holdout=52.0)
    assert (sim["frequency"] == 0).all()
    expected = model.expected_purchases(52.0)
    z = (sim["frequency_holdout"].mean() - expected) / (sim["frequency_holdout"].std() / math.sqrt(len(sim)))
    assert abs(z) < 4.0
    curve = model.expected_purchases(np.array([0.0, 1.0, 10.0, 52.0, 200.0]))
    assert curve[0] == 0.0 and np.all(np.diff(curve) > 0)
    # A brand-new customer is the conditional case x = t_x = T = 0.
    assert model.conditional_expected_purchases(52.0, 0, 0.0, 0.0) == pytest.approx(expected, rel=1e-12)


def test_bgnbd_recovers_parameters_from_synthetic_sample() -> None:
    true = BetaGeoParams(0.5, 6.0, 0.8, 2.5)
    rng = np.random.default_rng(11)
    sim = BetaGeoModel.from_params(*true).sample(40_000, rng.uniform(20.0, 52.0, size=40_000), rng=rng)
    fitted = BetaGeoModel().fit(sim["frequency"], sim["recency"], sim["T"])
    for est, truth, se in zip(fitted.params, true, fitted.standard_errors, strict=True):
        assert abs(est - truth) < 4.0 * se
        assert est == pytest.approx(truth, rel=0.15)


def test_sample_is_reproducible_and_consistent() -> None:
    model = BetaGeoModel.from_params(*CDNOW_PARAMS)
    a = model.sample(1000, 39.0, rng=3)
    b = model.sample(1000, 39.0, rng=np.random.default_rng(3))
    pd.testing.assert_frame_equal(a, b)
    assert ((a["recency"] >= 0) & (a["recency"] <= a["T"])).all()
    assert (a.loc[a["frequency"] == 0, "recency"] == 0).all()
    assert a.loc[~a["alive"], "frequency"].min() >= 1  # only a repeat purchase can end a lifetime


# ---------------------------------------------------------------------------------------- Gamma-Gamma


def test_gamma_gamma_reproduces_published_cdnow_fit(cdnow_gg: GammaGammaModel) -> None:
    # Fader, Hardie & Lee (2005) on the 946 repeat buyers: p 6.25, q 3.74, gamma 15.44.
    assert cdnow_gg.params == pytest.approx((6.25, 3.74, 15.44), rel=5e-3)
    assert cdnow_gg.fit_summary is not None and cdnow_gg.fit_summary.n_customers == 946
    assert cdnow_gg.log_likelihood is not None and cdnow_gg.log_likelihood < 0
    assert cdnow_gg.population_mean_spend == pytest.approx(6.25 * 15.44 / 2.74, rel=1e-2)


def test_gamma_gamma_gradient_is_exact(cdnow_summary: pd.DataFrame) -> None:
    rep = cdnow_summary[cdnow_summary["x"] > 0]
    data = gg_module._Data(rep["x"].to_numpy(float), rep["zbar"].to_numpy(float), np.ones(len(rep)))
    err = check_grad(
        lambda th: gg_module._neg_mean_loglik(th, data)[0],
        lambda th: gg_module._neg_mean_loglik(th, data)[1],
        np.log([3.0, 2.0, 10.0]),
        epsilon=1e-7,
    )
    assert err < 1e-6


def test_gamma_gamma_expected_profit_by_hand(cdnow_gg: GammaGammaModel) -> None:
    p, q, gamma = cdnow_gg.params
    out = cdnow_gg.conditional_expected_average_profit([0, 1, 4, 10_000], [0.0, 30.0, 12.5, 50.0])
    assert out[0] == pytest.approx(p * gamma / (q - 1))
    assert out[1] == pytest.approx(p * (gamma + 30.0) / (p + q - 1))
    assert out[2] == pytest.approx(p * (gamma + 4 * 12.5) / (4 * p + q - 1))
    assert out[3] == pytest.approx(50.0, rel=1e-3)  # lots of purchases: trust the customer's own mean


def test_gamma_gamma_recovers_parameters_from_synthetic_sample() -> None:
    true = (6.0, 4.0, 15.0)
    rng = np.random.default_rng(5)
    frequency = rng.poisson(3.0, size=30_000)
    spend = GammaGammaModel.from_params(*true).sample_monetary(frequency, rng)
    assert (spend[frequency == 0] == 0).all()
    fitted = GammaGammaModel().fit(frequency, spend)
    for est, truth, se in zip(fitted.params, true, fitted.standard_errors, strict=True):
        assert abs(est - truth) < 4.0 * se
        assert est == pytest.approx(truth, rel=0.1)


# ------------------------------------------------------------------------------------------ CLV & churn


def test_clv_matches_hand_computed_sum(
    cdnow_summary: pd.DataFrame, cdnow_bgnbd: BetaGeoModel, cdnow_gg: GammaGammaModel
) -> None:
    s = cdnow_summary
    clv = customer_lifetime_value(
        cdnow_bgnbd, cdnow_gg, s["x"], s["t_x"], s["T"], s["zbar"], months=12, discount_rate_monthly=0.01
    )
    assert isinstance(clv, pd.Series) and clv.index.equals(s.index)
    month = 30.0 / 7.0
    for cid in (1, 2, 3, 18):
        x, tx, T, zbar = s.loc[cid, ["x", "t_x", "T", "zbar"]]
        spend = cdnow_gg.conditional_expected_average_profit(x, zbar)
        total = 0.0
        for m in range(1, 13):
            upto = cdnow_bgnbd.conditional_expected_purchases(m * month, x, tx, T)
            before = cdnow_bgnbd.conditional_expected_purchases((m - 1) * month, x, tx, T)
            total += spend * (upto - before) / 1.01**m
        assert clv[cid] == pytest.approx(total, rel=1e-12)
    # Without discounting, 12 months of value is spend times the expected purchases over 360 days.
    flat = customer_lifetime_value(cdnow_bgnbd, cdnow_gg, 2, 30.43, 38.86, 22.35, discount_rate_monthly=0.0)
    spend = cdnow_gg.conditional_expected_average_profit(2, 22.35)
    assert flat == pytest.approx(spend * cdnow_bgnbd.conditional_expected_purchases(360 / 7, 2, 30.43, 38.86))


def test_clv_matches_lifetimes_reference_and_is_unit_consistent(
    cdnow_summary: pd.DataFrame, cdnow_bgnbd: BetaGeoModel, cdnow_gg: GammaGammaModel
) -> None:
    s = cdnow_summary.loc[[1, 2, 3]]
    # lifetimes 0.11.3 GammaGammaFitter.customer_lifetime_value(freq="W", time=12, discount_rate=0.01) with
    # the same parameters (see bench/clv_fit.py); its "W" month is 4.345 weeks.
    weekly = customer_lifetime_value(
        cdnow_bgnbd, cdnow_gg, s["x"], s["t_x"], s["T"], s["zbar"], days_per_month=4.345 * 7
    )
    np.testing.assert_allclose(weekly.to_numpy(), [36.278496, 4.637467, 8.344093], rtol=1e-5)
    # The same customers measured in days, with a day-based model, have the same value.
    in_days = BetaGeoModel.from_params(*cdnow_bgnbd.params._replace(alpha=cdnow_bgnbd.params.alpha * 7.0))
    daily = customer_lifetime_value(
        in_days, cdnow_gg, s["x"], s["t_x"] * 7, s["T"] * 7, s["zbar"], period_days=1.0, days_per_month=30.415
    )
    np.testing.assert_allclose(daily.to_numpy(), weekly.to_numpy(), rtol=1e-10)
    longer = customer_lifetime_value(cdnow_bgnbd, cdnow_gg, s["x"], s["t_x"], s["T"], s["zbar"], months=24)
    shorter = customer_lifetime_value(cdnow_bgnbd, cdnow_gg, s["x"], s["t_x"], s["T"], s["zbar"], months=12)
    assert (longer > shorter).all()


def test_churn_risk_flags_and_reasons() -> None:
    model = BetaGeoModel.from_params(*CDNOW_PARAMS)
    customers = pd.DataFrame(
        {
            "frequency": [0, 5, 5, 1, 10],
            "recency": [0.0, 20.0, 35.0, 30.0, 5.0],
            "T": [38.0, 38.0, 38.0, 38.0, 38.0],
        },
        index=pd.Index(["new", "silent", "regular", "slow", "burst"], name="customer"),
    )
    f, r, t = customers["frequency"], customers["recency"], customers["T"]
    out = churn_risk(model, f, r, t, p_alive_threshold=0.3)
    assert out.index.equals(customers.index)
    p_alive = model.conditional_probability_alive(f, r, t)
    pd.testing.assert_series_equal(out["p_alive"], p_alive.rename("p_alive"))
    np.testing.assert_allclose(out["time_since_last"], [38.0, 18.0, 3.0, 8.0, 33.0])
    np.testing.assert_allclose(out["mean_gap"], [np.nan, 4.0, 7.0, 30.0, 0.5])
    assert out["overdue"].tolist() == [False, True, False, False, True]  # 18 > 2*4, 33 > 2*0.5
    assert out["low_p_alive"].tolist() == (p_alive < 0.3).tolist()
    assert out.loc["burst", "low_p_alive"] and not out.loc["regular", "low_p_alive"]
    assert out.loc["burst", "reason"] == "low_p_alive,overdue"
    assert out.loc["regular", "reason"] == "" and not out.loc["regular", "at_risk"]
    assert out.loc["new", "reason"] == "" and out.loc["new", "p_alive"] == 1.0
    assert (out["at_risk"] == (out["reason"] != "")).all()

    fallback = churn_risk(model, [0, 0], [0.0, 0.0], [10.0, 50.0], single_purchase_gap=12.0)
    assert fallback["reason"].tolist() == ["", "overdue"]


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "message"),
    [
        ([-1, 2], [0.0, 3.0], [5.0, 5.0], "frequency must be >= 0"),
        ([1, 2], [-1.0, 3.0], [5.0, 5.0], "recency must be >= 0"),
        ([1, 2], [1.0, 6.0], [5.0, 5.0], "recency must not exceed T"),
        ([0, 2], [1.0, 3.0], [5.0, 5.0], "recency must be 0 when frequency is 0"),
        ([1.5, 2], [1.0, 3.0], [5.0, 5.0], "whole numbers"),
        ([], [], [], "frequency is empty"),
        ([1, np.nan], [1.0, 3.0], [5.0, 5.0], "frequency contains 1 NaN"),
        ([1, 2], [1.0, 3.0], [5.0, np.inf], "T contains 1 NaN or infinite"),
        ([1, 2, 3], [1.0, 3.0], [5.0, 5.0], "incompatible lengths"),
        (["a", "b"], [1.0, 3.0], [5.0, 5.0], "frequency must be numeric"),
    ],
)
def test_bgnbd_rejects_bad_input(frequency, recency, T, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BetaGeoModel().fit(frequency, recency, T)
    with pytest.raises(ValueError, match=message):
        BetaGeoModel.from_params(*CDNOW_PARAMS).conditional_probability_alive(frequency, recency, T)


def test_models_reject_unusable_data_and_state() -> None:
    with pytest.raises(ValueError, match="no customer has a repeat purchase"):
        BetaGeoModel().fit([0, 0], [0.0, 0.0], [5.0, 6.0])
    with pytest.raises(ValueError, match="must be finite and > 0"):
        BetaGeoModel.from_params(0.2, -1.0, 0.5, 2.0)
    with pytest.raises(ValueError, match="initial_params must be four finite values"):
        BetaGeoModel().fit([1, 0], [1.0, 0.0], [5.0, 6.0], initial_params=(1.0, -1.0, 1.0, 1.0))
    with pytest.raises(NotFittedError):
        BetaGeoModel().conditional_probability_alive(1, 1.0, 2.0)
    with pytest.raises(NotFittedError):
        GammaGammaModel().conditional_expected_average_profit(1, 10.0)
    with pytest.raises(ValueError, match="t must be >= 0"):
        BetaGeoModel.from_params(*CDNOW_PARAMS).expected_purchases(-1.0)
    with pytest.raises(ValueError, match="> 0 for repeat buyers"):
        GammaGammaModel().fit([1, 2, 3], [10.0, 0.0, 5.0])
    with pytest.raises(ValueError, match="monetary_value must be >= 0"):
        GammaGammaModel().fit([1, 2], [10.0, -5.0])
    with pytest.raises(ValueError, match="no customer has a repeat purchase"):
        GammaGammaModel().fit([0, 0], [0.0, 0.0])
    with pytest.raises(ValueError, match="population mean spend infinite"):
        GammaGammaModel.from_params(2.0, 0.9, 10.0).conditional_expected_average_profit([0], [0.0])
    model, gg = BetaGeoModel.from_params(*CDNOW_PARAMS), GammaGammaModel.from_params(6.25, 3.74, 15.44)
    with pytest.raises(ValueError, match="months must be a positive integer"):
        customer_lifetime_value(model, gg, [1], [1.0], [2.0], [10.0], months=0)
    with pytest.raises(ValueError, match="discount_rate_monthly"):
        customer_lifetime_value(model, gg, [1], [1.0], [2.0], [10.0], discount_rate_monthly=-1.0)
    with pytest.raises(ValueError, match="period_days"):
        customer_lifetime_value(model, gg, [1], [1.0], [2.0], [10.0], period_days=0.0)
    with pytest.raises(ValueError, match="p_alive_threshold"):
        churn_risk(model, [1], [1.0], [2.0], p_alive_threshold=1.5)
    with pytest.raises(ValueError, match="T must be a scalar or have n=3"):
        model.sample(3, [1.0, 2.0])
