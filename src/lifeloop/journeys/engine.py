"""The durable journey engine: one row per user entry (``journey_runs``), advanced in transactions.

A run is always parked in the database: ``status = 'waiting'`` with ``due_at`` (run the step now, a
wait's end, a wait-for-event's timeout). Workers claim due runs in batches (``FOR UPDATE SKIP LOCKED``
on PostgreSQL) and advance them in the claiming transaction. Every side effect of a step is a write in
that same transaction — a message queued in the outbox under a key derived from (journey, version,
user, entry, step), a tag, a trait, a webhook call queued as a webhook message — so a crash rolls the
step back whole and the next worker does it once. Nothing waits in memory, in a thread or a process.

Events reach the engine in the resolver's transaction (``react``): they resume runs waiting for them,
convert goals and start new runs, which are advanced at once up to their first wait, so a welcome
message is in the outbox milliseconds after the follow event is placed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, and_, bindparam, or_, select, update

from lifeloop.conditions import StoredProfile, evaluate
from lifeloop.errors import Conflict, InvalidInput, LifeloopError, NotFound
from lifeloop.events.messages import Message
from lifeloop.experiments import sticky_fraction, sticky_pick
from lifeloop.journeys import definition as d
from lifeloop.journeys.models import journey_runs, journey_steps, journey_versions, journeys
from lifeloop.store.rows import insert_rows
from lifeloop.store.schema import utcnow

log = logging.getLogger(__name__)

# Runs started by one batch of events that are advanced in the same transaction; more wait for a worker.
INLINE_LIMIT = 500
# Steps one run takes in one go (a loop of branches without a wait must not hold a transaction).
STEPS_PER_TURN = 50
# Journeys may trigger on each other's events; this bounds how deep that goes in one transaction.
MAX_DEPTH = 3
FINAL = ("completed", "exited", "failed")

# By database too: a process may use several databases (the tests do), each with its own journey 1.
_definitions: dict[tuple[str, int, int], d.Definition] = {}


def definition_of(conn: Connection, workspace_id: int, journey_id: int, version: int) -> d.Definition:
    """A published version (immutable, so cached for the life of the process)."""
    key = (str(conn.engine.url), journey_id, version)
    if key not in _definitions:
        row = conn.execute(
            select(journey_versions.c.definition).where(
                journey_versions.c.workspace_id == workspace_id,
                journey_versions.c.journey_id == journey_id,
                journey_versions.c.version == version,
            )
        ).scalar_one()
        _definitions[key] = d.load_definition(row)
    return _definitions[key]


@dataclass(frozen=True, slots=True)
class Occurrence:
    """An event as the engine sees it: who, what, when, with which properties."""

    profile_id: int
    name: str
    properties: dict[str, Any]
    timestamp: datetime
    message_id: str

    def as_trigger(self) -> dict[str, Any]:
        return {
            "event": self.name,
            "message_id": self.message_id,
            "timestamp": self.timestamp.isoformat(),
            "properties": self.properties,
        }


@dataclass
class Turn:
    """What one transaction's steps write at the end: step log rows, run updates and own events."""

    workspace_id: int
    now: datetime
    depth: int = 0
    logs: list[dict[str, Any]] = field(default_factory=list)
    emits: list[tuple[int, Message]] = field(default_factory=list)
    workspace_timezone: str | None = None

    def emit(self, profile_id: int, name: str, properties: dict[str, Any]) -> None:
        message = Message(
            type="track",
            message_id=f"journey:{uuid.uuid4().hex}",
            timestamp=self.now,
            received_at=self.now,
            event=name,
            properties=properties,
        )
        self.emits.append((profile_id, message))

    def flush(self, conn: Connection) -> None:
        if self.logs:
            columns = list(self.logs[0])
            insert_rows(conn, journey_steps, columns, [tuple(r[c] for c in columns) for r in self.logs])
            self.logs = []
        if self.emits:
            from lifeloop.events.own import record_own_events

            pending, self.emits = self.emits, []
            global _depth
            outer, _depth = _depth, self.depth + 1
            try:
                record_own_events(conn, self.workspace_id, pending)
            finally:
                _depth = outer


# The depth of journey-made events being recorded right now (own events reach ``on_own_events``).
_depth = 0


# --- entering ------------------------------------------------------------------------------------


def _entry_keys(defn: d.Definition, source_key: str) -> str:
    return "once" if defn.reentry.mode == "once" else source_key[:255]


def _blocked_by_reentry(
    conn: Connection,
    workspace_id: int,
    journey_id: int,
    defn: d.Definition,
    pids: Sequence[int],
    now: datetime,
) -> set[int]:
    """Profiles the re-entry rule keeps out (``once`` is kept out by the unique entry key instead)."""
    mode = defn.reentry.mode
    if mode in ("once", "always") or not pids:
        return set()
    found: set[int] = set()
    for start in range(0, len(pids), 900):
        chunk = pids[start : start + 900]
        query = select(journey_runs.c.profile_id).where(
            journey_runs.c.workspace_id == workspace_id,
            journey_runs.c.journey_id == journey_id,
            journey_runs.c.profile_id.in_(chunk),
        )
        if mode == "not_while_inside":
            query = query.where(journey_runs.c.status == "waiting")
        else:
            period = d.parse_duration(str(defn.reentry.period))
            query = query.where(journey_runs.c.entered_at > now - period)
        found.update(conn.execute(query).scalars())
    return found


