"""The columnar back end's name test on the type and event columns equals ``profiles.computed.event_name``
for every event ingest can store (a track call's name is 1 to 255 characters)."""

from __future__ import annotations

import duckdb
import pytest

from lifeloop.conditions.columnar import name_is
from lifeloop.profiles.computed import MAX_NAME, event_name

LONG = "x" * MAX_NAME
EVENTS = [
    ("track", "Order Completed"),
    ("track", "Page Viewed"),  # a track call may carry a type's name
    ("track", "$identify"),
    ("track", "it's 100% \\ok"),  # quoted as a literal
    ("track", LONG),
    ("track", LONG[:-1]),
    ("page", None),
    ("page", "Page Viewed"),  # the analytics copy's name of a page call
    ("page", "Pricing"),  # the log's raw page name
    ("screen", "Screen Viewed"),
    ("identify", None),
    ("identify", "identify"),
    ("group", None),
]
NAMES = sorted({event_name(t, e) for t, e in EVENTS} | {"Screen Viewed", "$track", "$page", "Pricing", "y"})


@pytest.mark.parametrize("name", NAMES, ids=lambda n: n[:20])
def test_name_is_equals_event_name(name: str) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE ev (n INTEGER, type VARCHAR, event VARCHAR)")
    con.executemany("INSERT INTO ev VALUES (?, ?, ?)", [(n, t, e) for n, (t, e) in enumerate(EVENTS)])
    got = {n for (n,) in con.execute(f"SELECT n FROM ev WHERE {name_is(name)}").fetchall()}
    assert got == {n for n, (t, e) in enumerate(EVENTS) if event_name(t, e) == name}
