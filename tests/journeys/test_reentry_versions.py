"""Re-entry rules as a table (once, once per period, always, not while inside), then versions: a user inside
finishes the version they entered after a new one is published, and a step the new version removed
strands nobody. Paused and archived journeys last."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from lifeloop.journeys import service
from lifeloop.journeys.stats import journey_stats
from tests.conftest import Brand
from tests.journeys.world import Act, Expect, Move, Send, World

START = datetime(2026, 4, 1, 0, 0, tzinfo=UTC)
DONE = ("completed", None, "completed")


def visit_journey(reentry: dict[str, Any]) -> dict[str, Any]:
    """On each ``Visited``: wait a day, then send ``a``."""
    return {
        "key": "visits",
        "name": {"zh-CN": "来访", "en": "Visits"},
        "trigger": {"kind": "event", "event": "Visited"},
        "reentry": reentry,
        "steps": [
            {"key": "pause", "type": "wait", "duration": "1d"},
            {"key": "hello", "type": "send", "channel": "line", "template": "a"},
        ],
    }


@dataclass(frozen=True)
class Together:
    """Several events of one user in one ingest batch (one resolver transaction)."""

    user: str
    count: int
    event: str = "Visited"

    def __call__(self, world: World) -> None:
        world.send_all([self.user] * self.count, self.event)


@dataclass(frozen=True)
class Redeliver:
    """The same event (same message id) delivered again."""

    user: str
    message_id: str
    event: str = "Visited"

    def __call__(self, world: World) -> None:
        world.send(self.user, self.event, messageId=self.message_id)


@dataclass(frozen=True)
class ReentryCase:
    id: str
    reentry: dict[str, Any]
    acts: tuple[Act, ...]
    state: dict[str, list[tuple[str, str | None, str | None]]]  # each user's runs, in order
    entry_keys: dict[str, list[str]] | None = None


VISIT = Send("ann", "Visited")

CASES = [
    ReentryCase(
        "not-while-inside",
        {"mode": "not_while_inside"},
        (
            VISIT,
            Move("1h"),
            VISIT,  # inside: refused
            Together("ann", 2),  # inside: both refused
            Move("23h"),  # the first run ends
            Expect(state={"ann": [DONE]}),
            VISIT,  # outside again: enters
            Together("bob", 2),  # two in one batch: the first enters, the second finds it inside
            Move("1d"),
        ),
        state={"ann": [DONE, DONE], "bob": [DONE]},
    ),
    ReentryCase(
        "default-is-not-while-inside",
        {},
        (VISIT, Move("1h"), VISIT, Move("23h"), VISIT, Move("1d")),
        state={"ann": [DONE, DONE]},
    ),
    ReentryCase(
        "once",
        {"mode": "once"},
        (
            VISIT,
            Move("1h"),
            VISIT,  # inside
            Move("1d"),
            VISIT,  # outside, but once is once
            Move("30d"),
            VISIT,
            Together("bob", 3),  # another user enters once as well
            Move("1d"),
        ),
        state={"ann": [DONE], "bob": [DONE]},
        entry_keys={"ann": ["once"], "bob": ["once"]},
    ),
    ReentryCase(
        "once-per-period",
        {"mode": "once_per_period", "period": "7d"},
        (
            VISIT,
            Move("1d1h"),
            Expect(state={"ann": [DONE]}),
            VISIT,  # outside, but entered 25 hours ago
            Move("5d22h"),
            VISIT,  # 6 days 23 hours after entering: still refused
            Move("1h"),
            VISIT,  # 7 days after: the period is over (the previous entry is not newer than it)
            Move("1d"),
        ),
        state={"ann": [DONE, DONE]},
    ),
    ReentryCase(
        "always",
        {"mode": "always"},
        (
            VISIT,
            Move("1h"),
            VISIT,  # inside: enters again
            Together("ann", 2),  # two events in one batch: two runs
            Redeliver("ann", "dup"),
            Redeliver("ann", "dup"),  # the same event again: no second run
            Move("1d"),
        ),
        state={"ann": [DONE] * 5},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_reentry(engine: sa.Engine, brand: Brand, case: ReentryCase) -> None:
    world = World(engine, brand, now=START)
    world.template("a", text="a")
    world.journey(visit_journey(case.reentry))
    world.play(case.acts)
    for user, runs in case.state.items():
        assert world.state(user) == runs, user
    assert len(world.sends()) == sum(len(runs) for runs in case.state.values())
    assert world.steps().count(("hello", "queued")) == len(world.sends())  # one send per run
    if case.entry_keys is not None:
        for user, keys in case.entry_keys.items():
            assert [r["entry_key"] for r in world.runs(user)] == keys


# --- versions --------------------------------------------------------------------------------------


def definition(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "key": "versioned",
        "name": {"zh-CN": "版本", "en": "Versioned"},
        "trigger": {"kind": "event", "event": "Go"},
        "steps": steps,
    }


def send(key: str, template: str) -> dict[str, Any]:
    return {"key": key, "type": "send", "channel": "line", "template": template}


WAIT_A_DAY = {"key": "pause", "type": "wait", "duration": "1d"}


def inside(world: World) -> dict[int, int]:
    with world.engine.connect() as conn:
        return {v["version"]: v["inside"] for v in service.versions(conn, world.ws, "versioned")}


def test_a_user_inside_finishes_the_version_they_entered(engine: sa.Engine, brand: Brand) -> None:
    world = World(engine, brand, now=START)
    for key in ("v1_note", "v2_note"):
        world.template(key, text=key)
    world.journey(definition([WAIT_A_DAY, send("note", "v1_note")]))
    world.send("ann", "Go")
    # A saved draft reaches nobody: Bob still enters version 1.
    world.journey(definition([WAIT_A_DAY, send("note", "v2_note")]), publish=False)
    world.send("bob", "Go")
    assert inside(world) == {1: 2}
    assert world.publish("versioned") == 2
    world.send("cat", "Go")
    assert inside(world) == {1: 2, 2: 1}
    world.move("1d")
    assert world.sends() == [
        ("ann", "line", "v1_note"),
        ("bob", "line", "v1_note"),
        ("cat", "line", "v2_note"),
    ]
    assert {u: [r["version"] for r in world.runs(u)] for u in ("ann", "bob", "cat")} == {
        "ann": [1],
        "bob": [1],
        "cat": [2],
    }
    assert [e["version"] for e in world.events("ann", "Journey Entered")] == [1]
    assert [e["version"] for e in world.events("cat", "Journey Exited")] == [2]
    assert inside(world) == {1: 0, 2: 0}
    with engine.connect() as conn:
        assert journey_stats(conn, world.ws, "versioned")["by_version"] == {1: 2, 2: 1}
        v1 = service.version_definition(conn, world.ws, "versioned", 1)
    assert [s.get("template") for s in v1["steps"]] == [None, "v1_note"]  # versions are immutable


def test_a_user_inside_reaches_the_goal_of_the_version_they_entered(engine: sa.Engine, brand: Brand) -> None:
    """Version 2 changes the goal and version 3 drops it: Ann (inside version 1) and Bob (version 2)
    still convert on their own version's goal and leave; Cat (version 2) does not convert on version 1's
    goal, nor Dan (version 3) on any."""
    world = World(engine, brand, now=START)
    world.template("note", text="note")
    steps = [{"key": "pause", "type": "wait", "duration": "2d"}, send("note", "note")]
    world.journey({**definition(steps), "goal": {"event": "Order Completed", "within": "7d"}})
    world.send("ann", "Go")
    world.journey({**definition(steps), "goal": {"event": "Review Submitted", "within": "7d"}})
    world.send("bob", "Go")
    world.send("cat", "Go")
    world.journey(definition(steps))
    world.send("dan", "Go")
    world.move("1h")
    world.send("ann", "Order Completed", {"revenue": 120})
    world.send("bob", "Review Submitted")
    world.send("cat", "Order Completed", {"revenue": 80})
    world.send("dan", "Order Completed", {"revenue": 80})
    world.send("dan", "Review Submitted")
    world.move("2d")
    assert world.state("ann") == world.state("bob") == [("exited", "pause", "goal")]
    assert world.state("cat") == world.state("dan") == [DONE]
    assert world.sends() == [("cat", "line", "note"), ("dan", "line", "note")]
    users = ("ann", "bob", "cat", "dan")
    converted = {u: [(r["version"], r["conversion_value"]) for r in world.runs(u)] for u in users}
    assert converted == {"ann": [(1, 120.0)], "bob": [(2, 0.0)], "cat": [(2, None)], "dan": [(3, None)]}


V1 = [
    WAIT_A_DAY,
    {"key": "ask", "type": "wait_for", "event": "Replied", "timeout": "1d", "on_event": "thanks"},
    send("survey", "survey"),
    {"key": "surveyed", "type": "exit", "reason": "surveyed"},
    send("thanks", "thanks"),
]
V2 = [send("thanks", "thanks")]  # the wait, the question and the survey are gone


@dataclass(frozen=True)
class StrandCase:
    id: str
    before: tuple[Act, ...]  # in version 1, until version 2 is published
    after: tuple[Act, ...]
    parked_in: str  # the v1 step Ann is parked in when v2 is published (one v2 no longer has)
    log: list[tuple[str, str, str]]
    state: tuple[str, str | None, str | None]
    sends: list[str]


STRANDS = [
    StrandCase(
        "parked-in-a-removed-wait",
        (Send("ann", "Go"), Move("1h")),
        (Move("23h"), Move("1d")),
        parked_in="pause",
        log=[
            ("pause", "wait", "waited"),
            ("ask", "wait_for", "timeout"),
            ("survey", "send", "queued"),
            ("surveyed", "exit", "exit"),
        ],
        state=("exited", "surveyed", "surveyed"),
        sends=["survey"],
    ),
    StrandCase(
        "parked-in-a-removed-wait-for-answered-after",
        (Send("ann", "Go"), Move("1d1h")),
        (Send("ann", "Replied"),),
        parked_in="ask",
        log=[("pause", "wait", "waited"), ("ask", "wait_for", "event"), ("thanks", "send", "queued")],
        state=DONE,
        sends=["thanks"],
    ),
    StrandCase(
        "parked-in-a-removed-wait-for-timing-out-after",
        (Send("ann", "Go"), Move("1d1h")),
        (Move("1d"),),
        parked_in="ask",
        log=[
            ("pause", "wait", "waited"),
            ("ask", "wait_for", "timeout"),
            ("survey", "send", "queued"),
            ("surveyed", "exit", "exit"),
        ],
        state=("exited", "surveyed", "surveyed"),
        sends=["survey"],
    ),
]


@pytest.mark.parametrize("case", STRANDS, ids=[c.id for c in STRANDS])
def test_a_step_removed_in_a_new_version_strands_nobody(
    engine: sa.Engine, brand: Brand, case: StrandCase
) -> None:
    world = World(engine, brand, now=START)
    for key in ("survey", "thanks"):
        world.template(key, text=key)
    world.journey(definition(V1))
    world.play(case.before)
    assert world.state("ann") == [("waiting", case.parked_in, None)]
    world.journey(definition(V2))  # saved and published: version 2
    world.send("bob", "Go")  # new entries take version 2: straight to the thanks
    world.play(case.after)
    assert world.log("ann") == case.log
    assert world.state("ann") == [case.state]
    assert world.log("bob") == [("thanks", "send", "queued")]
    assert world.state("bob") == [DONE]
    assert [(u, t) for u, _c, t in world.sends() if u == "ann"] == [("ann", t) for t in case.sends]
    assert [r["version"] for r in world.runs()] == [1, 2]
    assert all(r["error"] is None for r in world.runs())


def test_paused_journeys_take_no_entries_and_move_no_runs_then_resume(
    engine: sa.Engine, brand: Brand
) -> None:
    world = World(engine, brand, now=START)
    for key in ("survey", "thanks"):
        world.template(key, text=key)
    world.journey(definition(V1))
    world.send("ann", "Go")
    world.move("1d1h")  # waiting for a reply now
    world.set_status("versioned", "paused")
    world.send("bob", "Go")  # no entry while paused
    world.send("ann", "Replied")  # ignored while paused
    world.move("2d")  # her timeout passes while paused: she does not move
    assert world.state("ann") == [("waiting", "ask", None)] and world.runs("bob") == []
    assert world.sends() == []
    world.set_status("versioned", "active")
    world.work()  # the timeout that passed is taken now
    assert world.log("ann")[1:] == [
        ("ask", "wait_for", "timeout"),
        ("survey", "send", "queued"),
        ("surveyed", "exit", "exit"),
    ]
    assert world.sends() == [("ann", "line", "survey")]


def test_archiving_lets_everyone_inside_leave(engine: sa.Engine, brand: Brand) -> None:
    world = World(engine, brand, now=START)
    for key in ("survey", "thanks"):
        world.template(key, text=key)
    world.journey(definition(V1))
    world.send("ann", "Go")
    world.send("bob", "Go")
    world.set_status("versioned", "archived")
    assert world.state("ann") == world.state("bob") == [("exited", "pause", "archived")]
    world.send("cat", "Go")
    world.move("3d")
    assert world.runs("cat") == [] and world.sends() == []
