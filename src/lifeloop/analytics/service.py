"""The analytics function API used by the CLI, the REST routes and the worker."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import duckdb
import numpy as np
import pandas as pd

from lifeloop.analytics.clv import (
    BetaGeoModel,
    GammaGammaModel,
    churn_risk,
    customer_lifetime_value,
)
from lifeloop.analytics.engines import engine_for
from lifeloop.analytics.metrics import Metric, MetricResult, build_metric
from lifeloop.analytics.metrics.base import ORDER_EVENT, events_cte, lit
from lifeloop.analytics.rollups import Rollups, involved_days_cte, merge_ctes, read_rollups, snapshot
from lifeloop.analytics.store import store, store_state
from lifeloop.config import get_settings
from lifeloop.errors import InvalidInput, LifeloopError

T = TypeVar("T")


def _refuse_workspace_param(params: dict[str, Any]) -> None:
    if "workspace_id" in params:  # the workspace comes from the credential, never from the caller
        raise InvalidInput(
            "workspace_id is not a parameter; it comes from the API token", field="workspace_id"
        )


def run_metric(path: str | Path, workspace_id: int, name: str, params: dict[str, Any]) -> MetricResult:
    """Validate ``params`` for metric ``name`` and run it on the store at ``path``."""
    _refuse_workspace_param(params)
    metric = build_metric(name, {**params, "workspace_id": workspace_id})
    # DuckDB unless LIFELOOP_ANALYTICS_ENGINE=spark: the same SQL, transpiled (engines/spark.py).
    return engine_for(get_settings(), path).run_metric(metric)


def run_metrics(
    path: str | Path, workspace_id: int, requests: Sequence[tuple[str, dict[str, Any]]]
) -> list[MetricResult | LifeloopError | duckdb.Error]:
    """Several metrics (a dashboard's) on one opening of the store — an opening costs 50-70 ms, more than
    many a metric — each with its result or the error it alone raised, in the order asked."""
    built: list[Metric | LifeloopError] = []
    for name, params in requests:
        _refuse_workspace_param(params)  # for the whole request, as run_metric does
        try:
            built.append(build_metric(name, {**params, "workspace_id": workspace_id}))
        except LifeloopError as error:
            built.append(error)
    settings = get_settings()
    if settings.analytics_engine != "duckdb":
        engine = engine_for(settings, path)
        return _answers(built, lambda _i, metric: engine.run_metric(metric))
    state = store_state(path)  # read before the queries: a write meanwhile only makes a later miss
    keys = {
        i: (str(path), state, m.name, m.model_dump_json())
        for i, m in enumerate(built)
        if state is not None and isinstance(m, Metric)
    }
    cached = {i: hit for i, key in keys.items() if (hit := _METRICS.get(key)) is not None}
    if len(cached) == sum(isinstance(m, Metric) for m in built):  # the store need not even be opened
        answers = _answers(built, lambda i, _metric: cached[i])
    else:
        with store(path) as con:
            answers = _answers(built, lambda i, metric: cached[i] if i in cached else metric.run(con))
    for i, answer in enumerate(answers):
        if i in keys and isinstance(answer, MetricResult):
            _METRICS.put(keys[i], answer)
    return [_own(a) if isinstance(a, MetricResult) else a for a in answers]


def _answers(
    built: Sequence[Metric | LifeloopError], run: Callable[[int, Metric], MetricResult]
) -> list[MetricResult | LifeloopError | duckdb.Error]:
    """Each metric's result (``run`` with its position and itself), or the error it alone raised (a metric
    that could not be built: its error)."""
    answers: list[MetricResult | LifeloopError | duckdb.Error] = []
    for i, metric in enumerate(built):
        if isinstance(metric, LifeloopError):
            answers.append(metric)
            continue
        try:
            answers.append(run(i, metric))
        except (LifeloopError, duckdb.Error) as error:
            answers.append(error)
    return answers


def _own(result: MetricResult) -> MetricResult:
    """A result of the caller's own (its frame a copy), so that a cached one stays as it was computed."""
    return MetricResult(result.metric, result.frame.copy(), result.sql, result.timings)


