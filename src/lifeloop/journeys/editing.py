"""Changing a journey's draft one step at a time: insert a step on a way between two steps, change a
step, delete one — what the console's flow editor does, on the stored draft (a definition dict).

A step's ways on are partly implicit (a step goes to the one below it unless it names another), so
moving steps around in the list would silently re-route runs. Every change therefore works on the
*resolved* graph — each way on of each step with the step it really leads to, or ``None`` for leaving
the journey — and writes it back into the list with as few explicit targets as keep it the same.
The result is checked by ``definition.load_definition`` when the draft is saved.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from lifeloop.errors import InvalidInput, NotFound

# The ways on of each kind of step, by the field that names the target. For every field but ``else``
# and split arms, an absent target means "the step below".
_WAYS = {"wait_for": ("on_event", "on_timeout"), "branch": ("then", "else"), "exit": ()}
_TARGET_FIELDS = ("next", "on_event", "on_timeout", "then", "else")
LEAVE = None

Exits = dict[str, str | None]


def ways(step: dict[str, Any]) -> list[str]:
    """The names of a step's ways on: ``next``; ``on_event``/``on_timeout``; ``then``/``else``; or
    ``arm:<name>`` for each arm of a split."""
    if step["type"] == "split":
        return [f"arm:{arm['name']}" for arm in step.get("arms", [])]
    return list(_WAYS.get(step["type"], ("next",)))


def resolved(steps: list[dict[str, Any]]) -> dict[str, Exits]:
    """Each step's ways on with the step each leads to (``None``: the run leaves the journey)."""
    keys = [s["key"] for s in steps]
    below = {k: (keys[i + 1] if i + 1 < len(keys) else None) for i, k in enumerate(keys)}
    graph: dict[str, Exits] = {}
    for step in steps:
        after = step.get("next") or below[step["key"]]
        exits: Exits = {}
        for way in ways(step):
            if way.startswith("arm:"):
                arm = next(a for a in step["arms"] if f"arm:{a['name']}" == way)
                exits[way] = arm.get("next")
            elif way == "else":
                exits[way] = step.get("else")
            elif way == "next":
                exits[way] = after
            else:
                exits[way] = step.get(way) or after
        graph[step["key"]] = exits
    return graph


def _write(steps: list[dict[str, Any]], graph: dict[str, Exits]) -> list[dict[str, Any]]:
    """The steps in this order with targets set so that each way on leads where ``graph`` says, naming
    a target only where the step below would not do."""
    keys = [s["key"] for s in steps]
    below = {k: (keys[i + 1] if i + 1 < len(keys) else None) for i, k in enumerate(keys)}
    written = []
    for original in steps:
        step = {k: v for k, v in original.items() if k not in _TARGET_FIELDS}
        key, exits = step["key"], graph[step["key"]]
        for way, target in exits.items():
            if way.startswith("arm:"):
                if target is None:
                    raise InvalidInput(f"every arm of {key!r} must lead to a step", field=f"steps.{key}.arms")
                step["arms"] = [
                    {**a, "next": target} if f"arm:{a['name']}" == way else a for a in step["arms"]
                ]
            elif way == "else":
                if target is not None:
                    step["else"] = target
            elif target != below[key]:
                if target is None:
                    raise InvalidInput(
                        f"{key!r} can only leave the journey from the last place in the list; "
                        "end it with an exit step instead",
                        field=f"steps.{key}.{way}",
                    )
                step[way] = target
        written.append(step)
    return written


def _index(steps: list[dict[str, Any]], key: str) -> int:
    for i, step in enumerate(steps):
        if step["key"] == key:
            return i
    raise NotFound(f"no step {key!r} in this journey")


def new_key(draft: dict[str, Any], kind: str) -> str:
    """A step key not used yet in the draft: the type with the first free number (``wait_2``)."""
    taken = {s["key"] for s in draft["steps"]}
    base = re.sub(r"[^a-z0-9_]", "_", kind.lower())[:56] or "step"
    if base not in taken:
        return base
    n = 2
    while f"{base}_{n}" in taken:
        n += 1
    return f"{base}_{n}"


