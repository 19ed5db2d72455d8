"""The flow editor's draft changes: each keeps every way it does not touch leading where it led, as the
engine reads a definition (``Definition.next_of`` and each step's own targets)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from lifeloop.errors import InvalidInput, NotFound
from lifeloop.journeys import definition as d
from lifeloop.journeys.editing import delete_step, insert_step, update_step
from lifeloop.journeys.service import definition_dict


def routes(draft: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    """Where each way of each step leads, read the way the engine reads it (engine.py ``_after``)."""
    defn = d.load_definition(draft)
    found: dict[str, dict[str, str | None]] = {}
    for step in defn.steps:
        if isinstance(step, d.ExitStep):
            found[step.key] = {}
        elif isinstance(step, d.WaitForStep):
            after = defn.next_of(step)
            found[step.key] = {"on_event": step.on_event or after, "on_timeout": step.on_timeout or after}
        elif isinstance(step, d.BranchStep):
            found[step.key] = {"then": step.then or defn.next_of(step), "else": step.otherwise}
        elif isinstance(step, d.SplitStep):
            found[step.key] = {f"arm:{a.name}": a.next for a in step.arms}
        else:
            found[step.key] = {"next": defn.next_of(step)}
    return found


def journey(*steps: dict[str, Any]) -> dict[str, Any]:
    name = {"zh-CN": "旅程", "en": "J"}
    return definition_dict(
        d.load_definition({"key": "j", "name": name, "trigger": {"kind": "manual"}, "steps": list(steps)})
    )


LINEAR = journey(
    {"key": "a", "type": "wait", "duration": "1d"},
    {"key": "b", "type": "add_tag", "tag": "x"},
    {"key": "c", "type": "exit", "reason": "done"},
)
BRANCHED = journey(
    {"key": "ask", "type": "branch", "condition": 'has_tag("vip")', "else": "other"},
    {"key": "yes", "type": "add_tag", "tag": "y"},
    {"key": "other", "type": "add_tag", "tag": "o"},
)
WAIT = {"type": "wait", "duration": "2h"}


def test_a_step_on_a_way_between_two_steps_takes_that_way_and_leads_on_to_where_it_led() -> None:
    before = routes(LINEAR)
    after = insert_step(LINEAR, after="a", way="next", step=WAIT)
    got = routes(after)
    assert [s["key"] for s in after["steps"]] == ["a", "wait", "b", "c"]
    assert got["a"] == {"next": "wait"} and got["wait"] == {"next": "b"}
    assert {k: v for k, v in got.items() if k not in ("a", "wait")} == {
        k: v for k, v in before.items() if k != "a"
    }
    assert all("next" not in s for s in after["steps"])  # the list order says it all


def test_inserting_on_a_branch_keeps_the_other_arm_where_it_went() -> None:
    after = insert_step(BRANCHED, after="ask", way="else", step=WAIT)
    got = routes(after)
    assert got["ask"] == {"then": "yes", "else": "wait"}  # "then" now names "yes": "wait" is below
    assert got["wait"] == {"next": "other"}
    assert got["yes"] == {"next": "other"} and got["other"] == {"next": None}


def test_a_step_on_a_way_out_of_the_journey_from_mid_list_is_followed_by_an_exit() -> None:
    leaving = journey(
        {"key": "ask", "type": "branch", "condition": 'has_tag("vip")'},
        {"key": "yes", "type": "add_tag", "tag": "y"},
    )
    after = insert_step(leaving, after="ask", way="else", step={"type": "add_tag", "tag": "z", "key": "mark"})
    got = routes(after)
    assert got["ask"] == {"then": "yes", "else": "mark"}
    assert got["mark"] == {"next": "end"} and got["end"] == {}
    assert got["yes"] == {"next": None}


def test_a_step_after_the_last_one_is_the_new_last() -> None:
    last = journey({"key": "a", "type": "wait", "duration": "1d"})
    after = insert_step(last, after="a", way="next", step=WAIT)
    assert routes(after) == {"a": {"next": "wait"}, "wait": {"next": None}}


def test_a_new_split_sends_every_arm_on_and_a_new_branch_both_ways() -> None:
    split = {"type": "split", "arms": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}], "holdout": 10}
    after = insert_step(LINEAR, after="a", way="next", step=split)
    assert routes(after)["split"] == {"arm:a": "b", "arm:b": "b"}
    branch = {"type": "branch", "condition": 'count("Order Completed") > 0'}
    after = insert_step(LINEAR, after="b", way="next", step=branch)
    assert routes(after)["branch"] == {"then": "c", "else": "c"}


def test_changing_a_step_keeps_its_key_and_type_and_can_re_route_its_ways() -> None:
    after = update_step(BRANCHED, "ask", {"condition": 'has_tag("gold")', "type": "wait"}, {"else": None})
    step = after["steps"][0]
    assert step["type"] == "branch" and step["condition"] == 'has_tag("gold")'
    assert routes(after)["ask"] == {"then": "yes", "else": None}
    moved = update_step(LINEAR, "a", {"duration": "3d"}, {"next": "c"})
    assert routes(moved)["a"] == {"next": "c"} and routes(moved)["b"] == {"next": "c"}
    with pytest.raises(InvalidInput, match="no step 'nowhere'"):
        update_step(LINEAR, "a", {"duration": "3d"}, {"next": "nowhere"})
    with pytest.raises(InvalidInput, match="last place"):
        update_step(LINEAR, "a", {"duration": "3d"}, {"next": None})


def test_deleting_a_step_sends_its_arrivals_where_it_went() -> None:
    after = delete_step(LINEAR, "b")
    assert routes(after) == {"a": {"next": "c"}, "c": {}}
    after = delete_step(BRANCHED, "other")
    assert routes(after) == {"ask": {"then": "yes", "else": None}, "yes": {"next": None}}
    with pytest.raises(InvalidInput, match="at least one step"):
        delete_step(journey({"key": "only", "type": "wait", "duration": "1d"}), "only")
    with pytest.raises(NotFound):
        delete_step(LINEAR, "missing")


def test_random_edits_never_re_route_a_way_they_do_not_touch() -> None:
    rng = random.Random(7)
    draft = LINEAR
    kinds = [WAIT, {"type": "add_tag", "tag": "t"}, {"type": "branch", "condition": 'has_tag("a")'},
             {"type": "wait_for", "event": "Order Completed", "timeout": "3d"}, {"type": "exit"}]  # fmt: skip
    for _ in range(150):
        before = routes(draft)
        keys = list(before)
        if rng.random() < 0.6 or len(keys) < 3:
            after_key = rng.choice([k for k in keys if before[k]])
            way = rng.choice(list(before[after_key]))
            try:
                changed = insert_step(draft, after=after_key, way=way, step=dict(rng.choice(kinds)))
            except InvalidInput:
                continue
            got = routes(changed)
            new = next(k for k in got if k not in before)
            assert got[after_key][way] == new
            assert set(got[new].values()) <= {before[after_key][way], *[k for k in got if k not in before]}
            untouched = {k: v for k, v in before.items() if k != after_key}
            assert {k: got[k] for k in untouched} == untouched
        else:
            gone = rng.choice(keys)
            try:
                changed = delete_step(draft, gone)
            except InvalidInput:
                continue
            got = routes(changed)
            onward = next(iter(before[gone].values()), None)
            for key, exits in before.items():
                if key != gone:
                    assert got[key] == {w: (onward if t == gone else t) for w, t in exits.items()}
        draft = changed
