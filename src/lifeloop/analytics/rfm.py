"""RFM scoring, seed 004's value layers and the classic RFM segments.

Per user (canonical profile, over orders before ``as_of``): R = whole days since the last order, F = the
number of orders, M = their total revenue, rounded to 6 decimals so that equal spend ranks equal whatever
order an engine adds it in. Scores 1-5 either by quintile over purchasers (ties share a
score: ``1 + floor(5 × (rank − 1) / purchasers)`` with rank = SQL ``RANK``; R ranks longer-ago first, so
more recent = higher) or by configurable thresholds. Layers follow docs/presets.md (first match wins):

====================  ==================================================================
``high_value``        R ≥ 4, F ≥ 4, M ≥ 4
``new``               exactly one order, the first order within ``new_days`` (30) days
``potential``         R ≥ 3 and (F ≥ 4 or M ≥ 4)
``lost``              never ordered and first seen more than ``lost_days`` (30) days ago, or R = 1 and F = 1
``sleeping``          R ≤ 2 and at least one order
``regular``           otherwise
====================  ==================================================================

``rfm_segment`` is the classic 8-way split (R, F, M each high when ≥ ``high_score``): important_value
(重要价值), important_develop (重要发展), important_keep (重要保持), important_retain (重要挽留),
general_value (一般价值), general_develop (一般发展), general_keep (一般保持), general_retain (一般挽留).
``rf_segment`` is the common R × F grid (champions, loyal, potential_loyalists, new_customers, promising,
need_attention, about_to_sleep, cant_lose, at_risk, hibernating). Non-purchasers have neither.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Engine

from lifeloop.analytics.metrics.base import ORDER_EVENT, events_cte, lit
from lifeloop.analytics.rollups import Rollups, merge_ctes, read_rollups
from lifeloop.analytics.store import store
from lifeloop.profiles.service import set_trait

LAYERS = ("high_value", "new", "potential", "lost", "sleeping", "regular")


class RfmConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["quantile", "thresholds"] = "quantile"
    # Thresholds, each ascending: R scores 5 at or under the first number of days, down to 1 past the last;
    # F and M score 1 + how many thresholds the value reaches.
    recency_days: tuple[int, int, int, int] = (7, 30, 90, 180)
    frequency: tuple[float, float, float, float] = (2, 3, 5, 8)
    monetary: tuple[float, float, float, float] = (100, 300, 1000, 3000)
    high_score: int = Field(default=3, ge=1, le=5)
    new_days: int = Field(default=30, ge=1)
    lost_days: int = Field(default=30, ge=1)

    @model_validator(mode="after")
    def _ascending(self) -> RfmConfig:
        for name in ("recency_days", "frequency", "monetary"):
            values = getattr(self, name)
            if list(values) != sorted(values):
                raise ValueError(f"{name} thresholds must be ascending")
        return self


def _quintile(rank: str) -> str:
    """The 1-5 score of a purchaser whose SQL ``RANK`` among purchasers is ``rank``."""
    return f"CAST(1 + FLOOR(5 * ({rank} - 1) / p.purchasers) AS INTEGER)"


def _rank_by_value(column: str, descending: bool) -> str:
    """``RANK() OVER (ORDER BY column)`` among purchasers, per distinct value: 1 + how many purchasers come
    strictly before it. For few distinct values (orders, days), this replaces a sort of every purchaser by
    a sort of the values."""
    order = f"{column} DESC" if descending else column
    return f"""SELECT {column}, SUM(n) OVER (ORDER BY {order} ROWS UNBOUNDED PRECEDING) - n + 1 AS rnk
    FROM (SELECT {column}, COUNT(*) AS n FROM base WHERE orders > 0 GROUP BY {column}) v"""


def _quintile_cuts(column: str) -> str:
    """One row ``c1``…``c4``: the purchasers' ``t_j``-th smallest ``column`` value, t_j = ceil(j × n / 5).

    The quintile score ``1 + floor(5 × (rank − 1) / n)`` is at least j + 1 exactly when rank − 1 (how many
    purchasers have a smaller value) is at least t_j, i.e. when the value exceeds the t_j-th smallest: so
    the score is 1 + the number of cuts the value exceeds. For columns with nearly one value per purchaser
    (monetary) this needs one narrow sort and no join of the ranks back to the users."""
    cuts = ", ".join(f"MAX(CASE WHEN o.rn = t.t{j} THEN o.{column} END) AS c{j}" for j in range(1, 5))
    targets = ", ".join(f"CAST(CEIL({j} * purchasers / 5) AS BIGINT) AS t{j}" for j in range(1, 5))
    return f"""SELECT {cuts} FROM (
        SELECT {column}, ROW_NUMBER() OVER (ORDER BY {column}) AS rn FROM base WHERE orders > 0
    ) o CROSS JOIN (SELECT {targets} FROM purchasers) t"""


def _at_least(column: str, thresholds: tuple[float, ...]) -> str:
    return "1 + " + " + ".join(f"CASE WHEN {column} >= {lit(float(t))} THEN 1 ELSE 0 END" for t in thresholds)


def _per_user_from_events(workspace_id: int, at: str) -> str:
    order = lit(ORDER_EVENT)
    return f"""{events_cte(workspace_id)},
