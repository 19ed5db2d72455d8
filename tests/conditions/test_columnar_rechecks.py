"""The columnar recheck moments (``ColumnarPlan.recheck``) against the rule computed in plain Python.

The rule (docs/lifecycle.md, ``lifecycle.rechecks.next_recheck``): a ``days_since(t) op k`` test can flip
k and k + 1 whole days after ``t``; a window's count changes when its oldest event leaves it; the
recheck is the earliest such moment after now. The compiled SQL tests each step of a time against a
constant, so the edges matter: a moment exactly now, one microsecond either side, no time at all, and
thresholds so large that now − k days is before any date.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from lifeloop.conditions.columnar import ColumnarPlan
from lifeloop.conditions.parser import parse

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
DAY, US = timedelta(days=1), timedelta(microseconds=1)
HUGE = 900_000  # days: now − HUGE days is before year 1


def expected(first: datetime | None, oldest: datetime | None, steps: list[int]) -> datetime | None:
    moments = [first + n * DAY for n in steps] if first is not None else []
    if oldest is not None:
        moments.append(oldest + 30 * DAY)
    ahead = [m for m in moments if m > NOW]
    return min(ahead) if ahead else None


FIRSTS = [
    None,
    NOW,
    NOW - 7 * DAY,
    NOW - 7 * DAY + US,
    NOW - 7 * DAY - US,
    NOW - 8 * DAY,
    NOW - 8 * DAY - US,
    NOW - 400 * DAY,
    NOW + DAY,
]


@pytest.mark.parametrize("first", FIRSTS)
@pytest.mark.parametrize("oldest", [None, NOW - 29 * DAY, NOW - US])
def test_recheck_moments_follow_the_rule(first: datetime | None, oldest: datetime | None) -> None:
    plan = ColumnarPlan(NOW)
    conditions = [
        parse("days_since(first_seen) >= 7"),
        parse(f"days_since(first_seen) < {HUGE}"),
        parse('count("Order Completed", within="30d") >= 1'),
    ]
    for condition in conditions:
        plan.test(condition)
    recheck = plan.recheck(conditions)
    columns = {repr_: column for repr_, (column, *_rest) in plan.aggregates.items()}
    first_column = next(c for r, c in columns.items() if r.startswith("('act'"))
    oldest_column = next(c for r, c in columns.items() if r.startswith("('oldest'"))
    db = duckdb.connect()
    others = [c for c in columns.values() if c not in (first_column, oldest_column)]
    declared = ", ".join(
        [f"{first_column} TIMESTAMP", f"{oldest_column} TIMESTAMP", *(f"{c} DOUBLE" for c in others)]
    )
    db.execute(f"CREATE TABLE agg (pid BIGINT, {declared})")
    naive = [None if t is None else t.astimezone(UTC).replace(tzinfo=None) for t in (first, oldest)]
    db.execute(f"INSERT INTO agg (pid, {first_column}, {oldest_column}) VALUES (1, ?, ?)", naive)
    (found,) = db.execute(f"SELECT {recheck} FROM agg").fetchone()  # type: ignore[misc]
    want = expected(first, oldest, [7, 8, HUGE, HUGE + 1])
    assert (found.replace(tzinfo=UTC) if found else None) == want
