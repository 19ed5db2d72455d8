"""The ``messages`` metric against an independent plain-pandas count of the same events.

The reference below is written from the metric's definition (per day in the workspace's time zone and per
message channel, the ``Message Delivered`` / ``Failed`` / ``Suppressed`` events, an unnamed channel counted
as ``unknown``, days without messages left out; the population filters as docs/analytics.md defines them),
not from its SQL, and calls no lifeloop code: only the generated history and the store loader are shared.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from lifeloop.analytics.metrics import build_metric
from lifeloop.analytics.store import open_store
from tests.analytics.generated import TZ, History, day, generate, load

WS = 1
OUTCOMES = {"delivered": "Message Delivered", "failed": "Message Failed", "suppressed": "Message Suppressed"}
MESSAGE_CHANNELS = ["line", "wecom", "email", "sms", None]


def with_messages(history: History, seed: int) -> History:
    """The generated history plus delivery outcomes on many of its users' days, on several channels (some
    unnamed), a few in the same second (ties) — as the outbox reports them back."""
    rng = np.random.default_rng(seed)
    base = history.events[history.events["interactive"]].sample(frac=0.4, random_state=seed)
    outcome = rng.choice(list(OUTCOMES.values()), size=len(base), p=[0.7, 0.2, 0.1])
    channel = rng.choice(np.array(MESSAGE_CHANNELS, dtype=object), size=len(base))
    extra = pd.DataFrame(
        {
            "profile_id": base["profile_id"].to_numpy(),
            "ts": base["ts"].to_numpy()
            + pd.to_timedelta(rng.integers(0, 6 * 3600, size=len(base)), unit="s"),
            "type": "track",
            "event": outcome,
            "channel": channel,
        }
    )
    extra["id"] = history.events["id"].max() + 3 * np.arange(1, len(extra) + 1, dtype=np.int64)
    extra["workspace_id"] = history.workspace_id
    extra["day"] = (
        extra["ts"].dt.tz_localize("UTC").dt.tz_convert(TZ).dt.tz_localize(None).dt.normalize().dt.date
    )
    extra["interactive"] = False
    for column in history.events.columns:
        if column not in extra:
            extra[column] = None
    events = pd.concat([history.events, extra[history.events.columns]], ignore_index=True)
    events["revenue"] = events["revenue"].astype("float64")
    return History(events=events, profile_map=history.profile_map, costs=history.costs, workspace_id=WS)


@pytest.fixture(scope="module")
def history() -> History:
    return with_messages(generate(seed=17, users=300, workspace_id=WS), seed=3)


@pytest.fixture(scope="module")
def con(history: History, tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    path = tmp_path_factory.mktemp("store") / "messages.duckdb"
    load(history, path)
    other = generate(seed=5, users=40, workspace_id=2)  # another workspace's messages never count
    other.events["id"] += 10_000_000
    other.events["workspace_id"] = 2
    other.events.loc[other.events.index[::3], "event"] = "Message Delivered"
    load(other, path)
    connection = open_store(path)
    yield connection
    connection.close()


# ------------------------------------------------------------------------------------ pandas reference


def canonical_events(history: History) -> pd.DataFrame:
    e = history.events.copy()
    survivor = dict(zip(history.profile_map["profile_id"], history.profile_map["canonical_id"], strict=True))
    e["user"] = e["profile_id"].map(survivor)
    return e.sort_values(["ts", "id"]).reset_index(drop=True)


def population(e: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    """The events of the users the filters choose: acquisition channel = the channel of a user's earliest
    event naming one; stage / segment = as of the end of the range."""
    users = set(e["user"])
    if p.get("channel"):
        first = e[e["channel"].notna()].groupby("user")["channel"].first()
        users &= set(first[first == p["channel"]].index)
    if p.get("stage"):
        stages = e[(e["event"] == "Lifecycle Stage Entered") & (e["day"] <= p["end"])]
        last = stages.groupby("user")["stage"].last()
        users &= set(last[last == p["stage"]].index)
    if p.get("segment"):
        marks = e[
            e["event"].isin(["Segment Entered", "Segment Exited"])
            & (e["segment"] == p["segment"])
            & (e["day"] <= p["end"])
        ]
        last = marks.groupby("user")["event"].last()
        users &= set(last[last == "Segment Entered"].index)
    return e[e["user"].isin(users)]


def expected_counts(history: History, p: dict[str, Any]) -> list[tuple[date, str, int]]:
    e = population(canonical_events(history), p)
    sent = e[(e["event"] == OUTCOMES[p.get("outcome", "delivered")]) & e["day"].between(p["start"], p["end"])]
    counts = sent.assign(channel=sent["channel"].fillna("unknown")).groupby(["day", "channel"]).size()
    return [(d, str(c), int(n)) for (d, c), n in counts.sort_index().items()]


CASES: list[dict[str, Any]] = [
    {"start": day(0), "end": day(149)},
    {"start": day(20), "end": day(60), "outcome": "failed"},
    {"start": day(30), "end": day(37), "outcome": "suppressed"},
    {"start": day(10), "end": day(120), "channel": "line"},
    {"start": day(0), "end": day(149), "segment": "vip", "outcome": "failed"},
    {"start": day(40), "end": day(100), "stage": "loyal"},
    {"start": day(200), "end": day(210)},  # after every event: no rows
]


@pytest.mark.parametrize("params", CASES, ids=[f"case-{i}" for i in range(len(CASES))])
def test_messages_per_day_and_channel_match_pandas(
    params: dict[str, Any], con: duckdb.DuckDBPyConnection, history: History
) -> None:
    result = build_metric("messages", {"workspace_id": WS, **params}).run(con)
    frame = result.frame
    assert list(frame.columns) == ["day", "channel", "messages"]
    got = [(d, c, int(n)) for d, c, n in frame.itertuples(index=False, name=None)]
    expected = expected_counts(history, params)
    assert got == expected
    if params["end"] < day(150):
        assert expected, "the case should count some messages"
        assert all(isinstance(d, date) for d, _c, _n in got)
    assert result.to_json()["chart"] == {
        "type": "stacked_area",
        "x": "day",
        "group": "channel",
        "value": "messages",
    }


def test_every_outcome_is_counted_once(con: duckdb.DuckDBPyConnection, history: History) -> None:
    """Delivered + failed + suppressed over all days is every outcome event of the workspace."""
    span = {"start": day(0), "end": day(0) + timedelta(days=200)}
    total = sum(
        int(
            build_metric("messages", {"workspace_id": WS, **span, "outcome": o})
            .run(con)
            .frame["messages"]
            .sum()
        )
        for o in OUTCOMES
    )
    e = history.events
    assert total == int(e["event"].isin(list(OUTCOMES.values())).sum()) > 0