def clv_summary_query(
    workspace_id: int, as_of: date, freq_days: float = 7.0, rollups: Rollups | None = None
) -> str:
    """SQL for the per-customer summary BG/NBD and Gamma-Gamma are fitted on (as ``clv.rfm_summary``).

    Orders on the same calendar day (workspace time zone) are one purchase worth the day's total; orders
    after ``as_of`` are ignored, missing revenue counts as 0 and negative revenue (refunds) is left out.
    ``frequency`` = purchase days − 1; ``recency`` = last − first purchase day; ``T`` = ``as_of`` − first
    purchase day (both in units of ``freq_days`` days); ``monetary_value`` = mean over the repeat days.
    From the per-profile rollups when ``rollups`` hold no purchase after ``as_of``, else from raw events.
    """
    per = lit(float(freq_days))
    summary = f"""SELECT user_id, COUNT(*) - 1 AS frequency,
       DATE_DIFF('day', MIN(day), MAX(day)) / {per} AS recency,
       DATE_DIFF('day', MIN(day), {lit(as_of)}) / {per} AS T,
       CASE WHEN COUNT(*) > 1
            THEN (SUM(amount) - SUM(CASE WHEN rn = 1 THEN amount END)) / (COUNT(*) - 1) ELSE 0 END
           AS monetary_value
FROM ranked GROUP BY user_id"""
    ranked = """ranked AS (
    SELECT user_id, day, amount, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY day) AS rn FROM daily
)"""
    if rollups is None or not rollups.cover_clv(as_of):
        return f"""WITH {events_cte(workspace_id)},
daily AS (
    SELECT user_id, day, SUM(COALESCE(revenue, 0)) AS amount FROM ev
    WHERE event = {lit(ORDER_EVENT)} AND day <= {lit(as_of)} AND COALESCE(revenue, 0) >= 0
    GROUP BY user_id, day
),
{ranked}
{summary} ORDER BY user_id"""
    # Profiles untouched by merges straight from their summary; merged ones from their purchase days.
    ctes = [
        *merge_ctes(workspace_id),
        involved_days_cte(workspace_id, "d.clv_orders > 0"),
        "daily AS (SELECT user_id, day, SUM(clv_amount) AS amount FROM inv_days GROUP BY user_id, day)",
        ranked,
    ]
    with_ = ",\n".join(ctes)
    return f"""WITH {with_}
SELECT s.profile_id AS user_id, s.clv_days - 1 AS frequency,
       DATE_DIFF('day', s.clv_first_day, s.clv_last_day) / {per} AS recency,
       DATE_DIFF('day', s.clv_first_day, {lit(as_of)}) / {per} AS T,
       CASE WHEN s.clv_days > 1 THEN (s.clv_amount - s.clv_first_amount) / (s.clv_days - 1) ELSE 0 END
           AS monetary_value
FROM profile_summary s LEFT JOIN involved i ON i.profile_id = s.profile_id
WHERE s.workspace_id = {lit(workspace_id)} AND i.profile_id IS NULL AND s.clv_days > 0
UNION ALL
{summary}
ORDER BY user_id"""


def clv_summary(
    con: duckdb.DuckDBPyConnection, workspace_id: int, as_of: date, freq_days: float = 7.0
) -> pd.DataFrame:
    """The summary of ``clv_summary_query``, indexed by user id."""
    with snapshot(con):
        sql = clv_summary_query(workspace_id, as_of, freq_days, read_rollups(con, workspace_id))
        frame = con.sql(sql).to_arrow_table().to_pandas()
    return frame.set_index("user_id")


