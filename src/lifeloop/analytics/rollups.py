"""Per-profile rollups of the event log, kept current by the sync, that RFM, retention and the CLV summary
read instead of re-aggregating every event on every query.

Tables (created by ``lifeloop.analytics.store``), all keyed by the *raw* profile id, never the canonical one,
so a merge changes no rollup row — queries combine merged profiles through ``profile_map`` (below):

- ``profile_days``: per (workspace, profile, day) with an interaction or an order: active flag, first
  interaction time, order count / revenue / first and last order time, and the CLV purchase-day figures
  (orders with non-negative revenue). Append-only: a (profile, day) split over two synced chunks has two
  rows, which every reader adds up.
- ``profile_summary``: per (workspace, profile): first interaction time and day, orders, revenue, first /
  last order time, and the CLV figures (purchase days, first / last purchase day, total and first-day
  amount). A pure function of the profile's ``profile_days`` rows.
- ``cohort_counts``: per (workspace, unit, first_day, k): how many profiles whose first active day is
  ``first_day`` were active ``k`` days / weeks / months later (each profile counted as its own user).
- ``profile_activity``: per (workspace, profile): how many events, and the first and last event time,
  of all events and of interactions (the values the batch recompute's conditions read most:
  ``conditions.columnar.ACTIVITY_COLUMNS``). Upserted per chunk: counts add up, times keep the extreme.
- ``rollup_state``: per workspace, how many events the rollups hold and the newest event time / day /
  purchase day, i.e. which requests they can answer (``Rollups``).

Maintenance (``fold``) runs in the same DuckDB transaction as the chunk of events it folds
(``append_events``), so a crash leaves events, cursor and rollups consistent and a rerun folds nothing
twice. Only profiles touched by the chunk are recomputed, from their own ``profile_days`` rows, which
makes late (out-of-time-order) events exact: an earlier first day moves the profile's whole cohort
contribution.

Merges: ``profile_map`` rows with ``canonical_id <> profile_id`` are few. Their profiles and targets (the
*involved* profiles) are recombined at query time from their ``profile_days`` rows; everyone else reads
the rollups as they are. Cohort counts are corrected by subtracting the involved profiles' own
contributions and adding those of the users they form. Results therefore equal the raw-event SQL's,
whatever the order of syncs and merges.

A request is answered from the rollups only when they hold every event of the workspace (their count is
checked against ``events``) and cover its cut-off (RFM's ``as_of`` after the newest event, the CLV
summary's ``as_of`` on or after the newest purchase day), and without population filters; otherwise the
raw-event SQL runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

import duckdb

from lifeloop.analytics.metrics.base import ORDER_EVENT, lit

log = logging.getLogger(__name__)

Unit = Literal["day", "week", "month"]
UNITS: tuple[Unit, ...] = ("day", "week", "month")

SCHEMA = """
CREATE TABLE IF NOT EXISTS profile_days (
    workspace_id BIGINT NOT NULL,
    profile_id BIGINT NOT NULL,
    day DATE NOT NULL,
    active BOOLEAN NOT NULL,
    first_active_ts TIMESTAMP,
    orders BIGINT NOT NULL,
    revenue DOUBLE NOT NULL,
    first_order_ts TIMESTAMP,
    last_order_ts TIMESTAMP,
    clv_orders BIGINT NOT NULL,
    clv_amount DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS profile_summary (
    workspace_id BIGINT NOT NULL,
    profile_id BIGINT NOT NULL,
    first_seen TIMESTAMP,
    first_day DATE,
    orders BIGINT NOT NULL,
    revenue DOUBLE NOT NULL,
    first_order TIMESTAMP,
    last_order TIMESTAMP,
    clv_days BIGINT NOT NULL,
    clv_first_day DATE,
    clv_last_day DATE,
    clv_amount DOUBLE NOT NULL,
    clv_first_amount DOUBLE,
    PRIMARY KEY (workspace_id, profile_id)
);
CREATE TABLE IF NOT EXISTS cohort_counts (
    workspace_id BIGINT NOT NULL,
    unit VARCHAR NOT NULL,
    first_day DATE NOT NULL,
    k BIGINT NOT NULL,
    users BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, unit, first_day, k)
);
CREATE TABLE IF NOT EXISTS profile_activity (
    workspace_id BIGINT NOT NULL,
    profile_id BIGINT NOT NULL,
    events BIGINT NOT NULL,
    first_ts TIMESTAMP NOT NULL,
    last_ts TIMESTAMP NOT NULL,
    interactions BIGINT NOT NULL,
    first_interaction TIMESTAMP,
    last_interaction TIMESTAMP,
    PRIMARY KEY (workspace_id, profile_id)
);
CREATE TABLE IF NOT EXISTS rollup_state (
    workspace_id BIGINT PRIMARY KEY,
    events BIGINT NOT NULL,
    max_ts TIMESTAMP,
    max_day DATE,
    max_order_day DATE
);
"""

# What the metrics read (and the Spark engine exports); the activity is the batch recompute's.
METRIC_TABLES = ("profile_days", "profile_summary", "cohort_counts", "rollup_state")
TABLES = (*METRIC_TABLES, "profile_activity")

ORDER = lit(ORDER_EVENT)
# An order counts as a CLV purchase unless its revenue is negative (a refund), as in the CLV summary SQL.
CLV_ORDER = f"event = {ORDER} AND COALESCE(revenue, 0) >= 0"


@dataclass(frozen=True, slots=True)
class Rollups:
    """What one workspace's rollups cover, read in the same snapshot as the query that uses them."""

    workspace_id: int
    max_ts: datetime | None  # newest interaction or order
    max_day: date | None  # newest day of any event (the default "observed up to" of retention)
    max_order_day: date | None  # newest CLV purchase day

    def cover_rfm(self, at: datetime) -> bool:
        """RFM at ``at`` (naive UTC) counts events before ``at``: all of them must be."""
        return self.max_ts is None or self.max_ts < at

    def cover_clv(self, as_of: date) -> bool:
        """The CLV summary counts purchases up to ``as_of``: all of them must be."""
        return self.max_order_day is None or self.max_order_day <= as_of


