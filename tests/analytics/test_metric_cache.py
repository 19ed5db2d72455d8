"""A dashboard's metrics are computed once per state of the analytics store: asked again, the same answer
comes back without a query; once a write lands (a sync, a cost import), the answer is computed afresh."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd

from lifeloop.analytics import service
from lifeloop.analytics.store import store, store_state
from lifeloop.analytics.synthetic import load_events, shop_events


def test_metrics_are_computed_once_per_state_of_the_store(tmp_path: Path) -> None:
    events, last_day = shop_events(800, seed=3)
    path = tmp_path / "shop.duckdb"
    cut = pd.Timestamp(last_day - timedelta(days=7))
    with store(path) as con:
        load_events(con, events[events["day"] < cut])
    span = {"start": (last_day - timedelta(days=27)).isoformat(), "end": last_day.isoformat()}
    wanted = [("revenue", {**span, "interval": "week"}), ("active_users", span), ("revenue", {"start": "x"})]

    first = service.run_metrics(path, 1, wanted)
    assert isinstance(first[2], service.InvalidInput)  # an error is an error each time, never kept
    state = store_state(path)
    again = service.run_metrics(path, 1, wanted)
    assert store_state(path) == state  # not even opened: opening a store may write it
    for a, b in zip(first[:2], again[:2], strict=True):
        assert isinstance(a, service.MetricResult) and isinstance(b, service.MetricResult)
        assert b.timings == a.timings  # the very same computation…
        pd.testing.assert_frame_equal(b.frame, a.frame)
        assert b.frame is not a.frame  # …each caller with a frame of its own
    assert isinstance(first[0], service.MetricResult)
    first[0].frame.loc[:, "revenue"] = -1.0
    assert (service.run_metrics(path, 1, wanted[:1])[0].frame["revenue"] >= 0).all()  # type: ignore[union-attr]

    with store(path) as con:  # the last week's events arrive
        load_events(con, events[events["day"] >= cut])
    assert store_state(path) != state
    fresh = service.run_metrics(path, 1, wanted[:1])[0]
    with store(path) as con:
        direct = service.build_metric("revenue", {**wanted[0][1], "workspace_id": 1}).run(con)
    assert isinstance(fresh, service.MetricResult)
    pd.testing.assert_frame_equal(fresh.frame, direct.frame)
    assert fresh.frame["orders"].sum() > again[0].frame["orders"].sum()  # type: ignore[union-attr]
