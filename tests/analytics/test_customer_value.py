"""The CLV summary computed in SQL equals clv.rfm_summary's definition; the CLV table is coherent."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lifeloop.analytics.clv import rfm_summary
from lifeloop.analytics.service import clv_summary, customer_value
from lifeloop.analytics.store import store
from lifeloop.analytics.synthetic import load_events, shop_events
from lifeloop.errors import InvalidInput
from tests.analytics.generated import generate, load

AS_OF = date(2024, 5, 1)


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("clv") / "a.duckdb"
    history = generate(seed=21, users=600)
    load(history, p)
    return p


@pytest.mark.parametrize("freq_days", [1.0, 7.0])
def test_sql_summary_matches_rfm_summary(path: Path, freq_days: float) -> None:
    history = generate(seed=21, users=600)
    canonical = dict(zip(history.profile_map["profile_id"], history.profile_map["canonical_id"], strict=True))
    e = history.events
    tx = e[(e["event"] == "Order Completed") & (e["day"] <= AS_OF)].copy()
    tx["user"] = tx["profile_id"].map(canonical)
    tx["revenue"] = tx["revenue"].fillna(0.0)
    tx["day"] = pd.to_datetime(tx["day"])
    expected = rfm_summary(tx, "user", "day", "revenue", pd.Timestamp(AS_OF), freq_days=freq_days)
    with store(path) as con:
        got = clv_summary(con, 1, AS_OF, freq_days)
    assert list(got.index) == list(expected.index)
    assert (got["frequency"].to_numpy() == expected["frequency"].to_numpy()).all()
    for col in ("recency", "T", "monetary_value"):
        assert np.allclose(got[col].to_numpy(), expected[col].to_numpy(), rtol=1e-12, atol=1e-12), col


def test_customer_value_table(tmp_path: Path) -> None:
    events, last_day = shop_events(4000, seed=3)
    with store(tmp_path / "shop.duckdb") as con:
        load_events(con, events)
        frame, params = customer_value(con, 1, as_of=last_day, months=6)
    # Purchases were drawn from BG/NBD at the CDNOW parameters; the fit finds them again.
    assert params["r"] == pytest.approx(0.243, rel=0.25) and params["a"] == pytest.approx(0.793, rel=0.4)
    assert set(params) == {"r", "alpha", "a", "b", "p", "q", "gamma"}
    assert frame["p_alive"].between(0, 1).all() and (frame["clv"] >= 0).all()
    assert frame["clv"].is_monotonic_decreasing
    assert len(frame) == 4000 and frame["at_risk"].dtype == bool


def test_data_without_dropout_is_a_clear_error(path: Path) -> None:
    with store(path) as con, pytest.raises(InvalidInput, match="could not be fitted"):
        customer_value(con, 1, as_of=AS_OF)


def test_no_orders_is_a_clear_error(tmp_path: Path) -> None:
    with store(tmp_path / "empty.duckdb") as con, pytest.raises(InvalidInput, match="no orders"):
        customer_value(con, 1, as_of=AS_OF)


def test_customer_value_is_fitted_once_per_state_of_the_store(tmp_path: Path) -> None:
    from lifeloop.analytics import service

    events, last_day = shop_events(1500, seed=5)
    path = tmp_path / "shop.duckdb"
    with store(path) as con:
        load_events(con, events[events["day"] < pd.Timestamp(last_day)])
    first, params = service.cached_customer_value(path, 1, as_of=last_day, months=6)
    key = next(reversed(service._VALUES._items))
    again, same = service.cached_customer_value(path, 1, as_of=last_day, months=6)
    assert next(reversed(service._VALUES._items)) == key  # served from the cache: no second fit
    pd.testing.assert_frame_equal(first, again)
    assert same == params
    first.loc[:, "clv"] = -1.0  # a caller's change does not reach the cache
    with store(path) as con:
        direct, _ = customer_value(con, 1, as_of=last_day, months=6)
        pd.testing.assert_frame_equal(
            service.cached_customer_value(path, 1, as_of=last_day, months=6)[0], direct
        )
        load_events(con, events[events["day"] == pd.Timestamp(last_day)])  # a sync writes the store
    service.cached_customer_value(path, 1, as_of=last_day, months=6)
    assert next(reversed(service._VALUES._items)) != key  # fitted again on the store as it is now