@contextmanager
def snapshot(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One read transaction for the block, unless the caller already holds one on ``con``."""
    try:
        con.begin()
    except duckdb.TransactionException:  # already inside the caller's transaction: theirs is the snapshot
        yield
        return
    try:
        yield
    except BaseException:
        con.rollback()  # the caller's error, not a failed commit of an aborted transaction
        raise
    con.commit()


def read_rollups(con: duckdb.DuckDBPyConnection, workspace_id: int) -> Rollups | None:
    """The workspace's rollup coverage, or None when the rollups do not hold exactly its events (e.g. events
    loaded without the sync): then every query reads the raw events."""
    row = con.execute(
        """SELECT s.events, s.max_ts, s.max_day, s.max_order_day,
                  (SELECT COUNT(*) FROM events WHERE workspace_id = $ws)
           FROM rollup_state s WHERE s.workspace_id = $ws""",
        {"ws": workspace_id},
    ).fetchall()
    if not row:
        return None
    folded, max_ts, max_day, max_order_day, stored = row[0]
    if folded != stored:
        log.warning(
            "analytics rollups of workspace %s hold %s events, the store %s: reading raw events",
            workspace_id,
            folded,
            stored,
        )
        return None
    return Rollups(workspace_id, max_ts, max_day, max_order_day)


def read_all_rollups(con: duckdb.DuckDBPyConnection) -> dict[int, Rollups]:
    """``read_rollups`` for every workspace with current rollups (one pass over ``events``)."""
    rows = con.execute(
        """SELECT s.workspace_id, s.max_ts, s.max_day, s.max_order_day FROM rollup_state s
           JOIN (SELECT workspace_id, COUNT(*) AS n FROM events GROUP BY workspace_id) e
             ON e.workspace_id = s.workspace_id AND e.n = s.events"""
    ).fetchall()
    return {int(ws): Rollups(int(ws), ts, d, od) for ws, ts, d, od in rows}


# ------------------------------------------------------------------------------------- shared SQL pieces


def period_index(unit: Unit, first_day: str, day: str) -> str:
    """Whole days / weeks / months from the period of ``first_day`` to that of ``day`` (as the metrics)."""
    if unit == "day":
        return f"DATE_DIFF('day', {first_day}, {day})"
    if unit == "week":
        return (
            f"CAST(DATE_DIFF('day', CAST(DATE_TRUNC('week', {first_day}) AS DATE), "
            f"CAST(DATE_TRUNC('week', {day}) AS DATE)) / 7 AS BIGINT)"
        )
    return (
        f"((EXTRACT(YEAR FROM {day}) - EXTRACT(YEAR FROM {first_day})) * 12"
        f" + EXTRACT(MONTH FROM {day}) - EXTRACT(MONTH FROM {first_day}))"
    )


def contributions(unit: Unit, active_days: str, keys: str = "") -> str:
    """Cohort counts (``keys``, first_day, k, users) of the users in ``active_days`` (a relation with
    columns ``keys``, ``u``, ``day``: one row per active user-day, duplicates allowed): each user's first day
    is their earliest day, and they count once per period in which they were active."""
    part = f"PARTITION BY {keys}u" if keys else "PARTITION BY u"
    days = f"(SELECT DISTINCT {keys}u, day FROM {active_days}) x"
    inner = f"""SELECT DISTINCT {keys}u, f AS first_day, {period_index(unit, "f", "day")} AS k FROM (
        SELECT {keys}u, day, MIN(day) OVER ({part}) AS f FROM {days}
    ) y"""
    return f"SELECT {keys}first_day, k, COUNT(*) AS users FROM ({inner}) z GROUP BY {keys}first_day, k"


def merge_ctes(workspace_id: int) -> list[str]:
    """``merged`` (merged-away profiles → survivor, as ``events_cte`` joins them) and ``involved`` (those
    profiles and their survivors: every profile whose user differs from the profile alone)."""
    ws = lit(workspace_id)
    return [
        f"""merged AS (
    SELECT profile_id, canonical_id FROM profile_map WHERE workspace_id = {ws} AND canonical_id <> profile_id
)""",
        "involved AS (SELECT profile_id FROM merged UNION SELECT canonical_id FROM merged)",
    ]


def involved_days_cte(workspace_id: int, condition: str) -> str:
    """``inv_days(profile_id, user_id, day, …)``: the ``profile_days`` rows of involved profiles that meet
    ``condition``, with the user (survivor) each belongs to."""
    return f"""inv_days AS (
    SELECT d.profile_id, COALESCE(m.canonical_id, d.profile_id) AS user_id, d.day, d.clv_amount
    FROM profile_days d
    JOIN involved i ON i.profile_id = d.profile_id
    LEFT JOIN merged m ON m.profile_id = d.profile_id
    WHERE d.workspace_id = {lit(workspace_id)} AND {condition}
)"""


def active_user_days_cte(workspace_id: int, since: str, until: str, *, distinct: bool = True) -> list[str]:
    """``user_days(user_id, day)``: each user's (survivor's) active days from ``since`` to ``until`` (SQL
    date expressions), one row per user-day, from ``profile_days``, as the raw events' ``uev`` gives them.
    Without ``distinct`` a user-day may repeat (merged profiles, a day over two synced chunks), for a
    reader that collapses them itself."""
    return [
        *merge_ctes(workspace_id),
        f"""user_days AS (
    SELECT {"DISTINCT " if distinct else ""}COALESCE(m.canonical_id, d.profile_id) AS user_id, d.day
    FROM profile_days d LEFT JOIN merged m ON m.profile_id = d.profile_id
    WHERE d.workspace_id = {lit(workspace_id)} AND d.active AND d.day BETWEEN {since} AND {until}
)""",
    ]


def cohort_counts_cte(workspace_id: int, unit: Unit, where: str) -> list[str]:
    """``counts(first_day, k, users)``: ``cohort_counts`` of ``unit`` corrected for merges, restricted by
    ``where`` (over ``first_day`` and ``k``). Rows may repeat a (first_day, k): readers sum them."""
    ctes = [*merge_ctes(workspace_id), involved_days_cte(workspace_id, "d.active")]
    own = contributions(unit, "(SELECT profile_id AS u, day FROM inv_days) a")
    joint = contributions(unit, "(SELECT user_id AS u, day FROM inv_days) b")
    ctes.append(f"""counts AS (
    SELECT first_day, k, users FROM cohort_counts
    WHERE workspace_id = {lit(workspace_id)} AND unit = {lit(unit)} AND {where}
    UNION ALL
    SELECT first_day, k, -users FROM ({own}) o WHERE {where}
    UNION ALL
    SELECT first_day, k, users FROM ({joint}) j WHERE {where}
)""")
    return ctes


# ------------------------------------------------------------------------------------------ maintenance

_DAY_AGGREGATES = f"""BOOL_OR(interactive) AS active,
           MIN(CASE WHEN interactive THEN ts END) AS first_active_ts,
           COUNT(CASE WHEN event = {ORDER} THEN 1 END) AS orders,
           SUM(CASE WHEN event = {ORDER} THEN COALESCE(revenue, 0) ELSE 0 END) AS revenue,
           MIN(CASE WHEN event = {ORDER} THEN ts END) AS first_order_ts,
           MAX(CASE WHEN event = {ORDER} THEN ts END) AS last_order_ts,
           COUNT(CASE WHEN {CLV_ORDER} THEN 1 END) AS clv_orders,
           SUM(CASE WHEN {CLV_ORDER} THEN COALESCE(revenue, 0) ELSE 0 END) AS clv_amount"""

# One row per (profile, day) in ``rl_new``, so no regrouping by day: a purchase day is a row.
_SUMMARY = """SELECT workspace_id, profile_id, MIN(first_active_ts) AS first_seen,
       MIN(CASE WHEN active THEN day END) AS first_day,
       SUM(orders) AS orders, SUM(revenue) AS revenue,
       MIN(first_order_ts) AS first_order, MAX(last_order_ts) AS last_order,
       COUNT(CASE WHEN clv_orders > 0 THEN 1 END) AS clv_days,
       MIN(CASE WHEN clv_orders > 0 THEN day END) AS clv_first_day,
       MAX(CASE WHEN clv_orders > 0 THEN day END) AS clv_last_day,
       SUM(CASE WHEN clv_orders > 0 THEN clv_amount ELSE 0 END) AS clv_amount,
       ARG_MIN(clv_amount, day) FILTER (WHERE clv_orders > 0) AS clv_first_amount
