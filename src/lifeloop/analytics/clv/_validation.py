"""Input checks and array/Series plumbing shared by the CLV models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


class NotFittedError(RuntimeError):
    """Raised when a model is used before `fit()` or `from_params()`."""


def as_float(name: str, values: ArrayLike) -> FloatArray:
    """Convert to a float64 array, rejecting empty input and NaN/inf."""
    if isinstance(values, pd.Series | pd.Index):
        values = values.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a scalar or 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or infinite value(s)")
    return arr


def check_non_negative(name: str, arr: FloatArray) -> None:
    """Reject negative entries with a count and the first offending position."""
    neg = arr < 0
    if neg.any():
        first = int(np.flatnonzero(np.atleast_1d(neg))[0])
        raise ValueError(
            f"{name} must be >= 0; {int(neg.sum())} negative value(s), first at position {first}"
        )


def broadcast(names: Sequence[str], arrays: Sequence[FloatArray]) -> list[FloatArray]:
    """Broadcast per-customer arrays together, with a readable error on length mismatch."""
    try:
        return [np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(*arrays)]
    except ValueError:
        shapes = ", ".join(f"{n}={a.shape}" for n, a in zip(names, arrays, strict=True))
        raise ValueError(f"inputs have incompatible lengths: {shapes}") from None


def validate_rfm(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validate (frequency, recency, T) and broadcast them to a common shape.

    frequency must be whole numbers >= 0, 0 <= recency <= T, and recency must be 0 when frequency is 0.
    """
    x = as_float("frequency", frequency)
    tx = as_float("recency", recency)
    t_obs = as_float("T", T)
    for name, arr in (("frequency", x), ("recency", tx), ("T", t_obs)):
        check_non_negative(name, arr)
    if np.any(x != np.round(x)):
        raise ValueError("frequency must contain whole numbers (count of repeat purchase periods)")
    x, tx, t_obs = broadcast(("frequency", "recency", "T"), (x, tx, t_obs))
    # Tolerate rounding noise from unit conversions (days -> weeks) when comparing recency to T.
    over = tx > t_obs * (1.0 + 1e-12) + 1e-12
    if over.any():
        first = int(np.flatnonzero(np.atleast_1d(over))[0])
        raise ValueError(
            f"recency must not exceed T; {int(over.sum())} customer(s) violate this, "
            f"first at position {first}"
        )
    lonely = (x == 0) & (tx > 0)
    if lonely.any():
        first = int(np.flatnonzero(np.atleast_1d(lonely))[0])
        raise ValueError(
            f"recency must be 0 when frequency is 0; {int(lonely.sum())} customer(s) violate this, "
            f"first at position {first}"
        )
    return x, np.minimum(tx, t_obs), t_obs


def series_index(*inputs: Any) -> pd.Index | None:
    """The index of the first pandas Series among the inputs, so outputs can keep customer ids."""
    for item in inputs:
        if isinstance(item, pd.Series):
            return item.index
    return None


def wrap(values: FloatArray, index: pd.Index | None, name: str) -> Any:
    """Return a Series when an index is known, a float for 0-d results, else the array."""
    if index is not None and values.ndim == 1 and len(index) == values.shape[0]:
        return pd.Series(values, index=index, name=name)
    if values.ndim == 0:
        return float(values)
    return values


def dot(a: NDArray[Any], b: NDArray[Any]) -> float:
    """Inner product of two 1-D arrays, kept off BLAS.

    BLAS-backed ``@`` runs long vectors on several threads, which gains nothing for a memory-bound dot
    product and becomes many times slower when the cores are busy with other work.
    """
    return float(np.einsum("i,i->", a, b))


def resolve_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Accept a Generator, a seed or None."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
