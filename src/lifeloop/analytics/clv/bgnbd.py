"""BG/NBD purchase model (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy Way").

While alive, a customer buys as a Poisson process with rate ``lambda ~ Gamma(r, alpha)`` (shape ``r``, rate
``alpha``); after each repeat purchase they drop out for good with probability ``p ~ Beta(a, b)``.
Inputs are per customer: ``frequency`` x (repeat purchase periods), ``recency`` t_x (time of the last
purchase, measured from the first one) and ``T`` (time from the first purchase to the end of observation),
all in one time unit of your choice; ``alpha`` and every ``t`` argument are in that same unit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1

from ._validation import (
    FloatArray,
    NotFittedError,
    as_float,
    check_non_negative,
    dot,
    resolve_rng,
    series_index,
    validate_rfm,
    wrap,
)

__all__ = ["BetaGeoModel", "BetaGeoParams", "FitSummary"]

# Log-parameter box for L-BFGS-B: wide enough for any time unit from hours to years.
_LOG_BOUND = 18.0
# Below this distance from a == 1 the expected-purchases formula is interpolated (see _expected_if_alive).
_A_NEAR_ONE = 1e-5


class BetaGeoParams(NamedTuple):
    """BG/NBD parameters: purchase-rate Gamma(r, alpha) and dropout Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True)
class FitSummary:
    """Outcome of a maximum-likelihood fit."""

    converged: bool
    n_iter: int
    n_eval: int
    message: str
    n_customers: float


class _Data:
    """Fit data arranged so each likelihood evaluation does as little elementwise work as possible.

    Special functions depend on the customer only through x, so they are evaluated once per distinct x;
    the terms in T alone once per distinct T (customers summarised in whole days or weeks share a few
    hundred values); the dropout term exists only for repeat buyers, so it is evaluated on that subset.
    """

    def __init__(self, x: FloatArray, tx: FloatArray, T: FloatArray, weights: FloatArray) -> None:
        self.x_unique, inverse = np.unique(x, return_inverse=True)
        self.w_by_x = np.bincount(inverse, weights=weights, minlength=self.x_unique.size)
        self.T_unique, by_t = np.unique(T, return_inverse=True)
        self.w_by_T = np.bincount(by_t, weights=weights, minlength=self.T_unique.size)
        self.wx_by_T = np.bincount(by_t, weights=weights * x, minlength=self.T_unique.size)
        rep = (x > 0) & (weights > 0)
        # (Grouping identical repeat buyers as well cost more than it saved: NumPy sorts rows slowly.)
        self.x_rep, self.tx_rep, self.T_rep, self.w_rep = x[rep], tx[rep], T[rep], weights[rep]
        self.w_total = float(weights.sum())


def _neg_mean_loglik(theta: FloatArray, d: _Data) -> tuple[float, FloatArray]:
    """Weighted mean negative log-likelihood and its gradient with respect to log-parameters.

    Per customer, ln L = c(x) - (r + x) ln(alpha + T) + [x > 0] softplus(delta) with
    delta = ln a - ln(b + x - 1) + (r + x) (ln(alpha + T) - ln(alpha + t_x)), the log-odds of having dropped
    out after the last purchase versus still being alive.
    """
    r, alpha, a, b = np.exp(theta)
    xu = d.x_unique
    log_at = np.log(alpha + d.T_unique)
    inv_at = 1.0 / (alpha + d.T_unique)

    log_at_rep = np.log(alpha + d.T_rep)
    log_gap = log_at_rep - np.log(alpha + d.tx_rep)  # ln((alpha + T) / (alpha + t_x)) >= 0
    rx_rep = r + d.x_rep
    b_xm1 = b + d.x_rep - 1.0
    delta = np.log(a) - np.log(b_xm1) + rx_rep * log_gap
    share = expit(delta)  # posterior probability of "dropped out after the last purchase"
    w_share = d.w_rep * share

    per_x = gammaln(r + xu) - gammaln(r) + r * np.log(alpha) + betaln(a, b + xu) - betaln(a, b)
    loglik = (
        dot(per_x, d.w_by_x)
        - r * dot(log_at, d.w_by_T)
        - dot(log_at, d.wx_by_T)
        + dot(np.logaddexp(0.0, delta), d.w_rep)
    )

    psi_abx = digamma(a + b + xu)
    psi_ab = digamma(a + b)
    g_r = (
        dot(digamma(r + xu) - digamma(r) + np.log(alpha), d.w_by_x)
        - dot(log_at, d.w_by_T)
        + dot(w_share, log_gap)
    )
    inv_atx_rep = 1.0 / (alpha + d.tx_rep)
    g_alpha = (
        r / alpha * d.w_total
        - r * dot(inv_at, d.w_by_T)
        - dot(inv_at, d.wx_by_T)
        + dot(w_share, rx_rep * (1.0 / (alpha + d.T_rep) - inv_atx_rep))
    )
    g_a = dot(psi_ab - psi_abx, d.w_by_x) + w_share.sum() / a
    g_b = dot(digamma(b + xu) - digamma(b) + psi_ab - psi_abx, d.w_by_x) - dot(w_share, 1.0 / b_xm1)
    grad = np.array([g_r * r, g_alpha * alpha, g_a * a, g_b * b])
    return -loglik / d.w_total, -grad / d.w_total


