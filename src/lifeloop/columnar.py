"""A workspace in DuckDB for batch evaluation: the analytics copy of its events, plus what is not copied.

The analytics store (``lifeloop.analytics``) keeps a columnar copy of every resolved event, synced
incrementally. A ``Workspace`` opens it and adds, as temporary relations of that one connection, what a
batch evaluation needs beyond the copy, read from the operational database at that moment:

- ``ev``: the copy's events and the *tail* — resolved events after the copy's cursor (a sync not yet
  run, events still settling on PostgreSQL, the stage events a recompute has just written) — each on the
  profile that survives merges (``profiles.merged_into``, chains followed);
- ``live``: the profiles that were not merged away;
- ``st_<source>``: the stored state (stages, recheck times, tags, memberships, merges;
  ``lifeloop.store.state_log.SOURCES``) as the reading connection sees it. On SQLite they start from the
  store's state copy (``lifeloop.analytics.state_copy``) and follow the state change log: each read
  re-reads only the profiles logged since the last one, including the reading transaction's own writes.
  Elsewhere each read reads the state tables;
- ``profile_traits``, ``profile_tags``, ``profile_stages``, ``profile_segments``: only when a condition
  reads them (``ColumnarPlan.reads``), and only the tags, stages and segments it names;
- ``profile_facts``: the engagement facts (``points()``…) the plan reads, and when they could next
  change, per live profile, from the operational database at the workspace's ``now``.

So an evaluation sees exactly what the SQL back end would see in the operational database, and costs a
scan of columns instead of a query per profile. ``conditions.columnar`` compiles the conditions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import Connection, Engine, Select, event, func, select

from lifeloop.analytics import rollups
from lifeloop.analytics.state_copy import STREAM as STATE_STREAM
from lifeloop.analytics.state_copy import (
    Narrowing,
    arrow_rows,
    changed_since,
    insert_arrow,
    log_position,
    logged,
    read_source,
    replace_profiles,
    source_types,
)
from lifeloop.analytics.store import open_store
from lifeloop.analytics.streams import read_stream
from lifeloop.audience.definitions import uses
from lifeloop.audience.models import segments
from lifeloop.conditions.ast import Condition, HasTag, InSegment, InStage, walk
from lifeloop.conditions.columnar import ColumnarPlan, event_name_sql, interaction_sql, text
from lifeloop.conditions.facts import provider
from lifeloop.events.models import events
from lifeloop.profiles.models import profiles
from lifeloop.store.engine import connect
from lifeloop.store.rows import fetch_tuples, json_text, time_value
from lifeloop.store.state_log import SOURCE, SOURCES, Source

STATEFUL = (HasTag, InStage, InSegment)  # what conditions read of the state a recompute writes


class Workspace:
    """One workspace's events and state in a DuckDB connection (use as a context manager)."""

    def __init__(self, engine: Engine, workspace_id: int, path: str | Path, *, now: datetime):
        self.engine, self.workspace_id, self.path, self.now = engine, workspace_id, path, now
        self.con: duckdb.DuckDBPyConnection | None = None
        # One plan for every condition evaluated here: values shared between conditions (and between
        # stages, tags and segments) are computed once, in one scan of the events.
        self.plan = ColumnarPlan(now)
        self._log_end: int | None = None  # the newest event id ``ev`` holds
        self._values: tuple[str, ...] | None = None  # the aggregates ``agg`` holds
        self._traits_at: int | None = None  # the log position ``profile_traits`` was read at
        self._state_seen: int | None = None  # the state log id ``st_*`` are current with (SQLite)
        self._together: dict[Condition, str] = {}  # conditions evaluated by ``match_together``: their column
        self._together_at: int | None = None  # the ``_log_end`` they were evaluated at
        self._facts: tuple[Any, ...] | None = None  # the facts and moments ``profile_facts`` holds

    def __enter__(self) -> Workspace:
        self.con = open_store(self.path)
        # One snapshot of the copy for the whole evaluation: a sync committing meanwhile (another
        # connection of this process) must not add events, activity or state past the cursor read here.
        self.con.begin()
        # A rolled-back write transaction may have been read from (its own writes), and its log ids come
        # back: start again from the copy.
        event.listen(self.engine, "rollback", self._forget_state)
        return self

    def _forget_state(self, conn: Connection) -> None:
        if not conn.get_execution_options().get("read_only", False):  # a reader has no writes to forget
            self._state_seen = None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        event.remove(self.engine, "rollback", self._forget_state)
        if self.con is not None:
            self.con.rollback()  # nothing of the copy was written: the temporary tables go with it
            self.con.close()
            self.con = None

    @property
    def db(self) -> duckdb.DuckDBPyConnection:
        assert self.con is not None, "use Workspace as a context manager"
        return self.con

    # --- inputs -----------------------------------------------------------------------------------
    @contextmanager
    def reading(self, conn: Connection | None) -> Iterator[Connection]:
        """``conn`` when given (a transaction whose own writes must be seen), else a fresh connection."""
        if conn is not None:
            yield conn
            return
        with connect(self.engine) as fresh:
            yield fresh

    def load(self, name: str, rows: Sequence[Sequence[Any]], types: dict[str, str]) -> None:
        """Replace the temporary table ``name`` by ``rows`` (tuples in ``types`` order), cast to ``types``.

        Rows go to DuckDB as Arrow columns: aware times become naive UTC, text times are cast by DuckDB."""
        self.db.register("_rows", arrow_rows(rows, types))
        selected = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in types.items())
        self.db.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {selected} FROM _rows")
        self.db.unregister("_rows")

    def load_query(
        self, name: str, query: Select[Any], types: dict[str, str], conn: Connection | None = None
    ) -> None:
        """Replace the temporary table ``name`` by the rows of ``query`` on the operational database."""
        with self.reading(conn) as reader:
            rows = fetch_tuples(reader, query)  # times: text on SQLite (cast by DuckDB), aware on PostgreSQL
        self.load(name, rows, types)

    def refresh(self, conn: Connection | None = None) -> None:
        """(Re)build ``live`` and ``ev`` when the event log has grown since they were read."""
        with self.reading(conn) as reader:
            found = reader.execute(
                select(func.max(events.c.id)).where(events.c.workspace_id == self.workspace_id)
            ).scalar()
            end = int(found or 0)
            if end != self._log_end:
                self._read_log(reader, end)

    def _read_log(self, conn: Connection, end: int) -> None:
        ws = self.workspace_id
        cursor = read_stream(self.db, ws, "events")[0] or 0
        e = events.c
        tail = select(
            e.profile_id, e.type, e.event, time_value(conn, e.timestamp), json_text(conn, e.properties)
        ).where(e.workspace_id == ws, e.id > cursor, e.profile_id.is_not(None))
        types = {
            "pid": "BIGINT",
            "type": "VARCHAR",
            "event": "VARCHAR",
            "ts": "TIMESTAMP",
            "props": "VARCHAR",
        }
        self.load_query("ev_tail", tail, types, conn)
        self.state(conn, "profiles")
        self.db.execute(
            "CREATE OR REPLACE TEMP TABLE live AS "
            "SELECT profile_id AS pid FROM st_profiles WHERE merged_into IS NULL"
        )
        merged: dict[int, int] = dict(
            self.db.execute(
                "SELECT profile_id, merged_into FROM st_profiles WHERE merged_into IS NOT NULL"
            ).fetchall()
        )
        self.load("survivors", _survivors(merged), {"pid": "BIGINT", "canonical": "BIGINT"})
        # The copy's ``event`` is the analytics name (the track name; Page/Screen Viewed; else the type),
        # the tail's the raw one: ``name_is`` reads it only for track calls, where both hold the track
        # name. The copy's ``interactive`` is the conditions' interaction (the same own events; names are
        # at most 255 characters): read, not recomputed per row.
        name = event_name_sql("type", "event")
        canonical = "coalesce(s.canonical, e.pid)" if merged else "e.pid"
        join = "LEFT JOIN survivors s ON s.pid = e.pid" if merged else ""
        columns = f"{canonical} AS pid, type, event, interaction, ts, props"
        self.db.execute(
            f"""
            CREATE OR REPLACE TEMP VIEW ev_new AS SELECT {columns} FROM (
                SELECT pid, type, event, {interaction_sql("type", name)} AS interaction, ts, props
                FROM ev_tail
            ) e {join}
            """
        )
        self.db.execute(
            f"""
            CREATE OR REPLACE TEMP VIEW ev AS
            SELECT {columns} FROM (
                SELECT profile_id AS pid, type, event, interactive AS interaction, ts, properties AS props
                FROM events WHERE workspace_id = {ws} AND id <= {cursor}
            ) e {join}
            UNION ALL SELECT * FROM ev_new
            """
        )
        self._read_activity()
        self._log_end, self._values = end, None

    def _read_activity(self) -> None:
        """``act``: per profile, the values ``conditions.columnar.ACTIVITY_COLUMNS`` names, from the
        analytics store's ``profile_activity`` when it holds exactly the copied events (else grouped from
        ``ev``). Profiles that merges or the tail touch are combined from their rows; the others' rows are
        read as kept."""
        ws = self.workspace_id
        folded = rollups.read_rollups(self.db, ws)
        aggregates, kept = rollups.activity_of_events("interaction"), rollups.ACTIVITY_COLUMNS
        if folded is None:
            self.db.execute(
                f"CREATE OR REPLACE TEMP VIEW act AS SELECT pid, {aggregates} FROM ev GROUP BY pid"
            )
            return
        self.db.execute(
            """
            CREATE OR REPLACE TEMP TABLE act_moved AS
            SELECT pid FROM survivors UNION SELECT canonical FROM survivors UNION SELECT pid FROM ev_new
            """
        )
        self.db.execute(
            f"""
            CREATE OR REPLACE TEMP VIEW act AS
            SELECT profile_id AS pid, {kept} FROM profile_activity
            WHERE workspace_id = {ws} AND profile_id NOT IN (SELECT pid FROM act_moved)
            UNION ALL
            SELECT pid, {rollups.ACTIVITY_COMBINED} FROM (
                SELECT coalesce(s.canonical, a.profile_id) AS pid, {kept}
                FROM profile_activity a LEFT JOIN survivors s ON s.pid = a.profile_id
                WHERE a.workspace_id = {ws} AND a.profile_id IN (SELECT pid FROM act_moved)
                UNION ALL
                SELECT pid, {aggregates} FROM ev_new GROUP BY pid
            ) GROUP BY pid
            """
        )

    def load_state(
        self, plan: ColumnarPlan, conditions: Iterable[Any], conn: Connection | None = None
    ) -> None:
        """The traits, tags, stages and segment memberships the compiled conditions read, as they are now.

        Traits are read once per state of the event log (only events change them; ``evaluate`` joins them
        whenever a condition of ``plan`` reads one); tags, stages and memberships each time, since the
        recompute itself writes them."""
        nodes = [n for c in conditions for n in walk(c)]
        ws = self.workspace_id
        with self.reading(conn) as conn:
            self.refresh(conn)
            if "traits" in plan.reads and self._traits_at != self._log_end:
                self._traits_at = self._log_end
                p = profiles.c
                query = select(p.id, json_text(conn, p.traits)).where(
                    p.workspace_id == ws, p.merged_into.is_(None)
                )
                self.load_query("profile_traits", query, {"pid": "BIGINT", "doc": "VARCHAR"}, conn)
            tags = sorted({n.tag for n in nodes if isinstance(n, HasTag)})
            stages = sorted({n.stage for n in nodes if isinstance(n, InStage)})
            keys = sorted({n.key for n in nodes if isinstance(n, InSegment)})
            g = segments.c
            query = select(g.id, g.key).where(g.workspace_id == ws, g.key.in_(keys))
            found = fetch_tuples(conn, query) if keys else []
            wanted: dict[str, Narrowing] = {
                "tags": ("tag", tags),
                "stages": ("stage", stages),
                "members": ("segment_id", [i for i, _ in found]),
            }
            self.state(conn, *(name for name, (_, values) in wanted.items() if values), narrow=wanted)
            if tags:
                self.db.execute(
                    "CREATE OR REPLACE TEMP VIEW profile_tags AS SELECT profile_id AS pid, tag, expires_at "
                    f"FROM st_tags WHERE tag IN ({_texts(tags)})"
                )
            if stages:
                self.db.execute(
                    "CREATE OR REPLACE TEMP VIEW profile_stages AS SELECT profile_id AS pid, model, stage "
                    f"FROM st_stages WHERE stage IN ({_texts(stages)})"
                )
            if keys:
                self.load("segment_keys", found, {"id": "BIGINT", "key": "VARCHAR"})
                self.db.execute(
                    "CREATE OR REPLACE TEMP VIEW profile_segments AS SELECT m.profile_id AS pid, k.key "
                    "FROM st_members m JOIN segment_keys k ON k.id = m.segment_id"
                )

    def load_facts(self, plan: ColumnarPlan, conn: Connection | None = None) -> None:
        """``profile_facts``: each live profile's engagement facts the plan reads (``f<n>``) and their next
        change by time alone (``m<n>``), read once per set of facts, as at ``now`` (like the events)."""
        wanted = (tuple(plan.facts.items()), tuple(plan.fact_moments.items()))
        if not plan.facts or self._facts == wanted:
            return
        ws = self.workspace_id

        def owned(column: Any) -> list[Any]:
            return [column == profiles.c.id, profiles.c.workspace_id == ws]

        with self.reading(conn) as reader:
            values = [
                provider(fact).sql(reader, ws, fact, now=self.now, owned=owned).label(column)
                for fact, column in plan.facts.items()
            ]
            live = select(profiles.c.id, *values).where(_live_profiles(ws))
            types = {"pid": "BIGINT"}
            types.update({c: "VARCHAR" if f.name == "tier" else "DOUBLE" for f, c in plan.facts.items()})
            self.load_query("fact_values", live, types, reader)
            joins, columns = [], ["v.*"]
            for fact, column in plan.fact_moments.items():
                moments = provider(fact).change_moments(reader, ws, fact, now=self.now, low=0, high=2**62)
                if moments is None:
                    columns.append(f"NULL::TIMESTAMP AS {column}")
                    continue
                self.load_query(f"fact_{column}", moments, {"pid": "BIGINT", "moment": "TIMESTAMP"}, reader)
                columns.append(f"{column}.moment AS {column}")
                joins.append(
                    f"LEFT JOIN (SELECT pid, min(moment) AS moment FROM fact_{column} GROUP BY pid) {column} "
                    f"ON {column}.pid = v.pid"
                )
        self.db.execute(
            f"CREATE OR REPLACE TEMP TABLE profile_facts AS SELECT {', '.join(columns)} "
            f"FROM fact_values v {' '.join(joins)}"
        )
        self._facts = wanted

    # --- stored state -----------------------------------------------------------------------------
    def state(self, conn: Connection | None, *names: str, narrow: dict[str, Narrowing] | None = None) -> None:
        """Bring the temporary tables ``st_<name>`` up to the stored state as ``conn`` sees it (all sources
        on SQLite, where that costs only the profiles logged since the last call). Without the log,
        each named source is read again, and only the rows ``narrow`` lets through (per source, a
        column and the values the caller will look at)."""
        with self.reading(conn) as reader:
            if not logged(reader):
                for name in names:
                    self._read_source(reader, SOURCE[name], narrow=(narrow or {}).get(name))
                return
            end, pruned = log_position(reader, self.workspace_id)
            seen = self._state_seen
            if seen is None or seen < pruned or seen > end:
                seen = self._start_state(reader, end, pruned)
            if end > seen:
                changed = changed_since(reader, self.workspace_id, seen, end)
                for source in SOURCES:
                    if changed[source.name]:
                        self._read_source(reader, source, changed[source.name])
            self._state_seen = end

    def _start_state(self, conn: Connection, end: int, pruned: int) -> int:
        """``st_*`` from the store's state copy when it is still on the log, else read in full; returns
        the log id they are current with."""
        ws = self.workspace_id
        position, _ = read_stream(self.db, ws, STATE_STREAM)
        if position is None or not pruned <= position <= end:
            for source in SOURCES:
                self._read_source(conn, source)
            return end
        for source in SOURCES:
            columns = ", ".join(source_types(source))
            copied = f"(SELECT {columns} FROM state_{source.name} WHERE workspace_id = {int(ws)})"
            self._state_over(source, copied)
        return position

    def _state_over(self, source: Source, base: str) -> None:
        """``st_<source>`` as the view of ``base`` (a relation of ``source_types`` rows) with the rows of the
        profiles read again since (``stx_<source>``: their ids) replaced by those rows (``std_<source>``):
        the copy is read in place, not copied, and each later read adds only what changed."""
        types = source_types(source)
        columns, name = ", ".join(types), source.name
        self.db.execute(f"CREATE OR REPLACE TEMP TABLE stx_{name} (profile_id BIGINT)")
        declared = ", ".join(f"{c} {t}" for c, t in types.items())
        self.db.execute(f"CREATE OR REPLACE TEMP TABLE std_{name} ({declared})")
        self.db.execute(
            f"""
            CREATE OR REPLACE TEMP VIEW st_{name} AS
            SELECT {columns} FROM {base} b WHERE b.profile_id NOT IN (SELECT profile_id FROM stx_{name})
            UNION ALL SELECT {columns} FROM std_{name}
            """
        )

    def _read_source(
        self,
        conn: Connection,
        source: Source,
        profile_ids: set[int] | None = None,
        narrow: Narrowing | None = None,
    ) -> None:
        """``st_<source>``: every stored row (that ``narrow`` lets through), or the rows of ``profile_ids``
        replaced by the stored ones."""
        types = source_types(source)
        rows = arrow_rows(read_source(conn, source, self.workspace_id, profile_ids, narrow), types)
        if profile_ids is None:
            declared = ", ".join(f"{c} {t}" for c, t in types.items())
            self.db.execute(f"CREATE OR REPLACE TEMP TABLE stb_{source.name} ({declared})")
            insert_arrow(self.db, f"stb_{source.name}", rows, types)
            self._state_over(source, f"stb_{source.name}")
            return
        replace_profiles(self.db, f"std_{source.name}", profile_ids, rows, types)
        replaced = pa.table({"profile_id": pa.array(sorted(profile_ids), pa.int64())})
        insert_arrow(self.db, f"stx_{source.name}", replaced, {"profile_id": "BIGINT"})

    # --- evaluation -------------------------------------------------------------------------------
    def values(self, plan: ColumnarPlan, conn: Connection | None = None) -> None:
        """Materialise ``agg`` (every value ``plan`` reads, per profile) unless it already holds them."""
        self.refresh(conn)
        wanted = tuple(plan.aggregates)
        if self._values == wanted:
            return
        self.db.execute(f"CREATE OR REPLACE TEMP TABLE agg AS {plan.values_query()}")
        self._values = wanted

    def evaluate(
        self, name: str, plan: ColumnarPlan, columns: dict[str, str], conn: Connection | None = None
    ) -> None:
        """Create the temporary table ``name``: every live profile's ``pid`` and ``columns`` (SQL over
        ``agg``, ``traits`` and the state relations, as ``plan`` compiled them)."""
        self.values(plan, conn)
        self.load_facts(plan, conn)
        selected = "".join(f", {expression} AS {column}" for column, expression in columns.items())
        traits = "LEFT JOIN profile_traits traits ON traits.pid = agg.pid" if "traits" in plan.reads else ""
        if plan.facts:
            traits += " LEFT JOIN profile_facts facts ON facts.pid = agg.pid"
        # ``agg`` has a row per live profile (``values_query``), so it is the list of profiles too.
        self.db.execute(
            f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT agg.pid AS pid{selected} FROM agg {traits}"
        )

    def matching(
        self, condition: Condition, *, plan: ColumnarPlan | None = None, conn: Connection | None = None
    ) -> list[int]:
        """Ids of the live profiles satisfying ``condition``, ascending (``conditions.matching_profiles``).
        Conditions compiled into one shared ``plan`` share its values, computed once."""
        self.match(condition, plan=plan, conn=conn)
        return self.ids("SELECT pid FROM matched WHERE hit ORDER BY pid")

    def match_together(self, conditions: Iterable[Condition], conn: Connection | None = None) -> None:
        """Evaluate those of ``conditions`` that read no tag, stage or segment in one pass over ``agg``
        (``matched_all``, a column each): ``match`` then reads their column for as long as the event log
        is as it was. The others read state that the caller may write in between, so ``match`` evaluates
        them when asked."""
        free = [c for c in dict.fromkeys(conditions) if not uses(c, STATEFUL)]
        self._together = {}
        if not free:
            return
        plan = self.plan
        self.load_state(plan, free, conn)
        columns = {f"h{n}": plan.test(c) for n, c in enumerate(free)}
        self.evaluate("matched_all", plan, columns, conn)
        self._together = {c: column for c, column in zip(free, columns, strict=True)}
        self._together_at = self._log_end

    def match(
        self, condition: Condition, *, plan: ColumnarPlan | None = None, conn: Connection | None = None
    ) -> None:
        """The temporary view ``matched(pid, hit)``: every live profile, and whether it satisfies
        ``condition``."""
        plan = plan or self.plan
        test = plan.test(condition)
        column = self._together.get(condition) if plan is self.plan else None
        if column is not None:
            self.refresh(conn)
            if self._together_at == self._log_end:
                hits = f"SELECT pid, {column} AS hit FROM matched_all"
                self.db.execute(f"CREATE OR REPLACE TEMP VIEW matched AS {hits}")
                return
        self.load_state(plan, [condition], conn)
        self.evaluate("matched_one", plan, {"hit": test}, conn)
        self.db.execute("CREATE OR REPLACE TEMP VIEW matched AS SELECT pid, hit FROM matched_one")

    def ids(self, sql: str, parameters: Sequence[Any] = ()) -> list[int]:
        """The first column of ``sql`` as Python ints."""
        column = self.db.execute(sql, list(parameters)).fetchnumpy()
        return [int(v) for v in next(iter(column.values()))] if column else []


def _live_profiles(workspace_id: int) -> Any:
    return (profiles.c.workspace_id == workspace_id) & profiles.c.merged_into.is_(None)


def _texts(values: Iterable[str]) -> str:
    return ", ".join(text(v) for v in values)


def _survivors(merged: dict[int, int]) -> list[tuple[int, int]]:
    """Each merged-away profile and the live one it ended in (merges of merge winners chain)."""
    out = []
    for loser in merged:
        survivor, seen = merged[loser], {loser}
        while survivor in merged and survivor not in seen:
            seen.add(survivor)
            survivor = merged[survivor]
        out.append((loser, survivor))
    return out