FROM rl_new GROUP BY workspace_id, profile_id"""


def _cohort_rows(unit: Unit) -> str:
    """Signed cohort counts of ``unit`` from ``rl_cohort_days(sign, workspace_id, u, day, f)``."""
    k = period_index(unit, "f", "day")
    if unit == "day":  # user-days are distinct already
        rows = f"SELECT sign, workspace_id, f, {k} AS k FROM rl_cohort_days"
    else:  # once per (user, period)
        rows = f"SELECT DISTINCT sign, workspace_id, u, f, {k} AS k FROM rl_cohort_days"
    return (
        f"SELECT workspace_id, {lit(unit)} AS unit, f AS first_day, k, SUM(sign) AS users FROM ({rows}) r "
        "GROUP BY workspace_id, f, k"
    )


def fold(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """Fold the events in relation ``source`` (``events`` columns; rows not yet in any rollup) into the
    rollups. Runs inside the caller's transaction."""
    key = "workspace_id, profile_id, day"
    # (``day`` cast: a chunk that went through pandas carries it as a timestamp)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE rl_part AS
    SELECT workspace_id, profile_id, CAST(day AS DATE) AS day, {_DAY_AGGREGATES}
    FROM {source} WHERE interactive OR event = {ORDER}
    GROUP BY workspace_id, profile_id, CAST(day AS DATE)""")
    # The touched profiles' rows from before this chunk (one per day).
    con.execute("""CREATE OR REPLACE TEMP TABLE rl_old AS
    SELECT d.* FROM profile_days d
    JOIN (SELECT DISTINCT workspace_id, profile_id FROM rl_part) t
      ON t.workspace_id = d.workspace_id AND t.profile_id = d.profile_id""")
    # The chunk's days combined with the same day already stored (a day spanning two chunks).
    con.execute(f"""CREATE OR REPLACE TEMP TABLE rl_days AS
    SELECT {", ".join("p." + c for c in key.split(", "))},
           p.active OR COALESCE(o.active, FALSE) AS active,
           LEAST(p.first_active_ts, o.first_active_ts) AS first_active_ts,
           p.orders + COALESCE(o.orders, 0) AS orders, p.revenue + COALESCE(o.revenue, 0) AS revenue,
           LEAST(p.first_order_ts, o.first_order_ts) AS first_order_ts,
           GREATEST(p.last_order_ts, o.last_order_ts) AS last_order_ts,
           p.clv_orders + COALESCE(o.clv_orders, 0) AS clv_orders,
           p.clv_amount + COALESCE(o.clv_amount, 0) AS clv_amount,
           o.day IS NOT NULL AS existed, COALESCE(o.active, FALSE) AS was_active
    FROM rl_part p LEFT JOIN rl_old o
      ON o.workspace_id = p.workspace_id AND o.profile_id = p.profile_id AND o.day = p.day""")
    columns = "workspace_id, profile_id, day, active, first_active_ts, orders, revenue, first_order_ts, "
    columns += "last_order_ts, clv_orders, clv_amount"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE rl_new AS
    SELECT o.* FROM rl_old o ANTI JOIN rl_days d
      ON d.workspace_id = o.workspace_id AND d.profile_id = o.profile_id AND d.day = o.day
    UNION ALL SELECT {columns} FROM rl_days""")
    con.execute(f"CREATE OR REPLACE TEMP TABLE rl_summary AS {_SUMMARY}")
    # Cohort counts change only for profiles with a newly active day: their old contribution goes and the
    # new one comes (an earlier first day moves every offset).
    con.execute("""CREATE OR REPLACE TEMP TABLE rl_cohort_days AS
    WITH moved AS (SELECT DISTINCT workspace_id, profile_id FROM rl_days WHERE active AND NOT was_active)
    SELECT -1 AS sign, o.workspace_id, o.profile_id AS u, o.day, s.first_day AS f
    FROM rl_old o
    JOIN moved m ON m.workspace_id = o.workspace_id AND m.profile_id = o.profile_id
    JOIN profile_summary s ON s.workspace_id = o.workspace_id AND s.profile_id = o.profile_id
    WHERE o.active
    UNION ALL
    SELECT 1, n.workspace_id, n.profile_id, n.day, s.first_day
    FROM rl_new n
    JOIN moved m ON m.workspace_id = n.workspace_id AND m.profile_id = n.profile_id
    JOIN rl_summary s ON s.workspace_id = n.workspace_id AND s.profile_id = n.profile_id
    WHERE n.active""")
    deltas = "\n        UNION ALL\n        ".join(_cohort_rows(unit) for unit in UNITS)
    con.execute(f"""INSERT INTO cohort_counts
    SELECT workspace_id, unit, first_day, k, SUM(users) FROM (
        {deltas}
    ) delta GROUP BY workspace_id, unit, first_day, k HAVING SUM(users) <> 0
    ON CONFLICT (workspace_id, unit, first_day, k) DO UPDATE SET users = users + excluded.users""")
    if con.execute("SELECT COUNT(*) FROM rl_days WHERE existed").fetchall()[0][0]:
        con.execute("""DELETE FROM profile_days USING rl_days d
        WHERE d.existed AND profile_days.workspace_id = d.workspace_id
          AND profile_days.profile_id = d.profile_id AND profile_days.day = d.day""")
    con.execute(f"INSERT INTO profile_days SELECT {columns} FROM rl_days")
    con.execute("INSERT OR REPLACE INTO profile_summary SELECT * FROM rl_summary")
    fold_activity(con, source)
    con.execute(f"""INSERT INTO rollup_state
    SELECT workspace_id, COUNT(*),
           MAX(CASE WHEN interactive OR event = {ORDER} THEN ts END), MAX(day),
           MAX(CASE WHEN {CLV_ORDER} THEN day END)
    FROM {source} GROUP BY workspace_id
    ON CONFLICT (workspace_id) DO UPDATE SET
        events = rollup_state.events + excluded.events,
        max_ts = GREATEST(rollup_state.max_ts, excluded.max_ts),
        max_day = GREATEST(rollup_state.max_day, excluded.max_day),
        max_order_day = GREATEST(rollup_state.max_order_day, excluded.max_order_day)""")
    for table in ("rl_part", "rl_old", "rl_days", "rl_new", "rl_summary", "rl_cohort_days"):
        con.execute(f"DROP TABLE {table}")


