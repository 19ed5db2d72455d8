"""Gamma-Gamma model of average transaction value (Fader, Hardie & Lee 2005, "RFM and CLV").

Each transaction value is Gamma(p, nu) (shape ``p``, rate ``nu``) and ``nu ~ Gamma(q, gamma)`` across
customers, so a customer's mean spend is ``p / nu`` and the population mean is ``p * gamma / (q - 1)``.
The model assumes spend is independent of purchase frequency; it is fitted on repeat buyers only, with
``monetary_value`` the mean value of their *repeat* purchases.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.optimize import minimize
from scipy.special import digamma, gammaln

from ._validation import (
    FloatArray,
    NotFittedError,
    as_float,
    broadcast,
    check_non_negative,
    dot,
    resolve_rng,
    series_index,
    wrap,
)
from .bgnbd import FitSummary

__all__ = ["GammaGammaModel", "GammaGammaParams"]

_LOG_BOUND = 18.0


class GammaGammaParams(NamedTuple):
    """Gamma-Gamma parameters: transaction shape ``p`` and the Gamma(q, gamma) prior on its rate."""

    p: float
    q: float
    gamma: float


def _validate_spend(frequency: ArrayLike, monetary_value: ArrayLike) -> tuple[FloatArray, FloatArray]:
    x = as_float("frequency", frequency)
    m = as_float("monetary_value", monetary_value)
    check_non_negative("frequency", x)
    check_non_negative("monetary_value", m)
    if np.any(x != np.round(x)):
        raise ValueError("frequency must contain whole numbers (count of repeat purchase periods)")
    x, m = broadcast(("frequency", "monetary_value"), (x, m))
    return x, m


class _Data:
    """Repeat buyers' data with everything that does not depend on the parameters summed up front.

    Gamma functions depend on the customer only through x, so they are evaluated per distinct x; the only
    per-customer work left in an evaluation is ln(gamma + x zbar) and its reciprocal.
    """

    def __init__(self, x: FloatArray, m: FloatArray, w: FloatArray) -> None:
        self.xm, self.w, self.wx = x * m, w, w * x
        self.x_unique, inverse = np.unique(x, return_inverse=True)
        self.w_by_x = np.bincount(inverse, weights=w, minlength=self.x_unique.size)
        self.wx_by_x = self.w_by_x * self.x_unique
        log_m = np.log(m)
        self.sum_w_log_m = dot(w, log_m)
        self.sum_wx_log_xm = dot(self.wx, log_m + np.log(x))
        self.w_total = float(w.sum())


def _neg_mean_loglik(theta: FloatArray, d: _Data) -> tuple[float, FloatArray]:
    """Weighted mean negative log-likelihood and gradient with respect to log(p, q, gamma).

    Per customer, ln f = ln G(px+q) - ln G(px) - ln G(q) + q ln gamma + (px-1) ln zbar + px ln x
    - (px+q) ln(gamma + x zbar).
    """
    p, q, gamma = np.exp(theta)
    pxu = p * d.x_unique
    log_g = np.log(gamma + d.xm)
    inv_g = 1.0 / (gamma + d.xm)
    sum_w_log_g, sum_wx_log_g = dot(d.w, log_g), dot(d.wx, log_g)

    per_x = gammaln(pxu + q) - gammaln(pxu)
    loglik = (
        dot(per_x, d.w_by_x)
        + d.w_total * (q * np.log(gamma) - gammaln(q))
        + p * d.sum_wx_log_xm
        - d.sum_w_log_m
        - p * sum_wx_log_g
        - q * sum_w_log_g
    )
    psi_pxq = digamma(pxu + q)
    g_p = dot(psi_pxq - digamma(pxu), d.wx_by_x) + d.sum_wx_log_xm - sum_wx_log_g
    g_q = dot(psi_pxq, d.w_by_x) - d.w_total * (digamma(q) - np.log(gamma)) - sum_w_log_g
    g_gamma = q * d.w_total / gamma - p * dot(d.wx, inv_g) - q * dot(d.w, inv_g)
    grad = np.array([g_p * p, g_q * q, g_gamma * gamma])
    return -loglik / d.w_total, -grad / d.w_total


class GammaGammaModel:
    """Gamma-Gamma spend model fitted by maximum likelihood on repeat buyers.

    Attributes after fitting: ``params`` (:class:`GammaGammaParams`), ``log_likelihood`` (total over the
    repeat buyers used), ``standard_errors``, ``fit_summary``.
    """

    def __init__(self) -> None:
        self.params: GammaGammaParams | None = None
        self.log_likelihood: float | None = None
        self.standard_errors: GammaGammaParams | None = None
        self.fit_summary: FitSummary | None = None

    @classmethod
    def from_params(cls, p: float, q: float, gamma: float) -> GammaGammaModel:
        """A model with known parameters."""
        values = np.array([p, q, gamma], dtype=np.float64)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise ValueError(
                f"Gamma-Gamma parameters must be finite and > 0, got p={p}, q={q}, gamma={gamma}"
            )
        model = cls()
        model.params = GammaGammaParams(*map(float, values))
        return model

    def __repr__(self) -> str:
        if self.params is None:
            return "GammaGammaModel(unfitted)"
        p = self.params
        return f"GammaGammaModel(p={p.p:.4g}, q={p.q:.4g}, gamma={p.gamma:.4g})"

    def _require_params(self) -> GammaGammaParams:
        if self.params is None:
            raise NotFittedError("GammaGammaModel has no parameters; call fit() or from_params() first")
        return self.params

    def fit(
        self,
        frequency: ArrayLike,
        monetary_value: ArrayLike,
        *,
        weights: ArrayLike | None = None,
        maxiter: int = 2000,
    ) -> GammaGammaModel:
        """Fit on customers with ``frequency > 0``; the others carry no spend information and are skipped."""
        x, m = _validate_spend(frequency, monetary_value)
        x, m = np.atleast_1d(x, m)
        if weights is None:
            w = np.ones_like(x)
        else:
            w = as_float("weights", weights)
            check_non_negative("weights", w)
            if w.shape != x.shape:
                raise ValueError(f"weights must have one entry per customer ({x.size}), got {w.size}")
        keep = (x > 0) & (w > 0)
        if not keep.any():
            raise ValueError("no customer has a repeat purchase; the Gamma-Gamma model needs repeat buyers")
        x, m, w = x[keep], m[keep], w[keep]
        if np.any(m <= 0):
            raise ValueError(
                f"monetary_value must be > 0 for repeat buyers; {int((m <= 0).sum())} repeat buyer(s) have 0"
            )
        if np.unique(m).size < 2:
            raise ValueError(
                "monetary_value is constant across repeat buyers; the spread cannot be estimated"
            )

        # Start at q = 2 (finite population mean) with gamma chosen so that p * gamma / (q - 1) = mean spend.
        theta0 = np.log([1.0, 2.0, float(np.average(m, weights=w))])
        data = _Data(x, m, w)
        res = minimize(
            _neg_mean_loglik,
            theta0,
            args=(data,),
            jac=True,
            method="L-BFGS-B",
            bounds=[(-_LOG_BOUND, _LOG_BOUND)] * 3,
            options={"maxiter": maxiter, "ftol": 1e-14, "gtol": 1e-9},
        )
        converged = bool(res.success) or float(np.max(np.abs(res.jac))) < 1e-5
        if not converged:
            raise RuntimeError(f"Gamma-Gamma fit did not converge: {res.message}")
        hit = [
            n for n, th in zip(GammaGammaParams._fields, res.x, strict=True) if abs(th) >= _LOG_BOUND - 1e-6
        ]
        if hit:
            warnings.warn(
                f"Gamma-Gamma parameter(s) {hit} reached the optimisation bound; "
                "the data may not identify them",
                RuntimeWarning,
                stacklevel=2,
            )
        total = float(w.sum())
        self.params = GammaGammaParams(*map(float, np.exp(res.x)))
        self.log_likelihood = float(-res.fun * total)
        self.standard_errors = self._standard_errors(res.x, data)
        self.fit_summary = FitSummary(
            converged=converged,
            n_iter=int(res.nit),
            n_eval=int(res.nfev),
            message=str(res.message),
            n_customers=total,
        )
        return self

    @staticmethod
    def _standard_errors(theta: FloatArray, data: _Data) -> GammaGammaParams:
        step = 1e-5
        hess = np.empty((3, 3))
        for j in range(3):
            e = np.zeros(3)
            e[j] = step
            hess[:, j] = (_neg_mean_loglik(theta + e, data)[1] - _neg_mean_loglik(theta - e, data)[1]) / (
                2 * step
            )
        hess = 0.5 * (hess + hess.T) * data.w_total
        try:
            cov = np.linalg.inv(hess)
        except np.linalg.LinAlgError:
            return GammaGammaParams(*([float("nan")] * 3))
        var = np.diag(cov)
        se = np.where(var > 0, np.exp(theta) * np.sqrt(np.abs(var)), np.nan)
        return GammaGammaParams(*map(float, se))

    def summary(self) -> pd.DataFrame:
        """Parameter table with standard errors and 95% intervals (symmetric on the log scale)."""
        params = self._require_params()
        est = np.array(params)
        se = np.array(self.standard_errors or [float("nan")] * 3)
        return pd.DataFrame(
            {
                "estimate": est,
                "std_error": se,
                "lower_95": est * np.exp(-1.959964 * se / est),
                "upper_95": est * np.exp(1.959964 * se / est),
            },
            index=pd.Index(GammaGammaParams._fields, name="parameter"),
        )

    @property
    def population_mean_spend(self) -> float:
        """E[transaction value] across customers, p * gamma / (q - 1); infinite when q <= 1."""
        p, q, gamma = self._require_params()
        return p * gamma / (q - 1.0) if q > 1.0 else float("inf")

    def conditional_expected_average_profit(self, frequency: ArrayLike, monetary_value: ArrayLike) -> Any:
        """E[mean transaction value | x, zbar]: a credibility-weighted blend of zbar and the population mean.

        Customers with ``frequency == 0`` get the population mean (their ``monetary_value`` is ignored).
        """
        p, q, gamma = self._require_params()
        index = series_index(frequency, monetary_value)
        x, m = _validate_spend(frequency, monetary_value)
        if q <= 1.0 and np.any(x == 0):
            raise ValueError(
                f"q = {q:.4g} <= 1 makes the population mean spend infinite, so customers without repeat "
                "purchases have no finite expected spend"
            )
        m = np.where(x > 0, m, 0.0)
        expected = p * (gamma + x * m) / (p * x + q - 1.0)
        return wrap(expected, index, "expected_average_profit")

    def sample_monetary(
        self, frequency: ArrayLike, rng: np.random.Generator | int | None = None
    ) -> FloatArray:
        """Simulate each customer's mean spend over ``frequency`` transactions (0 where frequency is 0)."""
        p, q, gamma = self._require_params()
        x = np.atleast_1d(_validate_spend(frequency, 0.0)[0])
        gen = resolve_rng(rng)
        rate = gen.gamma(shape=q, scale=1.0 / gamma, size=x.size)
        # A sum of x iid Gamma(p, rate) values is Gamma(p * x, rate).
        total = gen.gamma(shape=np.where(x > 0, p * x, 1.0), scale=1.0 / rate)
        return np.where(x > 0, total / np.maximum(x, 1.0), 0.0)
