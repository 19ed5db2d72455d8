"""Property: on random histories and random conditions, the four back ends agree on both databases.

The in-memory reference (raw events), the evaluator over a stored profile (daily buckets plus raw
edge days), the SQL compiler (all profiles in one query) and the columnar compiler (DuckDB, over the
events not yet copied and then over the analytics copy) must select the same people. Every
generated condition is also printed and parsed back to the same tree, and the aggregates kept
incrementally must equal a batch recompute of the same history.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lifeloop.analytics.sync import sync
from lifeloop.columnar import Workspace
from lifeloop.conditions import (
    Condition,
    MemoryProfile,
    StoredProfile,
    evaluate,
    matching_profiles,
    parse,
    to_text,
)
from lifeloop.conditions.ast import (
    INTERACTION,
    ActiveDays,
    ActiveWeeks,
    And,
    Compare,
    Contains,
    Count,
    DaysSince,
    EventTime,
    Exists,
    HasTag,
    In,
    InSegment,
    InStage,
    Literal,
    Not,
    Now,
    Or,
    PropertyRef,
    Seen,
    Sum,
    TraitRef,
)
from lifeloop.profiles.computed import ResolvedEvent, recompute
from tests.conditions.store import SEGMENT_KEYS, Person, clear, computed_state, seed
from tests.conftest import Brand

BASE = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)
_copies = itertools.count()  # one analytics copy per example
NAMES = ["Order Completed", "Menu Clicked", "Message Delivered", "$odd"]
OPS = ["==", "!=", "<", "<=", ">", ">="]
WORDS = ["Taipei", "Tokyo", "taipei", "Tai", ""]

scalars = st.one_of(st.sampled_from(WORDS), st.integers(-2, 3), st.booleans(), st.sampled_from([0.5, 2.0]))
ops = st.sampled_from(OPS)
withins = st.one_of(st.none(), st.sampled_from(["1h", "12h", "1d", "2d", "7d", "14d", "30d"]))
selectors = st.one_of(st.sampled_from([*NAMES, "Page Viewed", "$identify"]), st.just(INTERACTION))
properties = st.sampled_from([("category",), ("revenue",), ("keyword",), ("revenue", "x")])
traits = st.sampled_from([("city",), ("age",), ("vip",), ("tags",), ("address", "city"), ("missing",)])
times = st.one_of(
    st.builds(Now),
    st.builds(Seen, st.sampled_from(["first_seen", "last_seen", "first_interaction", "last_interaction"])),
    st.builds(EventTime, st.sampled_from(["first", "last"]), selectors),
)

where_leaves = st.one_of(
    st.builds(
        Compare,
        ops.filter(lambda o: o in ("==", "!=")),
        st.builds(PropertyRef, properties),
        st.builds(Literal, scalars),
    ),
    st.builds(Compare, ops, st.builds(PropertyRef, properties), st.builds(Literal, st.integers(0, 40))),
    st.builds(Exists, st.builds(PropertyRef, properties)),
    st.builds(
        Contains, st.builds(PropertyRef, properties), st.builds(Literal, st.sampled_from(["Tai", "book"]))
    ),
)
wheres = st.one_of(
    st.none(),
    where_leaves,
    st.builds(lambda a, b: And((a, b)), where_leaves, where_leaves),
    st.builds(Not, where_leaves),
)
counts = st.builds(Count, selectors, withins, wheres)
sums = st.builds(Sum, selectors, st.just("revenue"), withins, wheres)


def _ordered(op: str, literal: Literal) -> bool:
    return not isinstance(literal.value, bool) or op in ("==", "!=")


leaves = st.one_of(
    st.builds(Compare, ops, counts, st.builds(Literal, st.integers(0, 4))),
    st.builds(Compare, ops, st.builds(Literal, st.integers(0, 4)), counts),
    st.builds(Compare, ops, counts, counts),
    st.builds(Compare, ops, sums, st.builds(Literal, st.integers(0, 60))),
    st.builds(
        Compare,
        ops,
        st.builds(DaysSince, times),
        st.builds(Literal, st.sampled_from([-1, 0, 1, 2, 7, 13, 14, 30, 2.5])),
    ),
    st.builds(Compare, ops, times, times),
    st.builds(Compare, ops, st.builds(ActiveDays, withins), st.builds(Literal, st.integers(0, 3))),
    st.builds(Compare, ops, st.builds(ActiveWeeks, st.integers(1, 5)), st.builds(Literal, st.integers(0, 3))),
    st.tuples(ops, st.builds(TraitRef, traits), st.builds(Literal, scalars))
    .filter(lambda t: _ordered(t[0], t[2]))
    .map(lambda t: Compare(*t)),
    st.builds(Compare, ops, st.builds(TraitRef, traits), counts),
    st.builds(In, st.builds(TraitRef, traits), st.lists(st.builds(Literal, scalars), max_size=3).map(tuple)),
    st.builds(Contains, st.builds(TraitRef, traits), st.builds(Literal, scalars)),
    st.builds(Exists, st.builds(TraitRef, traits)),
    st.builds(HasTag, st.sampled_from(["vip", "new"])),
    st.builds(InStage, st.sampled_from([None, "line"]), st.sampled_from(["new", "loyal"])),
    st.builds(InSegment, st.sampled_from(SEGMENT_KEYS)),
    st.builds(Literal, st.booleans()),
)
conditions = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map(lambda items: And(tuple(items))),
        st.lists(inner, min_size=2, max_size=3).map(lambda items: Or(tuple(items))),
        st.builds(Not, inner),
    ),
    max_leaves=5,
)

event_props = st.fixed_dictionaries(
    {},
    optional={
        "revenue": st.one_of(st.integers(0, 30), st.just("12"), st.booleans(), st.just(0.5)),
        "category": st.sampled_from(["booking", "product", "Booking"]),
        "keyword": st.one_of(st.none(), st.sampled_from(["price", "Taipei"])),
    },
)


@st.composite
def histories(draw: st.DrawFn, now: datetime) -> list[Person]:
    people = []
    for _ in range(draw(st.integers(2, 4))):
        evs = []
        for _ in range(draw(st.integers(0, 8))):
            type_ = draw(st.sampled_from(["track", "track", "track", "page", "identify"]))
            name = draw(st.sampled_from(NAMES)) if type_ == "track" else None
            # Minutes: the window edges (now − 14 d exactly, midnight) are reachable.
            offset = draw(
                st.one_of(
                    st.integers(-60 * 24 * 35, 60 * 24), st.sampled_from([-60 * 24 * 14, -60 * 24 * 7, -60])
                )
            )
            props = draw(st.one_of(st.none(), event_props))
            evs.append((type_, name, now + timedelta(minutes=offset), props))
        person_traits = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "city": st.one_of(scalars, st.none()),
                    "age": st.one_of(st.integers(-1, 3), st.just("2")),
                    "vip": st.booleans(),
                    "tags": st.lists(scalars, max_size=3),
                    "address": st.fixed_dictionaries({}, optional={"city": st.sampled_from(WORDS)}),
                },
            )
        )
        tag_expiry = st.one_of(
            st.none(), st.sampled_from([now - timedelta(hours=1), now + timedelta(hours=1)])
        )
        people.append(
            Person(
                events=evs,
                traits=person_traits,
                tags=draw(st.dictionaries(st.sampled_from(["vip", "new"]), tag_expiry, max_size=2)),
                stages=draw(
                    st.dictionaries(st.sampled_from(["line", "mall"]), st.sampled_from(["new", "loyal"]))
                ),
                segments=draw(st.frozensets(st.sampled_from(SEGMENT_KEYS))),
            )
        )
    return people


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_evaluator_and_sql_agree(
    engine: sa.Engine, brand: Brand, tmp_path: Path, data: st.DataObject
) -> None:
    ws = brand.workspace_id
    now = BASE + timedelta(minutes=data.draw(st.integers(-60 * 24 * 3, 60 * 24 * 3), label="clock"))
    people = data.draw(histories(now), label="people")
    drawn = data.draw(st.lists(conditions, min_size=1, max_size=6), label="conditions")
    copy = tmp_path / f"copy-{next(_copies)}.duckdb"
    with engine.begin() as conn, Workspace(engine, ws, copy, now=now) as columnar:
        clear(conn, ws)
        ids = seed(conn, ws, people, now=now)
        maintained = computed_state(conn, ws)
        recompute(conn, ws)  # the batch rebuild (SQL) equals the incremental upkeep (Python)
        assert computed_state(conn, ws) == maintained
        expected = []
        for condition in drawn:
            text = to_text(condition)
            assert parse(text) == condition, text
            expected.append(assert_agree(conn, ws, people, ids, condition, now))
            # Nothing synced yet: the columnar back end reads every event as the copy's tail.
            assert set(columnar.matching(condition, conn=conn)) == expected[-1], text
    sync(engine, copy, workspace_id=ws)
    with Workspace(engine, ws, copy, now=now) as columnar:  # now every event comes from the copy
        for condition, reference in zip(drawn, expected, strict=True):
            assert set(columnar.matching(condition)) == reference, to_text(condition)
    copy.unlink()


def assert_agree(
    conn: sa.Connection, ws: int, people: list[Person], ids: list[int], condition: Condition, now: datetime
) -> set[int]:
    """The three back ends select the same profiles; returns them."""
    reference = {
        pid
        for pid, person in zip(ids, people, strict=True)
        if evaluate(
            condition,
            MemoryProfile(
                now=now,
                events=[ResolvedEvent(pid, *e) for e in person.events],
                traits=person.traits,
                tags=person.tags,
                stages=person.stages,
                segments=person.segments,
            ),
        )
    }
    stored = {pid for pid in ids if evaluate(condition, StoredProfile(conn, ws, pid, now=now))}
    batch = set(matching_profiles(conn, ws, condition, now=now))
    assert stored == reference, to_text(condition)
    assert batch == reference, to_text(condition)
    return reference


ODD_NAMES = [  # condition, which of the two people match
    ('trait["城市"] == "台北"', [True, False]),
    ('trait["a.b"] == 1', [True, False]),
    ('trait["first name"] contains "Li"', [True, False]),
    ("trait.list contains 1", [True, False]),
    ("trait.list contains true", [False, True]),
    ('trait.list contains "x"', [True, False]),
    ('trait["it\'s"] == "ok"', [True, False]),
    ("trait.nested.deep.value >= 2.5", [False, True]),
    ("trait.list.x == 1", [False, False]),
    ('trait["0"] == "zero"', [True, False]),
    ('trait.nested["0"] == 1', [False, False]),
    ('count("Café ☕", where=property["品項"] == "拿鐵") == 1', [True, False]),
]


def test_odd_names_and_values_agree(engine: sa.Engine, brand: Brand) -> None:
    people = [
        Person(
            traits={
                "城市": "台北",
                "a.b": 1,
                "first name": "Lin",
                "list": [1.0, "x"],
                "it's": "ok",
                "0": "zero",
            },
            events=[("track", "Café ☕", BASE - timedelta(hours=1), {"品項": "拿鐵"})],
        ),
        Person(traits={"list": [True, [1], {"x": 1}], "nested": {"deep": {"value": 3}, "0": [1]}}),
    ]
    with engine.begin() as conn:
        ids = seed(conn, brand.workspace_id, people, now=BASE)
        for text, expected in ODD_NAMES:
            chosen = assert_agree(conn, brand.workspace_id, people, ids, parse(text), BASE)
            assert chosen == {pid for pid, yes in zip(ids, expected, strict=True) if yes}, text