ACTIVITY_COLUMNS = "events, first_ts, last_ts, interactions, first_interaction, last_interaction"


def activity_of_events(interactive: str) -> str:
    """The ``profile_activity`` columns as aggregates of events (``ts`` and the boolean ``interactive``)."""
    return (
        f"COUNT(*) AS events, MIN(ts) AS first_ts, MAX(ts) AS last_ts, "
        f"COUNT(*) FILTER (WHERE {interactive}) AS interactions, "
        f"MIN(ts) FILTER (WHERE {interactive}) AS first_interaction, "
        f"MAX(ts) FILTER (WHERE {interactive}) AS last_interaction"
    )


# The ``profile_activity`` columns of one profile from several rows of them (a merge, a chunk and what
# was kept before).
ACTIVITY_COMBINED = (
    "SUM(events)::BIGINT AS events, MIN(first_ts) AS first_ts, MAX(last_ts) AS last_ts, "
    "SUM(interactions)::BIGINT AS interactions, MIN(first_interaction) AS first_interaction, "
    "MAX(last_interaction) AS last_interaction"
)


def fold_activity(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """Add the events in ``source`` to ``profile_activity`` (in the caller's transaction)."""
    con.execute(f"""INSERT INTO profile_activity
    SELECT workspace_id, profile_id, {activity_of_events("interactive")}
    FROM {source} GROUP BY workspace_id, profile_id
    ON CONFLICT (workspace_id, profile_id) DO UPDATE SET
        events = profile_activity.events + excluded.events,
        first_ts = LEAST(profile_activity.first_ts, excluded.first_ts),
        last_ts = GREATEST(profile_activity.last_ts, excluded.last_ts),
        interactions = profile_activity.interactions + excluded.interactions,
        first_interaction = LEAST(profile_activity.first_interaction, excluded.first_interaction),
        last_interaction = GREATEST(profile_activity.last_interaction, excluded.last_interaction)""")


def append_events(con: duckdb.DuckDBPyConnection, relation: str) -> int:
    """Insert the flattened events in ``relation`` (``events`` columns, in order) and fold those that were
    new into the rollups, in the caller's transaction. Returns how many were new."""
    from lifeloop.analytics.sync import EVENT_COLUMNS

    columns = ", ".join(EVENT_COLUMNS)
    new = con.execute(
        f"INSERT INTO events SELECT {columns} FROM {relation} ON CONFLICT DO NOTHING "
        "RETURNING workspace_id, profile_id, ts, day, interactive, event, revenue"
    ).fetch_df()
    if new.empty:
        return 0
    con.register("rl_new_events", new)
    try:
        fold(con, "rl_new_events")
    finally:
        con.unregister("rl_new_events")
    return len(new)


def rebuild(
    con: duckdb.DuckDBPyConnection, workspace_id: int | None = None, *, transaction: bool = True
) -> None:
    """Recompute the rollups of one workspace (or all) from their events, in one transaction (the caller's
    when ``transaction`` is False)."""
    where = f"workspace_id = {lit(workspace_id)}" if workspace_id is not None else "1 = 1"
    if transaction:
        con.begin()
    try:
        for table in TABLES:
            con.execute(f"DELETE FROM {table} WHERE {where}")
        fold(con, f"(SELECT * FROM events WHERE {where})")
        if transaction:
            con.commit()
    except BaseException:
        if transaction:
            con.rollback()
        raise
