"""Dry runs: replay the last N days of stored events through a journey without writing or sending.

The replay walks the events that matter to the journey (its trigger, the events it waits for, its goal)
in time order with a simulated clock, moving each simulated run as the engine would: waits end,
wait-for-event exits, splits assign the same sticky arms, re-entry rules apply. Branches are evaluated
on the profile as stored now, with the trigger's properties (the stored profile has no history of its
traits). Sends are counted, and checked against the contact policy's frequency cap for the profile's
value tier and against quiet hours, so the report shows who would have been messaged, capped or
deferred. Nothing is written: the result is the journey's reach before it is switched on.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from lifeloop.conditions import StoredProfile, evaluate
from lifeloop.errors import InvalidInput
from lifeloop.journeys import definition as d
from lifeloop.journeys.engine import STEPS_PER_TURN, assign_arm, definition_of
from lifeloop.journeys.service import get_journey
from lifeloop.store.schema import utcnow


@dataclass
class _Run:
    profile_id: int
    entered: datetime
    trigger: dict[str, Any]
    step: str | None
    in_wait: bool = False
    wait_event: str | None = None
    due: datetime | None = None
    done: bool = False


@dataclass
class _Report:
    entered: int = 0
    users: set[int] = field(default_factory=set)
    reached: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    messaged: int = 0
    capped: int = 0
    deferred: int = 0
    converted: int = 0
    exited: dict[str, int] = field(default_factory=dict)
    inside: int = 0

    def step(self, key: str, outcome: str) -> None:
        self.reached[key] = self.reached.get(key, 0) + 1
        per = self.outcomes.setdefault(key, {})
        per[outcome] = per.get(outcome, 0) + 1


class _Replay:
    def __init__(
        self, conn: Connection, workspace_id: int, journey_id: int, defn: d.Definition, now: datetime
    ):
        from lifeloop.messaging.service import load_policy
        from lifeloop.workspaces.service import get_workspace

        self.conn, self.ws, self.journey_id, self.defn, self.now = conn, workspace_id, journey_id, defn, now
        self.policy = load_policy(conn, workspace_id)
        self.workspace_zone = get_workspace(conn, workspace_id).timezone
        self.report = _Report()
        self.runs: dict[int, list[_Run]] = {}
        self.timers: list[tuple[datetime, int, _Run]] = []
        self.sends: dict[int, list[datetime]] = {}
        self.last_entry: dict[int, datetime] = {}
        self._seq = 0
        self._profiles: dict[int, Any] = {}

    def profile(self, pid: int) -> Any:
        from lifeloop.profiles.service import get_profile

        if pid not in self._profiles:
            self._profiles[pid] = get_profile(self.conn, self.ws, pid)
        return self._profiles[pid]

    # The clock ----------------------------------------------------------------------------------
    def until(self, moment: datetime) -> None:
        while self.timers and self.timers[0][0] <= moment:
            due, _, run = heapq.heappop(self.timers)
            if not run.done and run.due == due:
                self.advance(run, due)

    def park(self, run: _Run, due: datetime) -> None:
        run.due = due
        self._seq += 1
        heapq.heappush(self.timers, (due, self._seq, run))

    # Events -------------------------------------------------------------------------------------
    def event(self, pid: int, name: str, props: dict[str, Any], at: datetime, message_id: str) -> None:
        self.until(at)
        goal = self.defn.goal
        for run in self.runs.get(pid, []):
            converts = (
                goal is not None
                and name == goal.event
                and run.entered <= at <= run.entered + d.parse_duration(goal.within)
                and run.trigger.get("message_id") != message_id
                and not run.trigger.get("converted")
            )
            if converts and goal is not None:
                run.trigger["converted"] = True
                self.report.converted += 1
                if goal.exit and not run.done:
                    self.finish(run, "goal")
            if not run.done and run.in_wait and run.wait_event == name:
                step = self.defn.by_key[str(run.step)]
                theirs = run.trigger.get("properties") or {}
                if all(props.get(k) == theirs.get(v) for k, v in step.match.items()):
                    self.advance(run, at, answered=True)
        trigger_name, wanted = self.defn.trigger_event()
        if name == trigger_name and all(props.get(k) == v for k, v in wanted.items()):
            self.maybe_enter(pid, props, at, message_id)

    def maybe_enter(self, pid: int, props: dict[str, Any], at: datetime, message_id: str) -> None:
        mode = self.defn.reentry.mode
        inside = any(not r.done for r in self.runs.get(pid, []))
        if mode == "once" and pid in self.last_entry:
            return
        if mode == "not_while_inside" and inside:
            return
        period = d.parse_duration(str(self.defn.reentry.period)) if mode == "once_per_period" else None
        if period is not None and pid in self.last_entry and at - self.last_entry[pid] < period:
            return
        view = StoredProfile(self.conn, self.ws, pid, now=at)
        for where in ("trigger.where", "trigger.condition"):
            condition = self.defn.conditions.get(where)
            if condition is not None and not evaluate(condition, view, event=props):
                return
        run = _Run(pid, at, {"message_id": message_id, "properties": props}, self.defn.steps[0].key)
        self.runs.setdefault(pid, []).append(run)
        self.last_entry[pid] = at
        self.report.entered += 1
        self.report.users.add(pid)
        self.advance(run, at)

    # Steps --------------------------------------------------------------------------------------
    def finish(self, run: _Run, reason: str) -> None:
        run.done = True
        self.report.exited[reason] = self.report.exited.get(reason, 0) + 1

    def advance(self, run: _Run, at: datetime, *, answered: bool = False) -> None:
        defn = self.defn
        for _ in range(STEPS_PER_TURN):
            if run.step is None:
                self.finish(run, "completed")
                return
            step = defn.by_key[run.step]
            if run.in_wait:
                run.in_wait = False
                if isinstance(step, d.WaitForStep):
                    outcome = "event" if answered else "timeout"
                    target = (step.on_event if answered else step.on_timeout) or defn.next_of(step)
                else:
                    outcome, target = "waited", defn.next_of(step)
                answered = False
                self.report.step(step.key, outcome)
            else:
                target = self.run_step(run, step, at)
                if run.in_wait or run.done:
                    return
            run.step = target

    def run_step(self, run: _Run, step: Any, at: datetime) -> str | None:
        defn, pid = self.defn, run.profile_id
        props = run.trigger.get("properties") or {}
        if isinstance(step, d.WaitStep):
            until = self.wait_end(run, step, at)
            if until is not None and until > at:
                run.in_wait = True
                self.park(run, until)
                return run.step
            self.report.step(step.key, "waited")
            return defn.next_of(step)
        if isinstance(step, d.WaitForStep):
            run.in_wait, run.wait_event = True, step.event
            self.park(run, at + d.parse_duration(step.timeout))
            return run.step
        if isinstance(step, d.BranchStep):
            holds = evaluate(
                defn.conditions[step.key], StoredProfile(self.conn, self.ws, pid, now=at), event=props
            )
            self.report.step(step.key, "true" if holds else "false")
            if holds:
                return step.then or defn.next_of(step)
            if step.otherwise is None:
                self.finish(run, "branch")
            return step.otherwise
        if isinstance(step, d.SplitStep):
            arm = assign_arm(step, self.journey_id, pid)
            self.report.step(step.key, arm.name if arm else "holdout")
            if arm is None:
                self.finish(run, "holdout")
                return None
            return arm.next
        if isinstance(step, d.SendStep):
            self.report.step(step.key, self.send(pid, step, at))
            return defn.next_of(step)
        if isinstance(step, d.ExitStep):
            self.report.step(step.key, "exit")
            self.finish(run, step.reason)
            return None
        self.report.step(step.key, "would_run")
        return defn.next_of(step)

    def wait_end(self, run: _Run, step: d.WaitStep, at: datetime) -> datetime | None:
        from lifeloop.journeys.engine import trait_moment
        from lifeloop.messaging.policy import at_local, zone

        if step.duration is not None:
            return at + d.parse_duration(step.duration)
        tz = zone(self.profile(run.profile_id).timezone, self.workspace_zone)
        if step.until_time is not None:
            return d.next_local(at, d.parse_clock(step.until_time), tz)
        moment = trait_moment(self.profile(run.profile_id).traits.get(str(step.until_trait)))
        if moment is None:
            return None
        offset = d.parse_duration(step.offset, field="offset", signed=True) if step.offset else timedelta()
        return at_local(moment.date() + offset, d.parse_clock(step.at), tz) if step.at else moment + offset

    def send(self, pid: int, step: d.SendStep, at: datetime) -> str:
        from lifeloop.messaging.policy import in_quiet_hours, tier_of, zone

        profile = self.profile(pid)
        if step.transactional:
            self.report.messaged += 1
            return "messaged"
        cap = self.policy.cap_for(tier_of(profile.traits))
        recent = [t for t in self.sends.get(pid, []) if t > at - timedelta(days=cap.days)]
        if len(recent) >= cap.limit:
            self.report.capped += 1
            return "capped"
        self.sends.setdefault(pid, []).append(at)
        self.report.messaged += 1
        local = at.astimezone(zone(profile.timezone, self.workspace_zone))
        if in_quiet_hours(self.policy, local):
            self.report.deferred += 1
            return "deferred_quiet_hours"
        return "messaged"


def dry_run(
    conn: Connection,
    workspace_id: int,
    key: str,
    *,
    days: int = 30,
    version: str | int = "draft",
    now: datetime | None = None,
) -> dict[str, Any]:
    """How many users the journey would have entered over the last ``days``, and what then happened."""
    from lifeloop.events.store import events_between

    now = now or utcnow()
    journey = get_journey(conn, workspace_id, key)
    if str(version) == "draft":
        defn = d.load_definition(journey.draft)
    else:
        try:
            defn = definition_of(conn, workspace_id, journey.id, int(version))
        except Exception:
            raise InvalidInput(f"journey {key!r} has no version {version}", field="version") from None
    trigger_name, _ = defn.trigger_event()
    if trigger_name is None:
        raise InvalidInput(
            f"a dry run replays events; a {defn.trigger.kind} trigger enters by time or by hand "
            "(its audience is the segment or the date trait's holders: preview those instead)",
            field="trigger",
        )
    names = {trigger_name} | {s.event for s in defn.steps if isinstance(s, d.WaitForStep)}
    if defn.goal is not None:
        names.add(defn.goal.event)
    replay = _Replay(conn, workspace_id, journey.id, defn, now)
    for row in events_between(conn, workspace_id, now - timedelta(days=days), now, sorted(names)):
        replay.event(
            row.profile_id, str(row.event), dict(row.properties or {}), row.timestamp, row.message_id
        )
    replay.until(now)
    report = replay.report
    report.inside = sum(1 for runs in replay.runs.values() for r in runs if not r.done)
    return {
        "journey": key,
        "version": str(version),
        "days": days,
        "entered": report.entered,
        "users": len(report.users),
        "steps": {
            k: {"reached": n, "outcomes": report.outcomes.get(k, {})} for k, n in report.reached.items()
        },
        "messaged": report.messaged,
        "capped": report.capped,
        "deferred_quiet_hours": report.deferred,
        "converted": report.converted,
        "exited": report.exited,
        "still_inside": report.inside,
        "sent_nothing": True,
    }