class _StateCache:
    """Answers computed on the analytics store, kept per state of the store (``store_state``): the store
    changes only when a sync, a scoring or a cost import writes it, so until then a page asks again for
    nothing new. Bounded; least recently used first out."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_VALUES = _StateCache(8)  # fitted customer values: seconds each at a million customers
_METRICS = _StateCache(256)  # metric results: a dashboard's are 5-150 ms each at a million customers
_NAMES = _StateCache(32)  # event names: a scan of every event


def _per_state(cache: _StateCache, path: str | Path, key: tuple[Any, ...], compute: Callable[[Any], T]) -> T:
    """``compute(con)`` on the store at ``path``, once per state of the store."""
    state = store_state(path)
    if state is None:  # nothing synced yet: ``compute`` says so in its own words
        with store(path) as con:
            return compute(con)
    full = (str(path), state, *key)
    if (found := cache.get(full)) is None:
        with store(path) as con:
            found = compute(con)
        cache.put(full, found)
    return cast(T, found)


def cached_customer_value(
    path: str | Path, workspace_id: int, *, as_of: date, months: int = 12
) -> tuple[pd.DataFrame, dict[str, float]]:
    """``customer_value`` on the store at ``path``, fitted once per state of the store (the fits and
    predictions take seconds at a million customers); the caller's frame is a copy."""
    frame, params = _per_state(
        _VALUES,
        path,
        (workspace_id, as_of, months),
        lambda con: customer_value(con, workspace_id, as_of=as_of, months=months),
    )
    return frame.copy(), dict(params)


def cached_event_names(path: str | Path, workspace_id: int) -> list[str]:
    """``event_names`` on the store at ``path``, read once per state of the store."""
    names = _per_state(_NAMES, path, ("events", workspace_id), lambda con: event_names(con, workspace_id))
    return list(names)