def enter(
    conn: Connection,
    workspace_id: int,
    journey_id: int,
    version: int,
    entries: Sequence[tuple[int, str, dict[str, Any] | None]],
    *,
    now: datetime,
    turn: Turn | None = None,
    check_condition: bool = True,
    due_at: dict[int, datetime] | None = None,
) -> list[int]:
    """Start runs for ``(profile id, source key, trigger)`` entries that the rules let in; their ids.

    The source key names what caused the entry (an event's message id, a schedule's fire time, a
    manual request's key), so the same cause never enters twice; the re-entry rule decides the rest.
    """
    defn = definition_of(conn, workspace_id, journey_id, version)
    condition = defn.conditions.get("trigger.condition")
    blocked = _blocked_by_reentry(conn, workspace_id, journey_id, defn, sorted({e[0] for e in entries}), now)
    rows: list[dict[str, Any]] = []
    taken: set[int] = set()
    for pid, source_key, trigger in entries:
        if pid in blocked or (pid in taken and defn.reentry.mode != "always"):
            continue
        if check_condition and condition is not None:
            event_props = (trigger or {}).get("properties") or {}
            if not evaluate(condition, StoredProfile(conn, workspace_id, pid, now=now), event=event_props):
                continue
        taken.add(pid)
        rows.append(
            {
                "workspace_id": workspace_id,
                "journey_id": journey_id,
                "version": version,
                "profile_id": pid,
                "entry_key": _entry_keys(defn, source_key),
                "status": "waiting",
                "step": defn.steps[0].key,
                "due_at": (due_at or {}).get(pid, now),
                "in_wait": False,
                "wait_event": None,
                "steps_done": 0,
                "trigger": trigger,
                "entered_at": now,
                "updated_at": now,
            }
        )
    inserted = _insert_runs(conn, rows)
    if inserted and turn is not None:
        split = next((s for s in defn.steps if isinstance(s, d.SplitStep)), None)
        for run_id, pid in inserted:
            props: dict[str, Any] = {"journey_id": defn.key, "version": version, "run_id": run_id}
            if split is not None:  # the analytics' treatment / control, known ahead (sticky)
                props["group"] = "treatment" if assign_arm(split, journey_id, pid) else "control"
            turn.emit(pid, "Journey Entered", props)
    return [run_id for run_id, _pid in inserted]


# PostgreSQL: one constant statement taking the runs as one JSON array, unpacked in C (as the events
# store does). A multi-row VALUES statement is parsed by psycopg in Python on every call: 11.6 of the
# 21 s that entering 50,000 members took went there.
_RUN_FIELDS = (
    ("workspace_id", "bigint"), ("journey_id", "bigint"), ("version", "integer"), ("profile_id", "bigint"),
    ("entry_key", "text"), ("status", "text"), ("step", "text"), ("due_at", "timestamptz"),
    ("in_wait", "boolean"), ("wait_event", "text"), ("steps_done", "integer"), ("trigger", "jsonb"),
    ("entered_at", "timestamptz"), ("updated_at", "timestamptz"),
)  # fmt: skip
_RUN_NAMES = ['"' + name + '"' for name, _ in _RUN_FIELDS]  # "trigger" is a reserved word
_PG_INSERT_RUNS = (
    f"INSERT INTO journey_runs ({', '.join(_RUN_NAMES)}) "
    f"SELECT {', '.join('r.' + name for name in _RUN_NAMES)} "
    f"FROM json_to_recordset(%s::json) AS r"
    f"({', '.join(f'{name} {kind}' for name, (_, kind) in zip(_RUN_NAMES, _RUN_FIELDS, strict=True))}) "
    "ON CONFLICT (journey_id, profile_id, entry_key) DO NOTHING RETURNING id, profile_id"
)
_PG_RUNS_PER_STATEMENT = 20_000