def _expected_if_alive(params: BetaGeoParams, t: FloatArray, x: FloatArray, T: FloatArray) -> FloatArray:
    """E[purchases in (T, T+t] | alive at T, x] with the hypergeometric term in Euler-transformed form.

    ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z) equals (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)
    with z = t/(alpha+T+t); the right-hand side keeps moderate parameters for large x, where the
    textbook form overflows.
    """
    r, alpha, a, b = params
    if abs(a - 1.0) < _A_NEAR_ONE:
        # The closed form is 0/0 at a == 1 and loses digits near it; interpolate linearly in a between
        # two well-conditioned points instead (error of order _A_NEAR_ONE**2).
        lo = _expected_if_alive_core(r, alpha, 1.0 - _A_NEAR_ONE, b, t, x, T)
        hi = _expected_if_alive_core(r, alpha, 1.0 + _A_NEAR_ONE, b, t, x, T)
        return lo + (a - (1.0 - _A_NEAR_ONE)) / (2.0 * _A_NEAR_ONE) * (hi - lo)
    return _expected_if_alive_core(r, alpha, a, b, t, x, T)


def _expected_if_alive_core(
    r: float, alpha: float, a: float, b: float, t: FloatArray, x: FloatArray, T: FloatArray
) -> FloatArray:
    log_1mz = np.log(alpha + T) - np.log(alpha + T + t)
    z = -np.expm1(log_1mz)
    term = np.exp((a - 1.0) * log_1mz) * hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z)
    # t == 0 gives term == 1 exactly; the where keeps the result +0.0 rather than -0.0 when a < 1.
    return np.where(t > 0, (a + b + x - 1.0) / (a - 1.0) * (1.0 - term), 0.0)