def insert_step(draft: dict[str, Any], *, after: str, way: str, step: dict[str, Any]) -> dict[str, Any]:
    """The draft with ``step`` placed on the way ``way`` out of step ``after``: the way now leads to the
    new step, and every way on of the new step leads where the way led before. A new step that must
    leave the journey from the middle of the list is followed by an exit step."""
    draft = copy.deepcopy(draft)
    steps: list[dict[str, Any]] = draft["steps"]
    graph = resolved(steps)
    if after not in graph:
        raise NotFound(f"no step {after!r} in this journey")
    if way not in graph[after]:
        raise InvalidInput(f"step {after!r} has no way on called {way!r}", field="way")
    step = {k: v for k, v in step.items() if k not in _TARGET_FIELDS}
    if step.get("key") in graph:
        raise InvalidInput(f"step key {step['key']!r} is used already", field="key")
    step.setdefault("key", new_key(draft, step["type"]))
    target = graph[after][way]
    position = _index(steps, after) + 1
    added = [step]
    # Only the last step of the list leaves by itself; a split's arms always name their step.
    if target is None and step["type"] != "exit" and (position < len(steps) or step["type"] == "split"):
        end = {"key": new_key({"steps": [*steps, step]}, "end"), "type": "exit", "reason": "end"}
        added.append(end)
        graph[end["key"]] = {}
        target = end["key"]
    if step["type"] == "split":
        step["arms"] = [{**a, "next": a.get("next") or target} for a in step.get("arms", [])]
        graph[step["key"]] = {f"arm:{a['name']}": a["next"] for a in step["arms"]}
    else:
        # A new step, branches too, keeps everyone going where they went until it is told otherwise.
        graph[step["key"]] = {w: target for w in ways(step)}
    graph[after][way] = step["key"]
    steps[position:position] = added
    draft["steps"] = _write(steps, graph)
    return draft


def update_step(
    draft: dict[str, Any], key: str, fields: dict[str, Any], exits: Exits | None = None
) -> dict[str, Any]:
    """The draft with step ``key``'s settings replaced by ``fields`` (its key and type stay) and, for
    each way named in ``exits``, that way leading to the step given (``None``: leave the journey)."""
    draft = copy.deepcopy(draft)
    steps: list[dict[str, Any]] = draft["steps"]
    index = _index(steps, key)
    graph = resolved(steps)
    current = steps[index]
    changed = {k: v for k, v in fields.items() if k not in (*_TARGET_FIELDS, "key", "type")}
    steps[index] = {"key": key, "type": current["type"], **changed}
    if current["type"] == "split":
        graph[key] = resolved([{**steps[index], "key": key}])[key]  # arms carry their own targets
    for way, target in (exits or {}).items():
        if way not in graph[key]:
            raise InvalidInput(f"step {key!r} has no way on called {way!r}", field=way)
        if target is not None and target not in graph:
            raise InvalidInput(f"no step {target!r} in this journey", field=way)
        graph[key][way] = target
    draft["steps"] = _write(steps, graph)
    return draft


def delete_step(draft: dict[str, Any], key: str) -> dict[str, Any]:
    """The draft without step ``key``: every way that led to it leads where it went on (its first way
    on; for an exit step, out of the journey)."""
    draft = copy.deepcopy(draft)
    steps: list[dict[str, Any]] = draft["steps"]
    index = _index(steps, key)
    if len(steps) == 1:
        raise InvalidInput("a journey needs at least one step", field="steps")
    graph = resolved(steps)
    onward = next(iter(graph[key].values()), None)
    if onward == key:
        onward = None
    del graph[key]
    for exits in graph.values():
        for way, target in exits.items():
            if target == key:
                exits[way] = onward
    del steps[index]
    draft["steps"] = _write(steps, graph)
    return draft
