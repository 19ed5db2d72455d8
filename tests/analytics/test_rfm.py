"""RFM scores, value layers and segments against a plain-pandas computation of docs/presets.md's rules."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lifeloop.analytics.rfm import RfmConfig, layer_counts, score_rfm, value_tiers
from lifeloop.analytics.store import open_store, store
from tests.analytics.generated import History, generate, load

AS_OF = datetime(2024, 4, 20, 6, 0, tzinfo=UTC)


def reference(history: History, as_of: datetime, cfg: dict[str, Any]) -> pd.DataFrame:
    at = as_of.replace(tzinfo=None)
    canonical = dict(zip(history.profile_map["profile_id"], history.profile_map["canonical_id"], strict=True))
    e = history.events.assign(user=history.events["profile_id"].map(canonical))
    e = e[e["ts"] < at]
    first_seen = e[e["interactive"]].groupby("user")["ts"].min()
    o = e[e["event"] == "Order Completed"]
    g = o.groupby("user")
    out = pd.DataFrame({"first_seen": first_seen})
    out["orders"] = g.size().reindex(out.index, fill_value=0)
    out["monetary"] = g["revenue"].sum().round(6).reindex(out.index, fill_value=0.0)  # NaN counts as 0
    out["first_order"] = g["ts"].min().reindex(out.index)
    out["last_order"] = g["ts"].max().reindex(out.index)
    out["recency_days"] = ((at - out["last_order"]).dt.total_seconds() // 86400).astype("Int64")
    buyers = out[out["orders"] > 0]
    n = len(buyers)
    if cfg.get("method", "quantile") == "quantile":

        def quint(s: pd.Series) -> pd.Series:
            return 1 + (5 * (s.rank(method="min").astype(int) - 1)) // n

        r, f, m = quint(-buyers["recency_days"]), quint(buyers["orders"]), quint(buyers["monetary"])
    else:
        rd, ft, mt = cfg["recency_days"], cfg["frequency"], cfg["monetary"]
        r = buyers["recency_days"].map(lambda d: next((5 - i for i, t in enumerate(rd) if d <= t), 1))
        f = buyers["orders"].map(lambda x: 1 + sum(x >= t for t in ft))
        m = buyers["monetary"].map(lambda x: 1 + sum(x >= t for t in mt))
    out["r"], out["f"], out["m"] = r, f, m

    def layer(row: pd.Series) -> str:
        rr, ff, mm, k = row["r"], row["f"], row["m"], row["orders"]
        bought = k > 0
        if bought and rr >= 4 and ff >= 4 and mm >= 4:
            return "high_value"
        if k == 1 and row["first_order"] > at - timedelta(days=30):
            return "new"
        if bought and rr >= 3 and (ff >= 4 or mm >= 4):
            return "potential"
        if (k == 0 and row["first_seen"] < at - timedelta(days=30)) or (bought and rr == 1 and ff == 1):
            return "lost"
        if bought and rr <= 2:
            return "sleeping"
        return "regular"

    def classic(row: pd.Series) -> str | None:
        if row["orders"] == 0:
            return None
        hi = [row[c] >= 3 for c in ("r", "f", "m")]
        names = {
            (True, True): "value",
            (True, False): "develop",
            (False, True): "keep",
            (False, False): "retain",
        }
        return ("important_" if hi[2] else "general_") + names[(hi[0], hi[1])]

    grid = {
        "11": "hibernating", "12": "hibernating", "21": "hibernating", "22": "hibernating",
        "13": "at_risk", "14": "at_risk", "23": "at_risk", "24": "at_risk",
        "15": "cant_lose", "25": "cant_lose",
        "31": "about_to_sleep", "32": "about_to_sleep", "33": "need_attention", "34": "loyal", "35": "loyal",
        "44": "loyal", "45": "loyal", "41": "promising", "51": "new_customers", "42": "potential_loyalists",
        "43": "potential_loyalists", "52": "potential_loyalists", "53": "potential_loyalists",
        "54": "champions", "55": "champions",
    }  # fmt: skip
    out["layer"] = out.apply(layer, axis=1)
    out["rfm_segment"] = out.apply(classic, axis=1)
    out["rf_segment"] = [
        grid[f"{int(a)}{int(b)}"] if k > 0 else None
        for a, b, k in zip(out["r"], out["f"], out["orders"], strict=True)
    ]
    return out.sort_index()


@pytest.fixture(scope="module")
def history() -> History:
    return generate(seed=5, users=500)


@pytest.fixture
def path(history: History, tmp_path: Path) -> Path:
    p = tmp_path / "a.duckdb"
    load(history, p)
    return p


THRESHOLDS = {"method": "thresholds", "recency_days": (5, 15, 40, 80), "frequency": (2, 3, 4, 6),
              "monetary": (50, 150, 300, 600)}  # fmt: skip


@pytest.mark.parametrize("cfg", [{}, THRESHOLDS], ids=["quantile", "thresholds"])
def test_scores_layers_and_segments_match_pandas(history: History, path: Path, cfg: dict[str, Any]) -> None:
    with store(path) as con:
        got = score_rfm(con, 1, as_of=AS_OF, config=RfmConfig(**cfg)).set_index("user_id")
    exp = reference(history, AS_OF, cfg)
    assert list(got.index) == list(exp.index)

    def plain(values: list[Any]) -> list[Any]:
        return [
            None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v for v in values
        ]

    for col in ("orders", "recency_days", "r", "f", "m", "layer", "rfm_segment", "rf_segment"):
        assert plain(got[col].tolist()) == plain(exp[col].tolist()), col
    assert np.allclose(got["monetary"].to_numpy(), exp["monetary"].to_numpy(), rtol=1e-12)
    # Every layer of the preset occurs in this history, so each rule is exercised.
    assert set(got["layer"]) == {"high_value", "new", "potential", "lost", "sleeping", "regular"}


def test_value_tiers_are_the_last_scoring(path: Path) -> None:
    with store(path) as con:
        scored = score_rfm(con, 1, as_of=AS_OF)
        score_rfm(con, 1, as_of=AS_OF)  # rescoring replaces, never duplicates
        counts = layer_counts(con, 1)
    tiers = value_tiers(path, 1)
    assert tiers == dict(zip(scored["user_id"].tolist(), scored["layer"].tolist(), strict=True))
    assert counts["users"].sum() == len(scored)
    assert counts["layer"].iloc[0] == "high_value"
    assert value_tiers(path, 2) == {}


def test_thresholds_must_ascend() -> None:
    with pytest.raises(ValueError, match="ascending"):
        RfmConfig(method="thresholds", recency_days=(30, 7, 90, 180))


def test_scores_follow_merged_profiles(path: Path) -> None:
    con = open_store(path)
    try:
        score_rfm(con, 1, as_of=AS_OF)
        users = {r[0] for r in con.execute("SELECT user_id FROM rfm_scores").fetchall()}
    finally:
        con.close()
    assert not any(u % 10 == 0 for u in users)  # every 10th profile was merged into its neighbour