class BetaGeoModel:
    """BG/NBD model fitted by maximum likelihood.

    Attributes after fitting: ``params`` (:class:`BetaGeoParams`), ``log_likelihood`` (total over customers),
    ``standard_errors`` (:class:`BetaGeoParams`, from the observed information), ``fit_summary``.
    """

    def __init__(self) -> None:
        self.params: BetaGeoParams | None = None
        self.log_likelihood: float | None = None
        self.standard_errors: BetaGeoParams | None = None
        self.fit_summary: FitSummary | None = None

    @classmethod
    def from_params(cls, r: float, alpha: float, a: float, b: float) -> BetaGeoModel:
        """A model with known parameters (for simulation or scoring without fitting)."""
        values = np.array([r, alpha, a, b], dtype=np.float64)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise ValueError(
                f"BG/NBD parameters must be finite and > 0, got r={r}, alpha={alpha}, a={a}, b={b}"
            )
        model = cls()
        model.params = BetaGeoParams(*map(float, values))
        return model

    def __repr__(self) -> str:
        if self.params is None:
            return "BetaGeoModel(unfitted)"
        p = self.params
        return f"BetaGeoModel(r={p.r:.4g}, alpha={p.alpha:.4g}, a={p.a:.4g}, b={p.b:.4g})"

    def _require_params(self) -> BetaGeoParams:
        if self.params is None:
            raise NotFittedError("BetaGeoModel has no parameters; call fit() or from_params() first")
        return self.params

    def fit(
        self,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        *,
        weights: ArrayLike | None = None,
        initial_params: BetaGeoParams | tuple[float, float, float, float] | None = None,
        maxiter: int = 2000,
    ) -> BetaGeoModel:
        """Maximum-likelihood fit; ``weights`` counts identical customers (e.g. from a grouped summary)."""
        x, tx, t_obs = validate_rfm(frequency, recency, T)
        x, tx, t_obs = np.atleast_1d(x, tx, t_obs)
        if weights is None:
            w = np.ones_like(x)
        else:
            w = as_float("weights", weights)
            check_non_negative("weights", w)
            if w.shape != x.shape:
                raise ValueError(f"weights must have one entry per customer ({x.size}), got {w.size}")
        if w.sum() <= 0:
            raise ValueError("weights sum to zero")
        if not np.any((x > 0) & (w > 0)):
            raise ValueError("no customer has a repeat purchase; the BG/NBD model cannot be fitted")
        if np.all(t_obs[w > 0] == 0):
            raise ValueError("every customer has T == 0; there is no observation time to fit on")
        data = _Data(x, tx, t_obs, w)

        start = (
            self._start_values(x, t_obs, w) if initial_params is None else np.asarray(initial_params, float)
        )
        if start.shape != (4,) or not np.all(np.isfinite(start)) or np.any(start <= 0):
            raise ValueError(
                f"initial_params must be four finite values > 0 (r, alpha, a, b), got {initial_params}"
            )
        theta0 = np.log(start)
        bounds = [(-_LOG_BOUND, _LOG_BOUND)] * 4
        res = minimize(
            _neg_mean_loglik,
            theta0,
            args=(data,),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": maxiter, "ftol": 1e-14, "gtol": 1e-9},
        )
        # L-BFGS-B can stop with an "abnormal" line search right at the optimum; accept a tiny gradient.
        converged = bool(res.success) or float(np.max(np.abs(res.jac))) < 1e-5
        if not converged:
            raise RuntimeError(f"BG/NBD fit did not converge: {res.message}")
        hit = [
            name
            for name, th in zip(BetaGeoParams._fields, res.x, strict=True)
            if abs(th) >= _LOG_BOUND - 1e-6
        ]
        if hit:
            warnings.warn(
                f"BG/NBD parameter(s) {hit} reached the optimisation bound; the data may not identify them",
                RuntimeWarning,
                stacklevel=2,
            )
        self.params = BetaGeoParams(*map(float, np.exp(res.x)))
        self.log_likelihood = float(-res.fun * data.w_total)
        self.standard_errors = self._standard_errors(res.x, data)
        self.fit_summary = FitSummary(
            converged=converged,
            n_iter=int(res.nit),
            n_eval=int(res.nfev),
            message=str(res.message),
            n_customers=data.w_total,
        )
        return self

    @staticmethod
    def _start_values(x: FloatArray, T: FloatArray, w: FloatArray) -> FloatArray:
        # Match the population mean purchase rate with r = 1; a = 1, b = 3 is a mild dropout prior.
        rate = max(float(np.average(x, weights=w)), 1e-3) / max(float(np.average(T, weights=w)), 1e-9)
        return np.array([1.0, 1.0 / rate, 1.0, 3.0])

    @staticmethod
    def _standard_errors(theta: FloatArray, data: _Data) -> BetaGeoParams:
        """Delta-method standard errors from a central-difference Hessian of the analytic gradient."""
        step = 1e-5
        hess = np.empty((4, 4))
        for j in range(4):
            e = np.zeros(4)
            e[j] = step
            hess[:, j] = (_neg_mean_loglik(theta + e, data)[1] - _neg_mean_loglik(theta - e, data)[1]) / (
                2 * step
            )
        hess = 0.5 * (hess + hess.T) * data.w_total
        try:
            cov = np.linalg.inv(hess)
        except np.linalg.LinAlgError:
            return BetaGeoParams(*([float("nan")] * 4))
        var = np.diag(cov)
        se = np.where(var > 0, np.exp(theta) * np.sqrt(np.abs(var)), np.nan)
        return BetaGeoParams(*map(float, se))

    def summary(self) -> pd.DataFrame:
        """Parameter table with standard errors and 95% intervals (symmetric on the log scale)."""
        params = self._require_params()
        se = self.standard_errors or BetaGeoParams(*([float("nan")] * 4))
        est = np.array(params)
        log_se = np.array(se) / est
        return pd.DataFrame(
            {
                "estimate": est,
                "std_error": np.array(se),
                "lower_95": est * np.exp(-1.959964 * log_se),
                "upper_95": est * np.exp(1.959964 * log_se),
            },
            index=pd.Index(BetaGeoParams._fields, name="parameter"),
        )

    def customer_log_likelihood(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Any:
        """Per-customer log-likelihood ln L(params | x, t_x, T)."""
        params = self._require_params()
        index = series_index(frequency, recency, T)
        r, alpha, a, b = params
        x, tx, t_obs = validate_rfm(frequency, recency, T)
        has = x > 0
        xm1 = np.where(has, x - 1.0, 0.0)
        a3 = -(r + x) * np.log(alpha + t_obs)
        a4 = np.where(has, np.log(a) - np.log(b + xm1) - (r + x) * np.log(alpha + tx), -np.inf)
        ll = (
            gammaln(r + x)
            - gammaln(r)
            + r * np.log(alpha)
            + betaln(a, b + x)
            - betaln(a, b)
            + np.logaddexp(a3, a4)
        )
        return wrap(ll, index, "log_likelihood")

    def conditional_probability_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> Any:
        """P(alive at T | x, t_x, T); exactly 1 for customers without repeat purchases."""
        r, alpha, a, b = self._require_params()
        index = series_index(frequency, recency, T)
        x, tx, t_obs = validate_rfm(frequency, recency, T)
        has = x > 0
        xm1 = np.where(has, x - 1.0, 0.0)
        log_odds_dead = np.log(a) - np.log(b + xm1) + (r + x) * (np.log(alpha + t_obs) - np.log(alpha + tx))
        prob = np.where(has, expit(-log_odds_dead), 1.0)
        return wrap(prob, index, "p_alive")

    def conditional_expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> Any:
        """E[number of purchases in (T, T + t] | x, t_x, T], with ``t`` in the model's time unit."""
        params = self._require_params()
        index = series_index(frequency, recency, T)
        horizon = as_float("t", t)
        check_non_negative("t", horizon)
        x, tx, t_obs = validate_rfm(frequency, recency, T)
        p_alive = np.asarray(self.conditional_probability_alive(x, tx, t_obs), dtype=np.float64)
        horizon, x, t_obs, p_alive = np.broadcast_arrays(horizon, x, t_obs, p_alive)
        expected = p_alive * _expected_if_alive(params, horizon, x, t_obs)
        return wrap(np.asarray(expected, dtype=np.float64), index, "expected_purchases")

    def expected_purchases(self, t: ArrayLike) -> Any:
        """Unconditional E[X(t)]: repeat purchases in (0, t] of a new customer (FHL 2005, eq. 7)."""
        params = self._require_params()
        index = series_index(t)
        horizon = as_float("t", t)
        check_non_negative("t", horizon)
        zero = np.zeros_like(horizon)
        # A customer just acquired is alive with x = 0 and T = 0, so E[X(t)] is the alive-case expectation.
        return wrap(_expected_if_alive(params, horizon, zero, zero), index, "expected_purchases")

    def sample(
        self,
        n: int,
        T: ArrayLike,
        rng: np.random.Generator | int | None = None,
        *,
        holdout: float = 0.0,
    ) -> pd.DataFrame:
        """Simulate ``n`` customers from the generative process, each observed for ``T`` after joining.

        Returns frequency, recency, T plus the latent ``purchase_rate``, ``dropout_prob`` and ``alive``
        (at T); with ``holdout > 0`` also ``frequency_holdout``, the purchases in (T, T + holdout].
        """
        r, alpha, a, b = self._require_params()
        if int(n) != n or n <= 0:
            raise ValueError(f"n must be a positive integer, got {n}")
        n = int(n)
        t_obs = as_float("T", T)
        check_non_negative("T", t_obs)
        if t_obs.ndim == 1 and t_obs.size != n:
            raise ValueError(f"T must be a scalar or have n={n} entries, got {t_obs.size}")
        t_obs = np.broadcast_to(t_obs, (n,)).astype(np.float64)
        if not np.isfinite(holdout) or holdout < 0:
            raise ValueError(f"holdout must be >= 0, got {holdout}")
        gen = resolve_rng(rng)

        lam = gen.gamma(shape=r, scale=1.0 / alpha, size=n)
        p = gen.beta(a, b, size=n)
        # Purchases until dropping out ~ Geometric(p) on {1, 2, ...}; drawn in float so that a tiny p
        # gives a huge (or infinite) count instead of an int64 overflow.
        with np.errstate(divide="ignore", over="ignore"):
            lifetime_purchases = np.floor(gen.exponential(size=n) / -np.log1p(-p)) + 1.0
        n_arrivals = gen.poisson(lam * t_obs).astype(np.float64)
        x = np.minimum(lifetime_purchases, n_arrivals)
        # Given N arrivals on [0, T], the x-th arrival time is T times the x-th order statistic of N uniforms.
        has = x > 0
        order_stat = gen.beta(np.where(has, x, 1.0), np.where(has, n_arrivals - x + 1.0, 1.0))
        recency = np.where(has, t_obs * order_stat, 0.0)
        alive = lifetime_purchases > n_arrivals
        out = pd.DataFrame(
            {
                "frequency": x.astype(np.int64),
                "recency": recency,
                "T": t_obs,
                "purchase_rate": lam,
                "dropout_prob": p,
                "alive": alive,
            }
        )
        if holdout > 0:
            # Geometric lifetimes are memoryless, so survivors have lifetime - N purchases left.
            future = np.minimum(gen.poisson(lam * holdout), lifetime_purchases - n_arrivals)
            out["frequency_holdout"] = np.where(alive, future, 0.0).astype(np.int64)
        return out