def _insert_runs(conn: Connection, rows: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Insert runs, skipping entry keys already taken; (run id, profile id) of the new runs."""
    if not rows:
        return []
    if conn.dialect.name == "postgresql":
        inserted: list[tuple[int, int]] = []
        for start in range(0, len(rows), _PG_RUNS_PER_STATEMENT):
            document = orjson.dumps(rows[start : start + _PG_RUNS_PER_STATEMENT]).decode()
            inserted += [(run_id, pid) for run_id, pid in conn.exec_driver_sql(_PG_INSERT_RUNS, (document,))]
        return inserted
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    # An executemany (one cached compilation, sent as multi-row VALUES), as ``outbox.insert_new``.
    statement = (
        insert(journey_runs)
        .on_conflict_do_nothing(index_elements=["journey_id", "profile_id", "entry_key"])
        .returning(journey_runs.c.id, journey_runs.c.profile_id)
    )
    return [(run_id, pid) for run_id, pid in conn.execute(statement, rows)]


# --- advancing -----------------------------------------------------------------------------------


def assign_arm(step: d.SplitStep, journey_id: int, profile_id: int) -> d.Arm | None:
    """The arm of a split for a user, or None for the holdout group."""
    roll = sticky_fraction("split", journey_id, step.key, step.seed, profile_id)
    index = sticky_pick(roll, step.holdout, [a.weight for a in step.arms])
    return None if index is None else step.arms[index]


def _zone_of(conn: Connection, workspace_id: int, profile_id: int, turn: Turn) -> Any:
    from lifeloop.messaging.policy import zone
    from lifeloop.profiles.service import get_profile
    from lifeloop.workspaces.service import get_workspace

    if turn.workspace_timezone is None:
        turn.workspace_timezone = get_workspace(conn, workspace_id).timezone
    try:
        return zone(get_profile(conn, workspace_id, profile_id).timezone, turn.workspace_timezone)
    except NotFound:
        return zone(None, turn.workspace_timezone)


def trait_moment(value: Any) -> datetime | None:
    """A date or time trait as an aware datetime (a bare date is midnight UTC), None if unreadable."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _wait_until(conn: Connection, run: dict[str, Any], step: d.WaitStep, turn: Turn) -> datetime | None:
    now = turn.now
    if step.duration is not None:
        return now + d.parse_duration(step.duration)
    tz = _zone_of(conn, turn.workspace_id, run["profile_id"], turn)
    if step.until_time is not None:
        return d.next_local(now, d.parse_clock(step.until_time), tz)
    from lifeloop.messaging.policy import at_local
    from lifeloop.profiles.service import get_profile

    traits = get_profile(conn, turn.workspace_id, run["profile_id"]).traits
    moment = trait_moment(traits.get(str(step.until_trait)))
    if moment is None:
        return None
    offset = d.parse_duration(step.offset, field="offset", signed=True) if step.offset else timedelta()
    if step.at is not None:
        return at_local(moment.date() + offset, d.parse_clock(step.at), tz)
    return moment + offset


class _KeyTaken(Exception):
    """A batched send's idempotency key was already in the outbox: redo the batch one send at a time."""


class _Engine:
    """Advances runs of one workspace inside one transaction.

    Sends are batched: the profiles of the batch are read in bulk at the first send (read again after a
    step that changes them), the template, workspace and policy once, and the messages are rendered at
    once but written in multi-row inserts by ``save``. ``eager`` sends each message on its own with
    ``send_message``, as the batch is redone when a key turns out to be taken (``_KeyTaken``).
    """

    def __init__(self, conn: Connection, turn: Turn, *, eager: bool = False):
        self.conn, self.turn = conn, turn
        self.changed: dict[int, dict[str, Any]] = {}
        self.eager = eager
        self._wanted: set[int] = set()
        self._profiles: dict[int, Any] = {}  # profile id -> Profile, or None: not in bulk (send it alone)
        self._templates: dict[str, Any] = {}
        self._workspace: Any = None
        self._optimize: bool | None = None
        self._sends: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (outbox row, its step log row)

    def expect(self, profile_ids: Iterable[int]) -> None:
        """Profiles this batch may send to: read together at the first send."""
        self._wanted.update(profile_ids)

    def _profile(self, pid: int) -> Any:
        from lifeloop.profiles.service import read_profiles

        if pid not in self._profiles:
            wanted = sorted((self._wanted | {pid}) - self._profiles.keys())
            self._wanted = set()
            found = read_profiles(self.conn, self.turn.workspace_id, wanted)
            self._profiles.update({p: found.get(p) for p in wanted})
        return self._profiles[pid]

    def _changed_profile(self, pid: int) -> None:
        """A step changed the profile (traits, tags, own events): read it again at its next send."""
        self._profiles.pop(pid, None)

    # One run -------------------------------------------------------------------------------------
    def advance(self, run: dict[str, Any], resumed_by: Occurrence | None = None) -> None:
        defn = definition_of(self.conn, self.turn.workspace_id, run["journey_id"], run["version"])
        self.changed[run["id"]] = run
        try:
            self._steps(run, defn, resumed_by)
        except LifeloopError as error:
            self._finish(run, defn, "failed", "error", error=error.message)
        run["updated_at"] = self.turn.now

    def _steps(self, run: dict[str, Any], defn: d.Definition, resumed_by: Occurrence | None) -> None:
        for _ in range(STEPS_PER_TURN):
            key = run["step"]
            if key is None:
                self._finish(run, defn, "completed", "completed")
                return
            step = defn.by_key.get(key)
            if step is None:  # cannot happen with immutable versions; never strand a run over it
                self._finish(
                    run, defn, "failed", "error", error=f"no step {key!r} in version {run['version']}"
                )
                return
            if run["in_wait"]:
                target = self._resume(run, defn, step, resumed_by)
                resumed_by = None
            else:
                target = self._run_step(run, defn, step)
                if target is _PARKED:
                    return
            if run["status"] != "waiting":
                return
            run["step"] = target
            run["steps_done"] += 1
        run["due_at"] = self.turn.now  # a long chain without waits: continue in the next turn

    def _log(self, run: dict[str, Any], step: Any, outcome: str, outbox_id: int | None = None) -> None:
        self.turn.logs.append(
            {
                "workspace_id": self.turn.workspace_id,
                "run_id": run["id"],
                "journey_id": run["journey_id"],
                "version": run["version"],
                "step": step.key,
                "kind": step.type,
                "outcome": outcome,
                "outbox_id": outbox_id,
                "at": self.turn.now,
            }
        )
        self.turn.emit(
            run["profile_id"],
            "Journey Step Completed",
            {
                "journey_id": definition_of(
                    self.conn, self.turn.workspace_id, run["journey_id"], run["version"]
                ).key,
                "version": run["version"],
                "run_id": run["id"],
                "step": step.key,
                "type": step.type,
                "outcome": outcome,
                **({"arm": run["arm"]} if run.get("arm") else {}),
            },
        )

    def _park(self, run: dict[str, Any], until: datetime, wait_event: str | None = None) -> Any:
        run.update(in_wait=True, due_at=until, wait_event=wait_event)
        return _PARKED

    def _resume(
        self, run: dict[str, Any], defn: d.Definition, step: Any, by: Occurrence | None
    ) -> str | None:
        run.update(in_wait=False, wait_event=None, due_at=self.turn.now)
        if isinstance(step, d.WaitForStep):
            if by is not None:
                self._log(run, step, "event")
                return step.on_event or defn.next_of(step)
            self._log(run, step, "timeout")
            return step.on_timeout or defn.next_of(step)
        self._log(run, step, "waited")
        return defn.next_of(step)

    def _run_step(self, run: dict[str, Any], defn: d.Definition, step: Any) -> Any:
        conn, ws, now = self.conn, self.turn.workspace_id, self.turn.now
        pid = run["profile_id"]
        trigger_props = (run.get("trigger") or {}).get("properties") or {}
        match step:
            case d.WaitStep():
                until = _wait_until(conn, run, step, self.turn)
                if until is not None and until > now:
                    return self._park(run, until)
                self._log(run, step, "waited" if until is not None else "no_date")
                return defn.next_of(step)
            case d.WaitForStep():
                return self._park(run, now + d.parse_duration(step.timeout), wait_event=step.event)
            case d.BranchStep():
                view = StoredProfile(conn, ws, pid, now=now)
                holds = evaluate(defn.conditions[step.key], view, event=trigger_props)
                self._log(run, step, "true" if holds else "false")
                if holds:
                    return step.then or defn.next_of(step)
                if step.otherwise is None:
                    self._finish(run, defn, "exited", "branch")
                return step.otherwise
            case d.SplitStep():
                arm = assign_arm(step, run["journey_id"], pid)
                run["arm"] = arm.name if arm else "holdout"
                self._log(run, step, run["arm"])
                if arm is None:
                    self._finish(run, defn, "exited", "holdout")
                    return None
                return arm.next
            case d.SendStep():
                self._send(run, step, trigger_props)
                return defn.next_of(step)
            case d.TagStep():
                self._changed_profile(pid)
                self._log(run, step, self._tag(pid, step))
                return defn.next_of(step)
            case d.SetTraitStep():
                self._changed_profile(pid)
                self._set_trait(pid, step)
                self._log(run, step, "set")
                return defn.next_of(step)
            case d.WebhookStep():
                body = {"journey": defn.key, "step": step.key, "profile_id": pid, "event": trigger_props}
                entry = self._queue(
                    run, step, channel="webhook", recipient=step.url, content=body | step.body
                )
                self._log(run, step, "queued", entry)
                return defn.next_of(step)
            case d.RichMenuStep():
                entry = self._queue(run, step, channel="line", content={"rich_menu_id": step.rich_menu_id})
                self._log(run, step, "queued", entry)
                return defn.next_of(step)
            case d.IssueCouponStep() | d.AwardPointsStep() | d.AdvisorTaskStep():
                self._changed_profile(pid)
                self._log(run, step, self._engage(run, defn, step))
                return defn.next_of(step)
            case d.ExitStep():
                self._log(run, step, "exit")
                self._finish(run, defn, "exited", step.reason)
                return None
        raise AssertionError(f"unknown step {step!r}")

    # Side effects, all in this transaction ----------------------------------------------------------
    def _key(self, run: dict[str, Any], step: Any) -> str:
        return (
            f"journey:{run['journey_id']}:v{run['version']}:p{run['profile_id']}"
            f":r{run['id']}:{step.key}:{run['steps_done']}"
        )

    def _engage(self, run: dict[str, Any], defn: d.Definition, step: Any) -> str:
        """Issue the coupon, award the points or create the advisor's task, keyed by this step of this
        run (a retried batch issues nothing twice). A refusal (a coupon template used up or archived)
        is the step's outcome, and the run goes on; it is kept out of the batch by a savepoint."""
        from lifeloop.engagement.advisors.tasks import create_task
        from lifeloop.engagement.coupons.service import CouponRefused, issue_coupon
        from lifeloop.engagement.points.ledger import award_points

        conn, ws, now, pid = self.conn, self.turn.workspace_id, self.turn.now, run["profile_id"]
        key = self._key(run, step)
        try:
            with conn.begin_nested():
                if isinstance(step, d.IssueCouponStep):
                    issue_coupon(conn, ws, pid, step.template, key=key, now=now, source="journey")
                    return "issued"
                if isinstance(step, d.AwardPointsStep):
                    expires = now + d.parse_duration(step.expires) if step.expires else None
                    award_points(conn, ws, pid, step.points, key=key, reason=step.reason, now=now,
                                 expires_at=expires)  # fmt: skip
                    return "awarded"
                due = now + d.parse_duration(step.due) if step.due else None
                create_task(conn, ws, pid, key=key, title=step.title, kind=step.kind, due_at=due,
                            source=f"journey:{defn.key}", now=now, note=step.note)  # fmt: skip
                return "task_created"
        except CouponRefused as refused:
            return f"refused:{refused.reason}"

    def _queue(
        self,
        run: dict[str, Any],
        step: Any,
        *,
        channel: str,
        content: dict[str, Any],
        recipient: str | None = None,
    ) -> int:
        from lifeloop.messaging.service import send_message

        entry, _created = send_message(
            self.conn,
            self.turn.workspace_id,
            channel=channel,
            content=content,
            profile_id=None if recipient else run["profile_id"],
            recipient=recipient,
            transactional=True,
            optimize_send_time=False,
            idempotency_key=self._key(run, step),
        )
        return entry.id

    def _send(self, run: dict[str, Any], step: d.SendStep, trigger_props: dict[str, Any]) -> None:
        from lifeloop.messaging.service import send_message

        pid = run["profile_id"]
        if step.channel == "best":
            reachable = reachable_channels(self.conn, self.turn.workspace_id, pid)
            choice = next(((c, t) for c, t in step.templates.items() if c in reachable), None)
            if choice is None:
                self._log(run, step, "unreachable")
                return
            channel, template = choice
        else:
            channel, template = step.channel, str(step.template)
        profile = None if self.eager else self._profile(pid)
        if profile is None:  # one by one (merged or missing profiles too: send_message says what happens)
            self._write_sends()
            entry, _created = send_message(
                self.conn,
                self.turn.workspace_id,
                channel=channel,
                template=template,
                profile_id=pid,
                transactional=step.transactional,
                idempotency_key=self._key(run, step),
                event=trigger_props,
            )
            self._log(run, step, "dead" if entry.status == "dead" else "queued", entry.id)
            return
        key = self._key(run, step)
        row = self._render(profile, channel, template, step.transactional, key, trigger_props)
        self._log(run, step, "dead" if row["status"] == "dead" else "queued")
        self._sends.append((row, self.turn.logs[-1]))

    def _render(
        self,
        profile: Any,
        channel: str,
        key: str,
        transactional: bool,
        idempotency_key: str,
        event: dict[str, Any],
    ) -> dict[str, Any]:
        """The outbox row ``send_message`` would write for a profile read in bulk (same checks, errors)."""
        from lifeloop.messaging.outbox import outbox_values
        from lifeloop.messaging.service import load_policy
        from lifeloop.messaging.templates.render import TemplateRenderError
        from lifeloop.messaging.templates.service import context_of, get_template, render_template
        from lifeloop.workspaces.service import get_workspace

        ws = self.turn.workspace_id
        if key not in self._templates:
            self._templates[key] = get_template(self.conn, ws, key)
        template = self._templates[key]
        if template.channel != channel:
            raise InvalidInput(f"template {key!r} is for {template.channel}, not {channel}", field="template")
        if self._workspace is None:
            self._workspace = get_workspace(self.conn, ws)
        context, locale = context_of(profile, self._workspace, event=event)
        dead_reason: str | None = None
        try:
            content = render_template(template, context, locale=locale).content
        except TemplateRenderError as error:
            dead_reason = f"template {key!r} did not render: {error.message}"
            content = {"template_error": error.message}
        if self._optimize is None:
            self._optimize = load_policy(self.conn, ws).send_time_optimization
        return outbox_values(
            ws,
            channel=channel,
            content=content,
            idempotency_key=idempotency_key,
            profile_id=profile.id,
            template=key,
            transactional=transactional,
            optimize_send_time=self._optimize,
            dead_reason=dead_reason,
        )

    def _write_sends(self) -> None:
        """The batched sends' outbox rows, in the order they were sent; their ids into the step log."""
        from lifeloop.messaging.outbox import insert_new

        if not self._sends:
            return
        sends, self._sends = self._sends, []
        ids = insert_new(self.conn, [row for row, _log in sends])
        if ids is None:
            raise _KeyTaken
        for row, logged in sends:
            logged["outbox_id"] = ids[row["idempotency_key"]]

    def _tag(self, pid: int, step: d.TagStep) -> str:
        from lifeloop.audience.service import add_manual_tag, remove_manual_tag

        now = self.turn.now
        try:
            if step.type == "add_tag":
                expires = now + d.parse_duration(step.expires) if step.expires else None
                add_manual_tag(self.conn, self.turn.workspace_id, pid, step.tag, expires_at=expires, now=now)
                return "added"
            remove_manual_tag(self.conn, self.turn.workspace_id, pid, step.tag, now=now)
            return "removed"
        except NotFound:
            return "not_held"
        except Conflict:
            return "held_by_rule"

    def _set_trait(self, pid: int, step: d.SetTraitStep) -> None:
        from lifeloop.audience.service import evaluate_profiles
        from lifeloop.lifecycle.service import assign_stages
        from lifeloop.profiles.service import set_trait

        ws, now = self.turn.workspace_id, self.turn.now
        if set_trait(self.conn, ws, step.trait, {pid: step.value}, now=now):
            assign_stages(self.conn, ws, [pid], now=now, reason="journey")
            evaluate_profiles(self.conn, ws, [pid], now=now, reason="journey")

    def _finish(
        self, run: dict[str, Any], defn: d.Definition, status: str, reason: str, *, error: str | None = None
    ) -> None:
        run.update(
            status=status,
            exit_reason=reason,
            exited_at=self.turn.now,
            due_at=None,
            in_wait=False,
            wait_event=None,
            error=error,
        )
        self.turn.emit(
            run["profile_id"],
            "Journey Exited",
            {
                "journey_id": defn.key,
                "version": run["version"],
                "run_id": run["id"],
                "reason": reason,
                **({"arm": run["arm"]} if run.get("arm") else {}),
            },
        )

    # Writing ---------------------------------------------------------------------------------------
    def save(self) -> None:
        self._write_sends()
        if not self.changed:
            return
        columns = (
            "status", "step", "due_at", "in_wait", "wait_event", "steps_done", "arm",
            "exited_at", "exit_reason", "updated_at", "error", "converted_at", "conversion_value",
        )  # fmt: skip
        statement = (
            update(journey_runs)
            .where(journey_runs.c.workspace_id == bindparam("b_ws"), journey_runs.c.id == bindparam("b_id"))
            .values({c: bindparam(f"b_{c}") for c in columns})
        )
        params = [
            {"b_ws": self.turn.workspace_id, "b_id": run["id"], **{f"b_{c}": run.get(c) for c in columns}}
            for run in self.changed.values()
        ]
        self.conn.execute(statement, params)
        self.changed = {}


_PARKED = object()


def reachable_channels(conn: Connection, workspace_id: int, profile_id: int) -> list[str]:
    """Channels on which the profile has an address and has not unsubscribed."""
    from lifeloop.messaging.policy import CHANNEL_IDENTITY, consents_of
    from lifeloop.profiles.service import get_profile

    try:
        profile = get_profile(conn, workspace_id, profile_id)
    except NotFound:
        return []
    kinds = {identity["kind"] for identity in profile.identities}
    consents = consents_of(conn, workspace_id, profile.id)
    return [
        channel
        for channel, kind in CHANNEL_IDENTITY.items()
        if kind in kinds and consents.get(channel) != "unsubscribed"
    ]


_RUN_COLUMNS = [c for c in journey_runs.c]


def _load_runs(
    conn: Connection, workspace_id: int, ids: Sequence[int], *, lock: bool
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for start in range(0, len(ids), 900):
        query = (
            select(*_RUN_COLUMNS)
            .where(
                journey_runs.c.workspace_id == workspace_id, journey_runs.c.id.in_(ids[start : start + 900])
            )
            .order_by(journey_runs.c.id)
        )
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        runs += [dict(r._mapping) for r in conn.execute(query)]
    return runs


def _in_batches(conn: Connection, turn: Turn, work: Any) -> int:
    """``work(engine)`` then the engine's writes, with sends batched; redone with each message sent on its
    own (``send_message``) if a batched send's key was already taken, so the outcome is the same."""
    logs, emits = len(turn.logs), len(turn.emits)
    try:
        with conn.begin_nested():
            engine = _Engine(conn, turn)
            moved: int = work(engine)
            engine.save()
        return moved
    except _KeyTaken:
        del turn.logs[logs:], turn.emits[emits:]
    engine = _Engine(conn, turn, eager=True)
    moved = work(engine)
    engine.save()
    return moved


def advance_runs(conn: Connection, workspace_id: int, run_ids: Sequence[int], *, turn: Turn) -> int:
    """Advance the given runs (those still waiting) as far as they go now; returns how many moved."""

    def work(engine: _Engine) -> int:
        runs = _load_runs(conn, workspace_id, sorted(run_ids), lock=True)
        runs = [r for r in runs if r["status"] == "waiting"]
        engine.expect(r["profile_id"] for r in runs)
        for run in runs:
            engine.advance(run)
        return len(runs)

    moved = _in_batches(conn, turn, work)
    turn.flush(conn)
    return moved


# --- reacting to events --------------------------------------------------------------------------


def _active_journeys(conn: Connection, workspace_id: int, names: Iterable[str]) -> list[Any]:
    names = sorted(set(names))
    if not names:
        return []
    return list(
        conn.execute(
            select(journeys.c.id, journeys.c.version, journeys.c.trigger_name).where(
                journeys.c.workspace_id == workspace_id,
                journeys.c.status == "active",
                journeys.c.trigger_kind == "event",
                journeys.c.trigger_name.in_(names),
            )
        )
    )


def _matches(defn: d.Definition, occurrence: Occurrence, wanted: dict[str, Any], conn: Connection) -> bool:
    props = occurrence.properties
    if any(props.get(k) != v for k, v in wanted.items()):
        return False
    where = defn.conditions.get("trigger.where")
    if where is None:
        return True
    from lifeloop.conditions import MemoryProfile

    return evaluate(where, MemoryProfile(now=occurrence.timestamp), event=props)


def react(conn: Connection, workspace_id: int, occurrences: Sequence[Occurrence], *, now: datetime) -> None:
    """Let events resume waiting runs, convert goals and start runs, in the caller's transaction.

    Runs that can move are advanced at once (up to ``INLINE_LIMIT``; the rest stay due for a worker).
    A journey whose step fails here leaves its runs due rather than failing the caller's transaction.
    """
    if not occurrences or _depth > MAX_DEPTH:
        return
    for round_ in _rounds(occurrences):
        _react_round(conn, workspace_id, round_, now=now)


def _rounds(occurrences: Sequence[Occurrence]) -> list[list[Occurrence]]:
    """The k-th event of every profile in round k: a user's later event in the same batch (the order
    placed right after the checkout) must see the run its earlier event started."""
    rounds: list[list[Occurrence]] = []
    seen: dict[int, int] = {}
    for o in occurrences:
        k = seen.get(o.profile_id, 0)
        seen[o.profile_id] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(o)
    return rounds


def _react_round(
    conn: Connection, workspace_id: int, occurrences: Sequence[Occurrence], *, now: datetime
) -> None:
    turn = Turn(workspace_id, now, depth=_depth)
    names = {o.name for o in occurrences}
    _convert_goals(conn, workspace_id, occurrences, names, turn)  # first: a converted run waits no more
    resumed = _resume_waiting(conn, workspace_id, occurrences, names, turn)
    started = _start_runs(conn, workspace_id, occurrences, names, turn)
    runnable = started[:INLINE_LIMIT]
    if resumed or runnable:
        savepoint = conn.begin_nested()
        try:

            def work(engine: _Engine) -> int:
                engine.expect(o.profile_id for o in occurrences)
                for run, by in resumed:
                    engine.advance(dict(run), by)  # a copy: a batch redone starts from the same runs
                if runnable:
                    for run in _load_runs(conn, workspace_id, runnable, lock=False):
                        engine.advance(run)
                return 0

            _in_batches(conn, turn, work)
            turn.flush(conn)
            savepoint.commit()
        except Exception:
            savepoint.rollback()
            turn.logs, turn.emits = [], []
            log.exception("journey steps failed in the event's transaction; a worker will retry them")
            _mark_resumed_due(conn, workspace_id, resumed, now)
    turn.flush(conn)


def _resume_waiting(
    conn: Connection, workspace_id: int, occurrences: Sequence[Occurrence], names: set[str], turn: Turn
) -> list[tuple[dict[str, Any], Occurrence]]:
    awaiting = _awaiting_journeys(conn, workspace_id, names)
    if not awaiting:  # most events (a journey's own among them) are awaited by no step
        return []
    by_profile: dict[int, list[Occurrence]] = {}
    for o in occurrences:
        by_profile.setdefault(o.profile_id, []).append(o)
    pids = sorted(by_profile)
    candidates: list[dict[str, Any]] = []
    for start in range(0, len(pids), 900):
        query = (
            select(*_RUN_COLUMNS)
            .join(journeys, journeys.c.id == journey_runs.c.journey_id)
            .where(
                journey_runs.c.workspace_id == workspace_id,
                journeys.c.workspace_id == workspace_id,
                journeys.c.status == "active",
                journey_runs.c.journey_id.in_(awaiting),
                journey_runs.c.profile_id.in_(pids[start : start + 900]),
                journey_runs.c.status == "waiting",
                journey_runs.c.wait_event.in_(sorted(names)),
            )
            .order_by(journey_runs.c.id)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(of=journey_runs)
        candidates += [dict(r._mapping) for r in conn.execute(query)]
    resumed = []
    for run in candidates:
        defn = definition_of(conn, workspace_id, run["journey_id"], run["version"])
        step = defn.by_key.get(run["step"])
        if not isinstance(step, d.WaitForStep) or not run["in_wait"]:
            continue
        trigger_props = (run.get("trigger") or {}).get("properties") or {}
        for o in by_profile[run["profile_id"]]:
            if o.name != step.event or o.timestamp > run["due_at"]:
                continue
            if o.timestamp < _entered(run) - timedelta(hours=1):
                continue  # an old event imported late does not answer a wait that began after it
            if any(
                o.properties.get(mine) != trigger_props.get(theirs) for mine, theirs in step.match.items()
            ):
                continue
            where = defn.conditions.get(step.key)
            if where is not None and not evaluate(
                where, StoredProfile(conn, workspace_id, run["profile_id"], now=turn.now), event=o.properties
            ):
                continue
            resumed.append((run, o))
            break
    return resumed


def _entered(run: dict[str, Any]) -> datetime:
    """When the run began, in event time: its trigger event's timestamp when it has one."""
    stamp = (run.get("trigger") or {}).get("timestamp")
    if isinstance(stamp, str):
        try:
            return min(datetime.fromisoformat(stamp), run["entered_at"])
        except ValueError:
            pass
    return run["entered_at"]


def _mark_resumed_due(
    conn: Connection, workspace_id: int, resumed: list[tuple[dict[str, Any], Occurrence]], now: datetime
) -> None:
    """After a failed inline turn: the awaited event came, so the wait is over — take the event exit later."""
    # Without the event in hand a worker would take the timeout exit; record the answer instead.
    for run, _by in resumed:
        conn.execute(
            update(journey_runs)
            .where(journey_runs.c.workspace_id == workspace_id, journey_runs.c.id == run["id"])
            .values(due_at=now, wait_event="$answered", updated_at=now)
        )


def _awaiting_journeys(conn: Connection, workspace_id: int, names: set[str]) -> list[int]:
    """Active journeys with a wait-for step on one of ``names`` in any published version (runs finish
    the version they entered; versions are immutable and their definitions cached)."""
    rows = conn.execute(
        select(journeys.c.id, journeys.c.version).where(
            journeys.c.workspace_id == workspace_id, journeys.c.status == "active"
        )
    )
    return [
        row.id
        for row in rows
        if any(
            isinstance(step, d.WaitForStep) and step.event in names
            for version in range(1, row.version + 1)
            for step in definition_of(conn, workspace_id, row.id, version).steps
        )
    ]


def _goal_journeys(conn: Connection, workspace_id: int, names: set[str]) -> list[int]:
    """Journeys with a goal on one of ``names`` in any published version. ``goal_event`` is the latest
    version's; runs inside an older version finish it with its own goal, also once a newer version
    changed or dropped the goal, so the older versions (immutable, cached) are read too."""
    rows = conn.execute(
        select(journeys.c.id, journeys.c.version, journeys.c.goal_event).where(
            journeys.c.workspace_id == workspace_id,
            journeys.c.status != "draft",
            or_(journeys.c.goal_event.in_(sorted(names)), journeys.c.version > 1),
        )
    )
    found = []
    for row in rows:
        older = (definition_of(conn, workspace_id, row.id, v).goal for v in range(1, row.version))
        if row.goal_event in names or any(goal is not None and goal.event in names for goal in older):
            found.append(row.id)
    return found


def _convert_goals(
    conn: Connection, workspace_id: int, occurrences: Sequence[Occurrence], names: set[str], turn: Turn
) -> None:
    goal_journeys = _goal_journeys(conn, workspace_id, names)
    if not goal_journeys:
        return
    by_profile: dict[int, list[Occurrence]] = {}
    for o in occurrences:
        by_profile.setdefault(o.profile_id, []).append(o)
    pids = sorted(by_profile)
    engine = _Engine(conn, turn)
    for start in range(0, len(pids), 900):
        query = (
            select(*_RUN_COLUMNS)
            .where(
                journey_runs.c.workspace_id == workspace_id,
                journey_runs.c.journey_id.in_(sorted(goal_journeys)),
                journey_runs.c.profile_id.in_(pids[start : start + 900]),
                journey_runs.c.converted_at.is_(None),
                or_(journey_runs.c.status == "waiting", journey_runs.c.exited_at.is_not(None)),
            )
            .order_by(journey_runs.c.id)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        for row in conn.execute(query):
            run = dict(row._mapping)
            defn = definition_of(conn, workspace_id, run["journey_id"], run["version"])
            goal = defn.goal
            if goal is None:
                continue
            began = _entered(run)
            window_end = began + d.parse_duration(goal.within)
            trigger_id = (run.get("trigger") or {}).get("message_id")
            for o in by_profile[run["profile_id"]]:
                if o.name != goal.event or o.message_id == trigger_id:
                    continue
                if not began <= o.timestamp <= window_end:
                    continue
                where = defn.conditions.get("goal.where")
                if where is not None and not evaluate(
                    where,
                    StoredProfile(conn, workspace_id, run["profile_id"], now=turn.now),
                    event=o.properties,
                ):
                    continue
                value = o.properties.get(goal.value_property)
                run["converted_at"] = o.timestamp
                run["conversion_value"] = float(value) if isinstance(value, int | float) else 0.0
                engine.changed[run["id"]] = run
                turn.emit(
                    run["profile_id"],
                    "Journey Converted",
                    {
                        "journey_id": defn.key,
                        "version": run["version"],
                        "run_id": run["id"],
                        "value": run["conversion_value"],
                        **({"arm": run["arm"]} if run.get("arm") else {}),
                    },
                )
                if goal.exit and run["status"] == "waiting":
                    engine._finish(run, defn, "exited", "goal")
                run["updated_at"] = turn.now
                break
    engine.save()


def _start_runs(
    conn: Connection, workspace_id: int, occurrences: Sequence[Occurrence], names: set[str], turn: Turn
) -> list[int]:
    started: list[int] = []
    for journey in _active_journeys(conn, workspace_id, names):
        defn = definition_of(conn, workspace_id, journey.id, journey.version)
        trigger_name, wanted = defn.trigger_event()
        entries = [
            (o.profile_id, o.message_id, o.as_trigger())
            for o in occurrences
            if o.name == trigger_name and _matches(defn, o, wanted, conn)
        ]
        if entries:
            started += enter(
                conn, workspace_id, journey.id, journey.version, entries, now=turn.now, turn=turn
            )
    return started


def on_own_events(conn: Connection, workspace_id: int, placed: Sequence[tuple[int, Message]]) -> None:
    """Own events (stage, tag, segment and journey events) as they are recorded: the same ``react``."""
    occurrences = [
        Occurrence(pid, str(m.event), dict(m.properties or {}), m.timestamp, m.message_id)
        for pid, m in placed
    ]
    react(conn, workspace_id, occurrences, now=max((o.timestamp for o in occurrences), default=utcnow()))


# --- workers -------------------------------------------------------------------------------------


def claim_due(conn: Connection, now: datetime, limit: int) -> list[tuple[int, int]]:
    """Lock up to ``limit`` due runs of active journeys; (workspace id, run id) pairs, earliest first."""
    query = (
        select(journey_runs.c.workspace_id, journey_runs.c.id)
        .join(journeys, and_(journeys.c.id == journey_runs.c.journey_id, journeys.c.status == "active"))
        .where(journey_runs.c.status == "waiting", journey_runs.c.due_at <= now)
        .order_by(journey_runs.c.due_at)
        .limit(limit)
        .execution_options(cross_workspace=True)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(of=journey_runs, skip_locked=True)
    return [(r.workspace_id, r.id) for r in conn.execute(query)]


def run_due(engine: Engine, *, now: datetime | None = None, limit: int = 500) -> int:
    """Advance one claimed batch of due runs in one transaction; returns how many runs moved."""
    from lifeloop.store.engine import transaction

    def work(conn: Connection) -> int:
        moment = now or utcnow()
        claimed = claim_due(conn, moment, limit)
        by_workspace: dict[int, list[int]] = {}
        for ws, run_id in claimed:
            by_workspace.setdefault(ws, []).append(run_id)
        moved = 0
        for ws, ids in by_workspace.items():
            moved += _advance_claimed(conn, ws, ids, Turn(ws, moment))
        return moved

    return transaction(engine, work, background=True)


def _advance_claimed(conn: Connection, workspace_id: int, ids: list[int], turn: Turn) -> int:
    def work(engine: _Engine) -> int:
        runs = _load_runs(conn, workspace_id, sorted(ids), lock=False)
        engine.expect(r["profile_id"] for r in runs if r["status"] == "waiting")
        for run in runs:
            if run["status"] != "waiting":
                continue
            answered = run["wait_event"] == "$answered"
            engine.advance(run, _ANSWERED if answered else None)
        return len(runs)

    moved = _in_batches(conn, turn, work)
    turn.flush(conn)
    return moved


# Stands for the awaited event after an inline turn failed (see ``_mark_resumed_due``).
_ANSWERED = Occurrence(0, "$answered", {}, datetime.min.replace(tzinfo=UTC), "")


def run_until_idle(engine: Engine, *, now: datetime | None = None, limit: int = 500) -> int:
    """Advance due runs until none is left (tests, ``lifeloop journeys work --once``)."""
    total = 0
    while True:
        moved = run_due(engine, now=now, limit=limit)
        total += moved
        if moved < limit:
            return total