def customer_value(
    con: duckdb.DuckDBPyConnection,
    workspace_id: int,
    *,
    as_of: date | None = None,
    months: int = 12,
    discount_rate_monthly: float = 0.01,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per purchaser: BG/NBD P(alive) and expected orders in ``months``, Gamma-Gamma expected order value,
    predicted CLV and the churn-risk flag; plus the fitted parameters. Model time is in weeks."""
    as_of = as_of or datetime.now(UTC).date()
    summary = clv_summary(con, workspace_id, as_of)
    if summary.empty:
        raise InvalidInput("no orders to fit customer-lifetime-value models on", field="workspace")
    if int((summary["frequency"] > 0).sum()) < 2:
        raise InvalidInput("fewer than two customers with repeat orders: CLV models cannot be fitted")
    x, tx, t = summary["frequency"], summary["recency"], summary["T"]
    repeat = (x > 0) & (summary["monetary_value"] > 0)
    try:
        bgnbd = BetaGeoModel().fit(x, tx, t)
        gg = GammaGammaModel().fit(x[repeat], summary.loc[repeat, "monetary_value"])
    except (RuntimeError, ValueError) as error:  # e.g. no dropout in the data: the likelihood has no maximum
        raise InvalidInput(f"CLV models could not be fitted on these orders: {error}") from error
    weeks = months * 30.0 / 7.0
    # A fit can converge to degenerate parameters (e.g. a, b → ∞ when nobody drops out) whose predictions
    # overflow: computed quietly here and refused below, rather than returned as NaN.
    with np.errstate(all="ignore"):
        out, risk = _predictions(summary, bgnbd, gg, weeks, months, discount_rate_monthly)
    predicted = out[["p_alive", "expected_orders", "expected_order_value", "clv"]].to_numpy()
    if not np.isfinite(predicted).all():
        raise InvalidInput(
            "CLV models could not be fitted on these orders: the fitted parameters give no finite "
            "prediction (the data may hold no dropout)"
        )
    out["at_risk"] = risk["at_risk"].to_numpy()
    out["risk_reason"] = risk["reason"].to_numpy()
    out = out.reset_index().sort_values("clv", ascending=False)
    if bgnbd.params is None or gg.params is None:  # fit() sets them or raises
        raise RuntimeError("CLV models were not fitted")
    params = {**bgnbd.params._asdict(), **gg.params._asdict()}
    return out.reset_index(drop=True), params


def set_channel_costs(con: duckdb.DuckDBPyConnection, workspace_id: int, costs: pd.DataFrame) -> int:
    """Upsert per-channel daily costs (columns ``channel``, ``day``, ``cost``); returns rows written."""
    missing = {"channel", "day", "cost"} - set(costs.columns)
    if missing:
        raise InvalidInput(
            f"the cost table needs columns channel, day, cost (missing {', '.join(sorted(missing))})"
        )
    frame = pd.DataFrame(
        {
            "workspace_id": workspace_id,
            "channel": costs["channel"].astype(str).str.strip().str.lower(),
            "day": pd.to_datetime(costs["day"], errors="coerce").dt.date,
            "cost": pd.to_numeric(costs["cost"], errors="coerce"),
        }
    )
    bad = frame[frame["day"].isna() | frame["cost"].isna() | (frame["channel"] == "")]
    if len(bad):
        line = int(bad.index[0]) + 2  # header is line 1
        raise InvalidInput(f"cost row on line {line} needs a channel, a date and a number", field="costs")
    con.begin()
    try:
        con.register("new_costs", frame)
        con.execute(
            """INSERT INTO channel_costs SELECT workspace_id, channel, day, SUM(cost) FROM new_costs
               GROUP BY workspace_id, channel, day
               ON CONFLICT (workspace_id, channel, day) DO UPDATE SET cost = excluded.cost"""
        )
        con.unregister("new_costs")
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return len(frame)


def _predictions(
    summary: pd.DataFrame,
    bgnbd: BetaGeoModel,
    gg: GammaGammaModel,
    weeks: float,
    months: int,
    discount_rate_monthly: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per purchaser: orders, P(alive), expected orders and order value, CLV; and the churn-risk frame."""
    x, tx, t = summary["frequency"], summary["recency"], summary["T"]
    out = pd.DataFrame(index=summary.index)
    out["orders"] = x + 1
    out["p_alive"] = np.asarray(bgnbd.conditional_probability_alive(x, tx, t))
    out["expected_orders"] = np.asarray(bgnbd.conditional_expected_purchases(weeks, x, tx, t))
    out["expected_order_value"] = np.asarray(
        gg.conditional_expected_average_profit(x, summary["monetary_value"])
    )
    out["clv"] = np.asarray(
        customer_lifetime_value(
            bgnbd,
            gg,
            x,
            tx,
            t,
            summary["monetary_value"],
            months=months,
            discount_rate_monthly=discount_rate_monthly,
            period_days=7.0,
        )
    )
    risk = churn_risk(bgnbd, x, tx, t)
    return out, risk


def event_names(con: duckdb.DuckDBPyConnection, workspace_id: int) -> list[str]:
    """Every event name the workspace's synced events use, alphabetically: what a funnel step or a path's
    anchor can be (a name not in it matches nothing, which is a typo more often than a question)."""
    rows = con.execute(
        "SELECT DISTINCT event FROM events WHERE workspace_id = ? AND event IS NOT NULL ORDER BY event",
        [workspace_id],
    ).fetchall()
    return [str(name) for (name,) in rows]


def value_distribution(clv: pd.Series, bins: int = 10) -> pd.DataFrame:
    """Customers per range of predicted value (``customer_value``'s ``clv``): ``bins`` equal-width ranges
    from 0 (or the lowest value, if negative) to the highest, columns ``low``, ``high``, ``customers``.
    Each range holds values ≥ ``low`` and < ``high`` (the last one includes its ``high``)."""
    if bins < 1:
        raise InvalidInput("a value distribution needs at least one range", field="bins")
    values = clv.to_numpy(dtype=np.float64)
    if values.size == 0:
        return pd.DataFrame({"low": [], "high": [], "customers": []})
    lowest, highest = min(0.0, float(values.min())), float(values.max())
    highest = highest if highest > lowest else lowest + 1.0  # all equal: one unit wide, not zero
    counts, edges = np.histogram(values, bins=bins, range=(lowest, highest))
    return pd.DataFrame({"low": edges[:-1], "high": edges[1:], "customers": counts.astype(np.int64)})


def at_risk_customers(values: pd.DataFrame) -> pd.DataFrame:
    """The customers ``customer_value`` flags at risk of churning, most at risk first: lowest P(alive),
    then the most predicted value at stake."""
    risky = values[values["at_risk"]]
    return risky.sort_values(["p_alive", "clv"], ascending=[True, False]).reset_index(drop=True)
