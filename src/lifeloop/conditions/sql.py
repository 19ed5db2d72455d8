"""The batch back end: compile a condition to one ``SELECT profile_id`` over a whole workspace.

Each clause becomes a correlated subquery on the outer profile (every one filtered by workspace and
served by a primary key or index that starts ``(workspace_id, profile_id, …)``). SQL's three-valued
logic is kept out: every comparison is wrapped as ``coalesce(…, false)`` so a missing value makes it
false and ``not`` of it true, exactly as in the evaluator. Values read from JSON are typed with
``json_type`` (SQLite) / ``jsonb_typeof`` (PostgreSQL) inside ``CASE`` before they are compared.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    Integer,
    Select,
    String,
    and_,
    case,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
)

from lifeloop.audience.models import profile_tags, segment_members, segments
from lifeloop.conditions.ast import (
    FLIPPED,
    SEEN_TIMES,
    ActiveDays,
    ActiveWeeks,
    And,
    Compare,
    Condition,
    Contains,
    Count,
    DaysSince,
    EventTime,
    Exists,
    Fact,
    HasTag,
    In,
    InSegment,
    InStage,
    Interaction,
    Literal,
    Not,
    Now,
    Or,
    PropertyRef,
    Seen,
    Selector,
    Sum,
    TraitRef,
    Value,
    static_type,
)
from lifeloop.conditions.evaluator import compare, iso_week, since
from lifeloop.conditions.facts import provider
from lifeloop.conditions.sql_json import Json, JsonSql, const, truth
from lifeloop.events.models import events
from lifeloop.lifecycle.models import profile_stages
from lifeloop.profiles.computed import (
    DAY,
    bucket_names,
    computed_event_days,
    computed_event_sums,
    computed_event_times,
    day_start,
    epoch_day,
    raw_names,
)
from lifeloop.profiles.models import profiles
from lifeloop.store.schema import UTCDateTime


def matching_profiles(
    conn: Connection, workspace_id: int, condition: Condition, *, now: datetime
) -> list[int]:
    """Ids of the workspace's live (not merged) profiles that satisfy ``condition`` at ``now``."""
    query = compile_condition(
        condition, workspace_id=workspace_id, now=now, dialect=conn.dialect.name, conn=conn
    )
    return list(conn.execute(query).scalars())


@dataclass
class CompiledConditions:
    """Conditions compiled together: ``tests[i]`` is condition i, over ``source`` restricted by ``live``."""

    tests: list[ColumnElement[bool]]
    source: FromClause
    live: list[ColumnElement[bool]]


def compile_conditions(
    conditions: Sequence[Condition],
    *,
    workspace_id: int,
    now: datetime,
    dialect: str,
    id_range: tuple[int, int] | None = None,
    conn: Connection | None = None,
) -> CompiledConditions:
    """Compile ``conditions`` for every live profile of the workspace (with an id in ``id_range``, inclusive).

    Each distinct computed value (``first_seen``, ``count("X", within=…)``…) is one correlated subquery.
    One that the conditions read more than once is evaluated once per profile in a materialised CTE and
    read as a column (the ``mall`` stages name ``first_seen`` four times, and ``days_since`` reads its time
    twice); one read once stays inline, where it costs less than the CTE's join.

    ``conn`` is needed by the engagement functions (``points()``…), whose SQL bakes in what the
    workspace's settings say (``conditions.facts``); the query must run on the same workspace's data.
    """
    compiler = _Compiler(workspace_id, now, dialect, conn)
    live = [profiles.c.workspace_id == workspace_id, profiles.c.merged_into.is_(None)]
    if id_range is not None:
        live += [profiles.c.id >= id_range[0], profiles.c.id <= id_range[1]]
    for condition in conditions:  # first pass: which values the conditions read
        compiler.condition(condition, None)
    source: FromClause = profiles
    repeated = [key for key, count in compiler.uses.items() if count > 1]
    if repeated:  # a value read once costs less inline than through the CTE's join
        values = [compiler.shared[key][1].label(compiler.shared[key][0]) for key in repeated]
        shared = (
            select(profiles.c.id.label("profile_id"), *values)
            .where(*live)
            .cte("shared_values")
            .prefix_with("MATERIALIZED")  # not inlined: each subquery once per profile
        )
        compiler.columns = {key: shared.c[compiler.shared[key][0]] for key in repeated}
        source = profiles.join(shared, shared.c.profile_id == profiles.c.id)
    compiler.collecting = False
    tests = [compiler.condition(condition, None) for condition in conditions]
    return CompiledConditions(tests, source, live)