per_user AS (
    -- one pass over the events: first interaction and the order aggregates together
    SELECT user_id,
           MIN(CASE WHEN interactive THEN ts END) AS first_seen,
           COUNT(CASE WHEN event = {order} THEN 1 END) AS orders,
           ROUND(SUM(CASE WHEN event = {order} THEN COALESCE(revenue, 0) ELSE 0 END), 6) AS monetary,
           MIN(CASE WHEN event = {order} THEN ts END) AS first_order,
           MAX(CASE WHEN event = {order} THEN ts END) AS last_order
    FROM ev WHERE ts < {at} AND (interactive OR event = {order})
    GROUP BY user_id
)"""


def _per_user_from_rollups(workspace_id: int) -> str:
    ws = lit(workspace_id)
    return ",\n".join(
        [
            *merge_ctes(workspace_id),
            f"""per_user AS (
    -- profiles untouched by merges as summarised; merged profiles combined into their survivor
    SELECT s.profile_id AS user_id, s.first_seen, s.orders, ROUND(s.revenue, 6) AS monetary,
           s.first_order, s.last_order
    FROM profile_summary s LEFT JOIN involved i ON i.profile_id = s.profile_id
    WHERE s.workspace_id = {ws} AND i.profile_id IS NULL
    UNION ALL
    SELECT COALESCE(m.canonical_id, s.profile_id) AS user_id, MIN(s.first_seen) AS first_seen,
           CAST(SUM(s.orders) AS BIGINT) AS orders, ROUND(SUM(s.revenue), 6) AS monetary,
           MIN(s.first_order) AS first_order, MAX(s.last_order) AS last_order
    FROM profile_summary s JOIN involved i ON i.profile_id = s.profile_id
    LEFT JOIN merged m ON m.profile_id = s.profile_id
    WHERE s.workspace_id = {ws}
    GROUP BY COALESCE(m.canonical_id, s.profile_id)
)""",
        ]
    )


def rfm_query(workspace_id: int, as_of: datetime, config: RfmConfig, rollups: Rollups | None = None) -> str:
    """SQL returning one row per user (unordered) with R, F, M, their scores, layer and segments.

    From the per-profile rollups when ``rollups`` (the workspace's, see ``rollups.read_rollups``) hold no
    event at or after ``as_of``; otherwise from the raw events."""
    at_utc = as_of.astimezone(UTC).replace(tzinfo=None)
    at = lit(at_utc)
    if rollups is not None and rollups.cover_rfm(at_utc):
        per_user = _per_user_from_rollups(workspace_id)
    else:
        per_user = _per_user_from_events(workspace_id, at)
    ctes = [per_user]
    ctes.append(f"""base AS (
    SELECT user_id, first_seen, orders, monetary, first_order, last_order,
           CAST(FLOOR(DATE_DIFF('second', last_order, {at}) / 86400) AS BIGINT) AS recency_days
    FROM per_user WHERE first_seen IS NOT NULL
)""")
    if config.method == "quantile":
        ctes.append("purchasers AS (SELECT COUNT(*) AS purchasers FROM base WHERE orders > 0)")
        ctes.append(f"r_rank AS ({_rank_by_value('recency_days', descending=True)})")
        ctes.append(f"f_rank AS ({_rank_by_value('orders', descending=False)})")
        ctes.append(f"m_cut AS ({_quintile_cuts('monetary')})")
        r, f = _quintile("rr.rnk"), _quintile("fr.rnk")
        m = "CAST(1 + " + " + ".join(f"CASE WHEN b.monetary > mc.c{j} THEN 1 ELSE 0 END" for j in range(1, 5))
        m += " AS INTEGER)"
        joins = """CROSS JOIN purchasers p CROSS JOIN m_cut mc
    LEFT JOIN r_rank rr ON rr.recency_days = b.recency_days
    LEFT JOIN f_rank fr ON fr.orders = b.orders"""
    else:
        cases = " ".join(
            f"WHEN b.recency_days <= {d} THEN {5 - i}" for i, d in enumerate(config.recency_days)
        )
        r = f"CASE {cases} ELSE 1 END"
        f, m = _at_least("b.orders", config.frequency), _at_least("b.monetary", config.monetary)
        joins = ""
    ctes.append(f"""scored AS (
    SELECT b.*, CASE WHEN b.orders > 0 THEN {r} END AS r, CASE WHEN b.orders > 0 THEN {f} END AS f,
           CASE WHEN b.orders > 0 THEN {m} END AS m
    FROM base b {joins}
)""")
    hi = config.high_score
    with_ = ",\n".join(ctes)
    return f"""WITH {with_},
layered AS (
    SELECT s.*,
           CASE
               WHEN s.r >= 4 AND s.f >= 4 AND s.m >= 4 THEN 'high_value'
               WHEN s.orders = 1 AND s.first_order > {at} - INTERVAL {config.new_days} DAY THEN 'new'
               WHEN s.r >= 3 AND (s.f >= 4 OR s.m >= 4) THEN 'potential'
               WHEN (s.orders = 0 AND s.first_seen < {at} - INTERVAL {config.lost_days} DAY)
                    OR (s.r = 1 AND s.f = 1) THEN 'lost'
               WHEN s.r <= 2 AND s.orders >= 1 THEN 'sleeping'
               ELSE 'regular'
           END AS layer,
           CASE WHEN s.orders > 0 THEN
               CASE WHEN s.m >= {hi} THEN 'important_' ELSE 'general_' END ||
               CASE WHEN s.r >= {hi} AND s.f >= {hi} THEN 'value'
                    WHEN s.r >= {hi} THEN 'develop'
                    WHEN s.f >= {hi} THEN 'keep'
                    ELSE 'retain' END
           END AS rfm_segment,
           CASE
               WHEN s.r = 5 AND s.f >= 4 THEN 'champions'
               WHEN s.r >= 3 AND s.f >= 4 THEN 'loyal'
               WHEN s.r >= 4 AND s.f >= 2 THEN 'potential_loyalists'
               WHEN s.r = 5 THEN 'new_customers'
               WHEN s.r = 4 THEN 'promising'
               WHEN s.r = 3 AND s.f = 3 THEN 'need_attention'
               WHEN s.r = 3 THEN 'about_to_sleep'
               WHEN s.f = 5 THEN 'cant_lose'
               WHEN s.f >= 3 THEN 'at_risk'
               WHEN s.r IS NOT NULL THEN 'hibernating'
           END AS rf_segment
    FROM scored s
)
SELECT {lit(workspace_id)} AS workspace_id, user_id, {at} AS as_of, first_seen, orders, monetary,
       first_order, last_order, recency_days, r, f, m, layer, rfm_segment, rf_segment
FROM layered"""


def score_rfm(
    con: duckdb.DuckDBPyConnection,
    workspace_id: int,
    *,
    as_of: datetime | None = None,
    config: RfmConfig | None = None,
) -> pd.DataFrame:
    """Score every user of the workspace and replace its rows in ``rfm_scores`` (one transaction)."""
    as_of = as_of or datetime.now(UTC)
    con.begin()
    try:
        sql = rfm_query(workspace_id, as_of, config or RfmConfig(), read_rollups(con, workspace_id))
        con.execute("DELETE FROM rfm_scores WHERE workspace_id = ?", [workspace_id])
        con.execute(f"INSERT INTO rfm_scores {sql}")
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return con.execute(
        "SELECT * EXCLUDE (workspace_id) FROM rfm_scores WHERE workspace_id = ? ORDER BY user_id",
        [workspace_id],
    ).df()


def layer_counts(con: duckdb.DuckDBPyConnection, workspace_id: int) -> pd.DataFrame:
    """Users per value layer in the last scoring, in the order of LAYERS."""
    frame = con.execute(
        "SELECT layer, COUNT(*) AS users FROM rfm_scores WHERE workspace_id = ? GROUP BY layer",
        [workspace_id],
    ).df()
    order = {layer: i for i, layer in enumerate(LAYERS)}
    return frame.sort_values("layer", key=lambda s: s.map(order)).reset_index(drop=True)


def value_tiers(path: str | Path, workspace_id: int) -> dict[int, str]:
    """profile id → value layer from the last scoring: what the profile's value tier is written from."""
    with store(path) as con:
        rows = con.execute(
            "SELECT user_id, layer FROM rfm_scores WHERE workspace_id = ?", [workspace_id]
        ).fetchall()
    return {int(user): layer for user, layer in rows}


def write_value_tiers(
    engine: Engine, path: str | Path, workspace_id: int, *, now: datetime | None = None
) -> int:
    """Score RFM in the analytics store and write each customer's layer to the ``value_tier`` trait,
    which the contact policy (frequency caps) and segment conditions (``trait.value_tier``) read.

    Returns how many profiles changed tier. Run it after a sync.
    """
    now = now or datetime.now(UTC)
    with store(path) as con:
        score_rfm(con, workspace_id, as_of=now)
    tiers: dict[int, Any] = dict(value_tiers(path, workspace_id))
    with engine.begin() as conn:
        return set_trait(conn, workspace_id, "value_tier", tiers, now=now)
