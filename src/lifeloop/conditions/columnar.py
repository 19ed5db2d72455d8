"""The columnar back end: compile conditions to DuckDB SQL over a flat event relation, for every profile.

Where ``conditions.sql`` runs one correlated subquery per value and profile on the operational database,
this compiler turns every value the conditions read (``first_seen``, ``count("X", within=…)``…) into one
``FILTER`` aggregate of a single ``GROUP BY pid`` over the events, so a million profiles cost one columnar
scan of their events. The tests are then plain expressions over that row of values, with the same
semantics as the other back ends (docs/conditions.md): a missing value makes a comparison false and ``not``
of it true (every test is ``coalesce(…, false)``), values read from JSON are typed by ``json_type`` before
they are compared, ``within`` keeps events later than ``now − window``, and ``days_since`` counts whole
24-hour periods.

The relations it reads (``lifeloop.columnar`` provides them):

- ``ev``: one row per event of the workspace — ``pid`` (the surviving profile), ``type`` and ``event``
  (the message type and the track name; ``name_is`` tests them for the name conditions use,
  ``profiles.computed.event_name``), ``interaction``, ``ts`` (UTC) and ``props`` (JSON);
- ``act``: one row per profile with the values the analytics store keeps as events are copied
  (``ACTIVITY_COLUMNS``: the first and last time and the count of all events and of interactions), so
  the commonest values (``first_seen``, ``last_interaction``…) are read, not grouped from every event;
- ``profile_traits(pid, doc)``, ``profile_tags(pid, tag, expires_at)``, ``profile_stages(pid, model,
  stage)``, ``profile_segments(pid, key)``: read only when a condition needs them;
- ``profile_facts(pid, f0…, m0…)``: the engagement facts the conditions read (``points()``…, column
  ``f<n>`` of ``facts``) and the moments they could next change by time alone (``m<n>``), computed on
  the operational database by the facts' own SQL (``conditions.facts``): the programme's tables are not
  in the analytics copy, and a fact is one indexed read per profile, not a scan of its events.

Recheck moments — when a condition could change with no new event — are compiled the same way, exactly
as the real-time path computes them (``lifecycle.rechecks.next_recheck``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from lifeloop.conditions.ast import (
    FLIPPED,
    INTERACTION,
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
    parse_duration,
    static_type,
    walk,
)
from lifeloop.conditions.evaluator import compare, iso_week, next_iso_week, since
from lifeloop.profiles.computed import (
    DAY,
    INTERACTION_TYPES,
    MAX_NAME,
    NON_INTERACTION_EVENTS,
    day_start,
    epoch_day,
    raw_names,
)

# The values ``act`` holds per profile (``analytics.rollups``' ``profile_activity``): (edge or count, of
# which events) → column.
ACTIVITY_COLUMNS: dict[tuple[str, Selector | None], str] = {
    ("first", None): "first_ts",
    ("last", None): "last_ts",
    ("count", None): "events",
    ("first", INTERACTION): "first_interaction",
    ("last", INTERACTION): "last_interaction",
    ("count", INTERACTION): "interactions",
}
ACT = "act"  # the selection of the values read from ``act``

_JSON_KINDS = {
    "number": ("BIGINT", "UBIGINT", "HUGEINT", "DOUBLE"),
    "string": ("VARCHAR",),
    "bool": ("BOOLEAN",),
}
TRUE, FALSE = "TRUE", "FALSE"
_EV = sa.table("ev", sa.column("type"), sa.column("event"))


def text(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def timestamp(moment: datetime) -> str:
    """A TIMESTAMP literal of ``moment`` in UTC (DuckDB's copy keeps UTC times without a zone)."""
    return f"TIMESTAMP '{moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=' ')}'"


def interval(span: timedelta) -> str:
    return f"to_microseconds({(span // timedelta(microseconds=1))}::BIGINT)"


def event_name_sql(type_column: str, event_column: str) -> str:
    """``profiles.computed.event_name`` in SQL: the name conditions give an event of a raw type/event."""
    return (
        f"CASE {type_column} WHEN 'track' THEN left(coalesce({event_column}, ''), {MAX_NAME}) "
        f"WHEN 'page' THEN 'Page Viewed' WHEN 'screen' THEN 'Screen Viewed' ELSE '$' || {type_column} END"
    )


def interaction_sql(type_column: str, name_column: str) -> str:
    """``profiles.computed.is_interaction_name`` of an event's name, for the interactive message types."""
    own = ", ".join(text(n) for n in sorted(NON_INTERACTION_EVENTS))
    types = ", ".join(text(t) for t in INTERACTION_TYPES)
    user_named = f"NOT starts_with({name_column}, '$') AND {name_column} NOT IN ({own})"
    return f"({type_column} IN ({types}) AND {user_named})"


def name_is(name: str) -> str:
    """``event_name(type, event) = name`` as tests of the ``ev`` columns ``type`` and ``event`` themselves
    (``profiles.computed.raw_names``, as the SQL back end tests the log): no name is built per event, which
    cost more than the aggregates. ``event`` is read for track calls only, so the copy's names of page and
    screen calls and the log's raw ones test alike."""
    test = raw_names(_EV, name).compile(compile_kwargs={"literal_binds": True})
    return f"({test})"


def _selects(selector: Selector | None) -> str:
    if selector is None:
        return TRUE
    if isinstance(selector, Interaction):
        return "interaction"
    return name_is(selector)


def _path(path: Sequence[str], suffix: str = "") -> str:
    """A JSON path of object keys (never array indexes, like SQLite's ``$."k"``), then ``suffix``."""
    keys = "".join('."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"' for key in path)
    return text("$" + keys + suffix)


class ColumnarPlan:
    """Conditions compiled together: ``test(c)`` is a boolean expression over a profile's values ``agg``
    (a row of ``values_query()``: ``agg.pid`` and its values).

    ``aggregates`` collects one aggregate per distinct value the tests read; ``values_query()`` computes
    them all for every live profile. A profile without the events a value reads has NULL there: counts
    and sums read as 0 and times as NULL (missing), as in the other back ends.
    """

    def __init__(self, now: datetime):
        self.now = now.astimezone(UTC)
        # repr(value) → (column, aggregate SQL, which events it reads: a test over ``ev``, or ACT, the start
        # of its window — it reads only events later than that — or None, and a test of those events it
        # aggregates, TRUE for all)
        self.aggregates: dict[str, tuple[str, str, str, datetime | None, str]] = {}
        self.reads: set[str] = set()  # the state relations the tests read: traits, tags, stages, segments
        self.facts: dict[Fact, str] = {}  # engagement facts read → their column of ``profile_facts``
        self.fact_moments: dict[Fact, str] = {}  # facts whose next change a recheck reads → its column

    # --- the values -------------------------------------------------------------------------------
    def _column(
        self,
        key: str,
        aggregate: str,
        selector: Selector | None,
        after: datetime | None = None,
        where: str = TRUE,
    ) -> str:
        """The column of a value: ``aggregate`` (NULL or 0 without events) over the events ``selector``
        selects (later than ``after``) that pass ``where``."""
        if key not in self.aggregates:
            self.aggregates[key] = (f"v{len(self.aggregates)}", aggregate, _selects(selector), after, where)
        return "agg." + self.aggregates[key][0]

    def _activity(self, what: str, selector: Selector | None) -> str | None:
        """The column of a value ``act`` holds (``what``: first, last or count), or None."""
        column = ACTIVITY_COLUMNS.get((what, selector))
        if column is None:
            return None
        key = repr(("act", what, selector))
        if key not in self.aggregates:
            self.aggregates[key] = (f"v{len(self.aggregates)}", column, ACT, None, TRUE)
        return "agg." + self.aggregates[key][0]

    def values_query(self) -> str:
        """Every value per live profile (``pid``, ``v0``, ``v1``…), over the relations ``live``, ``ev`` and
        ``act``.

        Values are grouped by the events they select: each group is one ``GROUP BY pid`` over those events
        only (the orders, the interactions…), later than the widest window of its values, so an aggregate
        reads the rows it can use rather than every event, and a window is a filter of the scan; a value
        with a narrower window (orders of 30 days beside orders of a year) filters its aggregate. The
        groups are joined on the profile. The values ``act`` holds are read from it."""
        groups: dict[str, list[tuple[str, str, datetime | None, str]]] = {}
        for column, aggregate, selection, after, where in self.aggregates.values():
            groups.setdefault(selection, []).append((column, aggregate, after, where))
        ctes, columns, joins = [], ["live.pid"], []
        for n, (selection, values) in enumerate(groups.items()):
            if selection == ACT:
                columns += [f"{ACT}.{aggregate} AS {column}" for column, aggregate, _, _ in values]
                joins.append(f"LEFT JOIN {ACT} ON {ACT}.pid = live.pid")
                continue
            starts = [after for _, _, after, _ in values]
            widest = None if None in starts else min(s for s in starts if s is not None)
            tests = [t for t in (selection, self._after(widest)) if t != TRUE]
            where = f" WHERE {' AND '.join(tests)}" if tests else ""
            narrower = {after: TRUE if after == widest else self._after(after) for after in starts}
            computed = ", ".join(
                f"{aggregate}{self._filter(test, narrower[after])} AS {column}"
                for column, aggregate, after, test in values
            )
            ctes.append(f"g{n} AS (SELECT pid, {computed} FROM ev{where} GROUP BY pid)")
            columns += [f"g{n}.{column}" for column, _, _, _ in values]
            joins.append(f"LEFT JOIN g{n} ON g{n}.pid = live.pid")
        with_ = f"WITH {', '.join(ctes)} " if ctes else ""
        return f"{with_}SELECT {', '.join(columns)} FROM live {' '.join(joins)}"

    def _filter(self, *tests: str) -> str:
        kept = [t for t in tests if t != TRUE]
        return f" FILTER (WHERE {' AND '.join(kept)})" if kept else ""

    def _after(self, moment: datetime | None) -> str:
        return TRUE if moment is None else f"ts > {timestamp(moment)}"

    def _time(self, edge: str, selector: Selector | None) -> str:
        held = self._activity(edge, selector)
        if held is not None:
            return held
        function = "min" if edge == "first" else "max"
        return self._column(repr(("time", edge, selector)), f"{function}(ts)", selector)

    def _amount(self, node: Count | Sum) -> str:
        start = since(self.now, node.within)
        if isinstance(node, Count) and start is None and node.where is None:
            held = self._activity("count", node.selector)
            if held is not None:
                return f"coalesce({held}, 0)"
        if isinstance(node, Sum) and len(node.property) > MAX_NAME:
            return "0.0"  # never kept as an amount (profiles.computed.numeric_properties)
        where = TRUE if node.where is None else self.condition(node.where)
        if isinstance(node, Count):
            aggregate = "count(*)"
        else:
            aggregate = f"sum({self._as_kind('props', (node.property,), 'number')})"
        return f"coalesce({self._column(repr(node), aggregate, node.selector, start, where)}, 0)"

    def _active_days(self, node: ActiveDays) -> str:
        start = since(self.now, node.within)
        days = self._column(repr(node), "count(DISTINCT CAST(ts AS DATE))", INTERACTION, start)
        return f"coalesce({days}, 0)"

    def _active_weeks(self, node: ActiveWeeks) -> str:
        this_week = iso_week(epoch_day(self.now))
        # Week w holds days 7w − 3 … 7w + 3 (day 0, 1970-01-01, was a Thursday); weeks start on Mondays.
        first, last = (this_week - node.weeks + 1) * 7 - 3, this_week * 7 + 3
        window = f"ts >= {timestamp(day_start(first))} AND ts < {timestamp(day_start(last + 1))}"
        weeks = self._column(repr(node), "count(DISTINCT date_trunc('week', ts))", INTERACTION, where=window)
        return f"coalesce({weeks}, 0)"

    def value(self, node: Value, kind: str) -> str:
        match node:
            case Literal(value):
                if isinstance(value, bool):
                    return TRUE if value else FALSE
                if isinstance(value, str):
                    return text(value)
                return repr(float(value))
            case TraitRef(path):
                self.reads.add("traits")
                return self._as_kind("traits.doc", path, kind)
            case PropertyRef(path):
                return self._as_kind("props", path, kind)
            case Now():
                return timestamp(self.now)
            case Seen(which):
                return self._time(*SEEN_TIMES[which])
            case EventTime(which, selector):
                return self._time(which, selector)
            case Count() | Sum():
                return self._amount(node)
            case ActiveDays():
                return self._active_days(node)
            case ActiveWeeks():
                return self._active_weeks(node)
            case Fact():
                return self._fact(node)
        raise TypeError(f"cannot compile {node!r} here")

    def _fact(self, node: Fact) -> str:
        if node not in self.facts:
            self.facts[node] = f"f{len(self.facts)}"
        return f"facts.{self.facts[node]}"

    def _fact_moment(self, node: Fact) -> str:
        self._fact(node)  # ``profile_facts`` has a row per live profile with its values
        if node not in self.fact_moments:
            self.fact_moments[node] = f"m{len(self.fact_moments)}"
        return f"facts.{self.fact_moments[node]}"

    # --- JSON -------------------------------------------------------------------------------------
    @staticmethod
    def _kind(document: str, path: Sequence[str]) -> str:
        return f"json_type({document}, {_path(path)})"

    def _as_kind(self, document: str, path: Sequence[str], kind: str) -> str:
        """The value at ``path`` as ``kind`` (number, string, bool); NULL when missing or of another kind."""
        kinds = ", ".join(text(k) for k in _JSON_KINDS[kind])
        extracted = f"json_extract_string({document}, {_path(path)})"
        if kind == "number":
            extracted = f"CAST({extracted} AS DOUBLE)"
        elif kind == "bool":
            extracted = f"({extracted} = 'true')"
        return f"(CASE WHEN {self._kind(document, path)} IN ({kinds}) THEN {extracted} END)"

    def _document(self, ref: TraitRef | PropertyRef) -> str:
        if isinstance(ref, TraitRef):
            self.reads.add("traits")
            return "traits.doc"
        return "props"

    def _contains(self, ref: TraitRef | PropertyRef, item: object) -> str:
        document = self._document(ref)
        kind = self._kind(document, ref.path)
        if isinstance(item, bool):
            element = f"json_type(x) = 'BOOLEAN' AND json_extract_string(x, '$') = {text(str(item).lower())}"
            in_string = FALSE
        elif isinstance(item, str):
            element = f"json_type(x) = 'VARCHAR' AND json_extract_string(x, '$') = {text(item)}"
            in_string = f"contains(json_extract_string({document}, {_path(ref.path)}), {text(item)})"
        else:
            numbers = ", ".join(text(k) for k in _JSON_KINDS["number"])
            element = (
                f"json_type(x) IN ({numbers}) AND CAST(json_extract_string(x, '$') AS DOUBLE) = {item!r}"
            )
            in_string = FALSE
        elements = f"json_extract({document}, {_path(ref.path, '[*]')})"
        in_array = f"len(list_filter({elements}, lambda x: {element})) > 0"
        return f"(CASE {kind} WHEN 'VARCHAR' THEN {in_string} WHEN 'ARRAY' THEN {in_array} ELSE FALSE END)"

    # --- conditions -------------------------------------------------------------------------------
    def test(self, condition: Condition) -> str:
        """A boolean expression (never NULL) over ``agg`` (``values_query``), ``traits.doc``
        and the state relations."""
        return self.condition(condition)

    def condition(self, node: Condition) -> str:
        match node:
            case And(items):
                return "(" + " AND ".join(self.condition(i) for i in items) + ")"
            case Or(items):
                return "(" + " OR ".join(self.condition(i) for i in items) + ")"
            case Not(item):
                return f"(NOT {self.condition(item)})"
            case Literal(value):
                return TRUE if value else FALSE
            case Compare(op, left, right):
                return self._truth(self.compare(op, left, right))
            case In(value, options):
                return (
                    "("
                    + " OR ".join([FALSE, *(self._truth(self.compare("==", value, o)) for o in options)])
                    + ")"
                )
            case Contains(value, item):
                return self._truth(self._contains(value, item.value))
            case Exists(ref):
                return self._truth(f"{self._kind(self._document(ref), ref.path)} <> 'NULL'")
            case HasTag(tag):
                self.reads.add("tags")
                live = f"(expires_at IS NULL OR expires_at > {timestamp(self.now)})"
                return f"(agg.pid IN (SELECT pid FROM profile_tags WHERE tag = {text(tag)} AND {live}))"
            case InStage(model, stage):
                self.reads.add("stages")
                of_model = "" if model is None else f" AND model = {text(model)}"
                return f"(agg.pid IN (SELECT pid FROM profile_stages WHERE stage = {text(stage)}{of_model}))"
            case InSegment(key):
                self.reads.add("segments")
                return f"(agg.pid IN (SELECT pid FROM profile_segments WHERE key = {text(key)}))"
        raise TypeError(f"not a condition: {node!r}")

    @staticmethod
    def _truth(expression: str) -> str:
        return f"coalesce({expression}, FALSE)"

    def compare(self, op: str, left: Value, right: Value) -> str:
        if isinstance(right, DaysSince):
            left, right, op = right, left, FLIPPED[op]
        if isinstance(left, DaysSince):
            assert isinstance(right, Literal)
            return self._days_since(op, left, right.value)  # type: ignore[arg-type]
        if isinstance(left, Literal) and isinstance(right, Literal):
            return TRUE if compare(op, left.value, right.value) else FALSE
        lt, rt = static_type(left), static_type(right)
        kind = rt if lt == "dynamic" else lt
        if "dynamic" not in (lt, rt) and lt != rt:  # values of different kinds are never equal or ordered
            return FALSE
        a, b = self.value(left, kind), self.value(right, kind)
        return f"({a} {'=' if op == '==' else '<>' if op == '!=' else op} {b})"

    def _days_since(self, op: str, node: DaysSince, k: float) -> str:
        """floor((now − t) / 24 h) op k, as a range on t (as ``conditions.sql`` does)."""
        if isinstance(node.time, Now):
            return TRUE if compare(op, 0, k) else FALSE
        t = self.value(node.time, "time")
        low, high = math.ceil(k), math.floor(k) + 1

        def at_least(days: int) -> str:  # (now − t) >= days × 24 h ⟺ t <= now − days
            bound = self._days_ago(days)
            if bound is None:
                return FALSE if days > 0 else TRUE
            return f"{t} <= {timestamp(bound)}"

        match op:
            case ">=":
                test = at_least(low)
            case ">":
                test = at_least(high)
            case "<=":
                test = f"NOT ({at_least(high)})"
            case "<":
                test = f"NOT ({at_least(low)})"
            case "==":
                test = f"({at_least(low)}) AND NOT ({at_least(low + 1)})" if k == low else FALSE
            case _:  # "!=": present and not equal
                test = f"NOT (({at_least(low)}) AND NOT ({at_least(low + 1)}))" if k == low else TRUE
        return f"({t} IS NOT NULL AND {test})"

    def _days_ago(self, days: int) -> datetime | None:
        """now − ``days`` × 24 h, or None when that is outside the dates there are."""
        try:
            return self.now - days * DAY
        except OverflowError:
            return None

    def _later_than(self, t: str, days: int) -> str:
        """``t + days × 24 h > now``, as a test of ``t`` against a constant."""
        bound = self._days_ago(days)
        return f"{t} IS NOT NULL" if bound is None else f"{t} > {timestamp(bound)}"

    # --- recheck moments --------------------------------------------------------------------------
    def recheck(self, conditions: Iterable[Condition]) -> str:
        """The earliest moment after now at which one of ``conditions`` could change by time alone, or NULL:
        ``lifecycle.rechecks.next_recheck`` for every profile at once."""
        # Moments that always lie after now: the oldest event in a window leaves it after now (it is later
        # than now − window), and the next ISO week starts after now.
        moments: list[str] = []
        days: dict[str, set[int]] = {}  # a time value → the day counts after it at which a test flips
        for condition in conditions:
            for node in walk(condition):
                if isinstance(node, Compare):
                    for side, other in ((node.left, node.right), (node.right, node.left)):
                        if not isinstance(side, DaysSince) or not isinstance(side.time, Seen | EventTime):
                            continue
                        if isinstance(other, Literal) and isinstance(other.value, int | float):
                            threshold = max(0, int(other.value))
                            days.setdefault(self.value(side.time, "time"), set()).update(
                                (threshold, threshold + 1)
                            )
                elif isinstance(node, Count | Sum | ActiveDays) and node.within:
                    window = parse_duration(node.within)
                    if window is None:
                        continue
                    selector = Interaction() if isinstance(node, ActiveDays) else node.selector
                    key = repr(("oldest", selector, window))
                    oldest = self._column(key, "min(ts)", selector, self.now - window)
                    moments.append(f"{oldest} + {interval(window)}")
                elif isinstance(node, Fact):
                    moments.append(self._fact_moment(node))
                elif isinstance(node, ActiveWeeks):
                    last = self._time("last", Interaction())
                    recent = timestamp(self.now - (node.weeks + 1) * 7 * DAY)
                    moments.append(
                        f"CASE WHEN {last} > {recent} THEN {timestamp(next_iso_week(self.now))} END"
                    )
        ahead = list(dict.fromkeys(moments))
        for t, counts in days.items():  # after one time, the first moment ahead is the earliest one
            # t + n days > now ⟺ t > now − n days: each step tests t against a constant
            steps = [f"WHEN {self._later_than(t, n)} THEN {t} + {interval(n * DAY)}" for n in sorted(counts)]
            ahead.append(f"CASE {' '.join(steps)} END")
        if not ahead:
            return "NULL::TIMESTAMP"
        return f"least({', '.join(ahead)})"