def compile_condition(
    condition: Condition,
    *,
    workspace_id: int,
    now: datetime,
    dialect: str,
    conn: Connection | None = None,
) -> Select[Any]:
    """``SELECT profiles.id`` of every live profile of the workspace satisfying ``condition``."""
    compiled = compile_conditions([condition], workspace_id=workspace_id, now=now, dialect=dialect, conn=conn)
    return (
        select(profiles.c.id)
        .select_from(compiled.source)
        .where(*compiled.live, compiled.tests[0])
        .order_by(profiles.c.id)
    )


class _Compiler:
    def __init__(self, workspace_id: int, now: datetime, dialect: str, conn: Connection | None = None):
        self.ws, self.now, self.pg = workspace_id, now, dialect == "postgresql"
        self.conn = conn
        self.json = JsonSql(workspace_id, postgresql=self.pg)
        self.shared: dict[str, tuple[str, Any]] = {}  # repr(value node) → (column name, subquery)
        self.uses: Counter[str] = Counter()  # how often the conditions read each value
        self.collecting = True  # first pass: count the values; second: compile with the CTE's columns
        self.columns: dict[str, Any] = {}  # the repeated values' CTE columns

    def shared_value(self, node: Value, build: Callable[[], Any], *, reads: int = 1) -> Any:
        """A per-profile value: its CTE column when the conditions read it more than once, else inline."""
        key = repr(node)
        if not self.collecting:
            return self.columns[key] if key in self.columns else build()
        self.uses[key] += reads
        if key not in self.shared:
            self.shared[key] = (f"v{len(self.shared)}", build())
        return self.shared[key][1]

    def owned(self, profile_id: Any) -> list[ColumnElement[Any]]:
        """Correlate a subquery with the outer profile; the (redundant) workspace test is for the
        scoping guard, which cannot tell a correlated reference from a read of ``profiles``."""
        return [profile_id == profiles.c.id, profiles.c.workspace_id == self.ws]

    def time(self, moment: datetime) -> ColumnElement[Any]:
        return literal(moment, UTCDateTime())

    # --- JSON -------------------------------------------------------------------------------------
    def condition(self, node: Condition, event: Any) -> ColumnElement[Any]:
        match node:
            case And(items):
                return and_(*(self.condition(i, event) for i in items))
            case Or(items):
                return or_(*(self.condition(i, event) for i in items))
            case Not(item):
                return not_(self.condition(item, event))
            case Literal(value):
                return const(True) if value else const(False)
            case Compare(op, left, right):
                return self.compare(op, left, right, event)
            case In(value, options):
                return or_(const(False), *(self.compare("==", value, o, event) for o in options))
            case Contains(value, item):
                return self.json.contains(self.ref(value, event), item.value)
            case Exists(ref):
                kind = self.json.kind(self.ref(ref, event))
                return truth(kind != "null")
            case HasTag(tag):
                t = profile_tags.c
                return exists().where(
                    t.workspace_id == self.ws,
                    *self.owned(t.profile_id),
                    t.tag == tag,
                    t.expires_at.is_(None) | (t.expires_at > self.time(self.now)),
                )
            case InStage(model, stage):
                s = profile_stages.c
                model_test = [] if model is None else [s.model == model]
                return exists().where(
                    s.workspace_id == self.ws, *self.owned(s.profile_id), s.stage == stage, *model_test
                )
            case InSegment(key):
                m, g = segment_members.c, segments.c
                return exists().where(
                    m.workspace_id == self.ws,
                    *self.owned(m.profile_id),
                    g.workspace_id == self.ws,
                    g.id == m.segment_id,
                    g.key == key,
                )
        raise TypeError(f"not a condition: {node!r}")

    def ref(self, node: TraitRef | PropertyRef, event: Any) -> Json:
        if isinstance(node, TraitRef):
            return Json(profiles.c.traits, node.path)
        return Json(event.c.properties, node.path)

    def compare(self, op: str, left: Value, right: Value, event: Any) -> ColumnElement[Any]:
        if isinstance(right, DaysSince):
            left, right, op = right, left, FLIPPED[op]
        if isinstance(left, DaysSince):
            assert isinstance(right, Literal)
            return self.days_since(op, left, right.value)  # type: ignore[arg-type]
        if isinstance(left, Literal) and isinstance(right, Literal):
            return const(True) if compare(op, left.value, right.value) else const(False)
        lt, rt = static_type(left), static_type(right)
        kind = rt if lt == "dynamic" else lt
        a = self.value(left, kind, event)
        b = self.value(right, kind, event)
        if kind == "bool":
            return truth(a == b if op == "==" else a != b)
        return truth(_apply(op, a, b))

    def value(self, node: Value, kind: str, event: Any) -> Any:
        match node:
            case Literal(value):
                if kind == "string" and self.pg:
                    return literal(value, String()).collate("C")
                return literal(value)
            case TraitRef() | PropertyRef():
                return self.json.as_kind(self.ref(node, event), kind)
            case Now():
                return self.time(self.now)
            case Seen() | EventTime() | Count() | Sum() | ActiveDays() | ActiveWeeks():
                return self.shared_value(node, lambda: self.per_profile(node))
            case Fact():
                fact = self.shared_value(node, lambda: self.fact(node))
                return fact.collate("C") if kind == "string" and self.pg else fact
        raise TypeError(f"cannot compile {node!r} here")

    def fact(self, node: Fact) -> Any:
        """An engagement fact's correlated subquery, from its provider (``conditions.facts``)."""
        if self.conn is None:
            raise TypeError(f"{node.name}() compiles only with a connection: compile_conditions(conn=…)")
        return provider(node).sql(self.conn, self.ws, node, now=self.now, owned=self.owned)

    def per_profile(self, node: Value) -> Any:
        """The correlated subquery of a value computed from the profile's events."""
        match node:
            case Seen(which):
                edge, selector = SEEN_TIMES[which]
                return self.event_time(edge, selector)
            case EventTime(which, selector):
                return self.event_time(which, selector)
            case Count(selector, within, where):
                return self.aggregate(selector, None, since(self.now, within), where)
            case Sum(selector, prop, within, where):
                return self.aggregate(selector, prop, since(self.now, within), where)
            case ActiveDays(within):
                return self.active_days(since(self.now, within))
            case ActiveWeeks(weeks):
                return self.active_weeks(weeks)
        raise TypeError(f"cannot compile {node!r} here")

    # --- computed values --------------------------------------------------------------------------
    def _raw(self, selector: Selector, since_: datetime | None, until: datetime | None) -> Any:
        e = events.alias("e")
        conditions = [
            e.c.workspace_id == self.ws,
            *self.owned(e.c.profile_id),
            raw_names(e, selector),
        ]
        if since_ is not None:
            conditions.append(e.c.timestamp > self.time(since_))
        if until is not None:
            conditions.append(e.c.timestamp < self.time(until))
        return e, conditions

    def _raw_amount(self, e: Any, prop: str | None) -> Any:
        if prop is None:
            return func.count()
        return func.coalesce(func.sum(self.json.as_kind(Json(e.c.properties, (prop,)), "number")), 0.0)

    def event_time(self, edge: str, selector: Selector | None) -> Any:
        t = computed_event_times.c
        column = func.min(t.first_at) if edge == "first" else func.max(t.last_at)
        return (
            select(column)
            .where(
                t.workspace_id == self.ws,
                *self.owned(t.profile_id),
                *bucket_names(t.event, selector),
            )
            .scalar_subquery()
        )

    def aggregate(self, selector: Selector, prop: str | None, since_: datetime | None, where: Any) -> Any:
        """count() when ``prop`` is None, else sum(): buckets for whole days, raw events for the rest."""
        if where is not None:
            e, conditions = self._raw(selector, since_, None)
            conditions.append(self.condition(where, e))
            return select(self._raw_amount(e, prop)).where(*conditions).scalar_subquery()
        if prop is None:
            b, amount = computed_event_days.c, computed_event_days.c.event_count
            zero: Any = 0
        else:
            b, amount, zero = computed_event_sums.c, computed_event_sums.c.total, 0.0
        conditions = [
            b.workspace_id == self.ws,
            *self.owned(b.profile_id),
            *bucket_names(b.event, selector),
        ]
        if prop is not None:
            conditions.append(b.property == prop)
        first_day = None if since_ is None else epoch_day(since_)
        if first_day is not None:
            conditions.append(b.day > first_day)
        buckets = func.coalesce(select(func.sum(amount)).where(*conditions).scalar_subquery(), zero)
        if first_day is None:
            return buckets
        e, raw_conditions = self._raw(selector, since_, day_start(first_day + 1))
        return buckets + select(self._raw_amount(e, prop)).where(*raw_conditions).scalar_subquery()

    def active_days(self, since_: datetime | None) -> Any:
        b = computed_event_days.c
        conditions = [
            b.workspace_id == self.ws,
            *self.owned(b.profile_id),
            *bucket_names(b.event, Interaction()),
        ]
        first_day = None if since_ is None else epoch_day(since_)
        if first_day is not None:
            conditions.append(b.day > first_day)
        days = select(func.count(b.day.distinct())).where(*conditions).scalar_subquery()
        if first_day is None:
            return days
        _e, raw_conditions = self._raw(Interaction(), since_, day_start(first_day + 1))
        edge = case((exists().where(*raw_conditions), 1), else_=0)
        return days + edge

    def active_weeks(self, weeks: int) -> Any:
        b = computed_event_days.c
        this_week = iso_week(epoch_day(self.now))
        # Week w holds days 7w − 3 … 7w + 3 (day 0, 1970-01-01, was a Thursday).
        first, last = (this_week - weeks + 1) * 7 - 3, this_week * 7 + 3
        week = (b.day + 3) // literal(7, Integer())
        return (
            select(func.count(week.distinct()))
            .where(
                b.workspace_id == self.ws,
                *self.owned(b.profile_id),
                b.day >= first,
                b.day <= last,
                *bucket_names(b.event, Interaction()),
            )
            .scalar_subquery()
        )

    def days_since(self, op: str, node: DaysSince, k: float) -> ColumnElement[Any]:
        """floor((now − t) / 24 h) op k, as a range on t: exact, and served by plain time comparisons."""
        if isinstance(node.time, Now):
            return const(True) if compare(op, 0, k) else const(False)
        time_value = node.time
        # read twice (present, then compared): through the CTE when shared
        t = self.shared_value(time_value, lambda: self.per_profile(time_value), reads=2)
        low, high = (
            math.ceil(k),
            math.floor(k) + 1,
        )  # floor(v) >= k ⟺ v >= ceil(k); floor(v) > k ⟺ v >= floor(k)+1

        def at_least(days: int) -> ColumnElement[Any]:  # (now − t) >= days × 24 h ⟺ t <= now − days
            bound = self._shift(days)
            if isinstance(bound, str):  # beyond representable times: nothing is that old / all are
                return const(False) if bound == "-" else const(True)
            return t <= self.time(bound)

        match op:
            case ">=":
                test = at_least(low)
            case ">":
                test = at_least(high)
            case "<=":
                test = not_(at_least(high))
            case "<":
                test = not_(at_least(low))
            case "==":
                test = and_(at_least(low), not_(at_least(low + 1))) if k == low else const(False)
            case _:  # "!=": present and not equal
                test = not_(and_(at_least(low), not_(at_least(low + 1)))) if k == low else const(True)
        return truth(and_(t.is_not(None), test))

    def _shift(self, days: int) -> datetime | str:
        """now − days × 24 h, or "+"/"-" when that falls after/before every representable time."""
        try:
            return self.now - days * DAY
        except OverflowError:
            return "+" if days < 0 else "-"


def _apply(op: str, a: Any, b: Any) -> ColumnElement[Any]:
    match op:
        case "==":
            return a == b
        case "!=":
            return a != b
        case "<":
            return a < b
        case "<=":
            return a <= b
        case ">":
            return a > b
    return a >= b
