"""Follow-up tasks (1-on-1): made by task rules, by journey steps (``create_task``) or by an operator;
worked by the customer's advisor: open → in_progress → done (with an outcome) or cancelled.

``Advisor Task Created`` is recorded when a task is made, ``Advisor Task Completed`` when it is done,
``Advisor Task Cancelled`` when it is cancelled; each in the transaction that changes the task, with a key
derived from the task, so it is recorded once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update

from lifeloop.engagement.events import record_event
from lifeloop.engagement.reactions import PlacedEvent
from lifeloop.errors import Conflict, InvalidInput, NotFound

from . import notify
from .assignment import advisor_for
from .models import OPEN_STATUSES, OUTCOMES, TASK_STATUSES, advisor_tasks
from .service import Advisor, check_kind, get_advisor, insert_for, list_task_rules, render

CREATED, COMPLETED, CANCELLED = "Advisor Task Created", "Advisor Task Completed", "Advisor Task Cancelled"
MAX_LIST = 500


@dataclass(frozen=True, slots=True)
class AdvisorTask:
    id: int
    key: str
    profile_id: int
    advisor_id: int | None
    kind: str
    title: str
    description: str | None
    source: str
    status: str
    outcome: str | None
    outcome_note: str | None
    due_at: datetime | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    rule_id: int | None = None

    def overdue(self, now: datetime) -> bool:
        return self.status in OPEN_STATUSES and self.due_at is not None and self.due_at < now

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        out = asdict(self)
        if now is not None:
            out["overdue"] = self.overdue(now)
        return out


def _task(row: Any) -> AdvisorTask:
    return AdvisorTask(**{f: getattr(row, f) for f in AdvisorTask.__dataclass_fields__})


def customer_name(conn: Connection, workspace_id: int, profile_id: int) -> tuple[str, dict[str, Any]]:
    """How the advisor knows the customer (name, else user id, else the profile number), and the
    customer as templates see it."""
    from lifeloop.profiles.models import profiles

    row = conn.execute(
        select(profiles.c.user_id, profiles.c.traits).where(
            profiles.c.workspace_id == workspace_id, profiles.c.id == profile_id
        )
    ).first()
    traits = dict(row.traits or {}) if row is not None else {}
    user_id = row.user_id if row is not None else None
    full = " ".join(str(traits[k]) for k in ("first_name", "last_name") if traits.get(k))
    name = traits.get("name") or traits.get("nickname") or full or None
    label = f"{name}（{user_id}）" if name and user_id else str(name or user_id or f"#{profile_id}")
    return label, {
        **traits,
        "id": profile_id,
        "user_id": user_id,
        "name": name or user_id or f"#{profile_id}",
    }


def _zone(conn: Connection, workspace_id: int) -> Any:
    from zoneinfo import ZoneInfo

    from lifeloop.workspaces.service import get_workspace

    return ZoneInfo(get_workspace(conn, workspace_id).timezone)


def notify_about(
    conn: Connection, workspace_id: int, task_id: int, advisor: Advisor, *, now: datetime
) -> None:
    """Queue the WeCom message that tells ``advisor`` about the task (sent after commit by the sweep)."""
    task = get_task(conn, workspace_id, task_id)
    label, _customer = customer_name(conn, workspace_id, task.profile_id)
    content = notify.message_content(
        conn,
        workspace_id,
        task_id=task.id,
        title=task.title,
        customer=label,
        due_at=task.due_at,
        description=task.description,
        zone=_zone(conn, workspace_id),
    )
    notify.enqueue(
        conn,
        workspace_id,
        task_id=task.id,
        advisor_id=advisor.id,
        touser=advisor.wecom_userid,
        content=content,
        now=now,
    )


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= 255 or not key.isprintable():
        raise InvalidInput("a task key is 1-255 printable characters", field="key")
    return key


def _check_title(title: Any) -> str:
    if not isinstance(title, str) or not title.strip() or len(title.strip()) > 500:
        raise InvalidInput("a task title is 1-500 characters", field="title")
    return title.strip()


def _check_source(source: Any) -> str:
    if not isinstance(source, str) or not source.strip() or len(source) > 255:
        raise InvalidInput("source names what made the task (rule:…, journey:…, api, cli)", field="source")
    return source.strip()


def _check_due(due_at: Any) -> datetime | None:
    if due_at is None:
        return None
    if not isinstance(due_at, datetime) or due_at.tzinfo is None:
        raise InvalidInput("due_at is a time with its time zone", field="due_at")
    return due_at


def _by_key(conn: Connection, workspace_id: int, key: str) -> AdvisorTask | None:
    t = advisor_tasks.c
    row = conn.execute(select(advisor_tasks).where(t.workspace_id == workspace_id, t.key == key)).first()
    return _task(row) if row is not None else None


def _make(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    *,
    key: str,
    title: str,
    kind: str,
    due_at: datetime | None,
    source: str,
    description: str | None,
    now: datetime,
    rule_id: int | None = None,
) -> AdvisorTask | None:
    """Insert the task (nothing if its key, or its rule's open slot, is taken: None), give it the
    customer's advisor, record the event and queue the notification."""
    advisor = advisor_for(conn, workspace_id, profile_id, now=now)
    row = conn.execute(
        insert_for(conn, advisor_tasks)
        .values(
            workspace_id=workspace_id,
            key=key,
            profile_id=profile_id,
            advisor_id=advisor.id if advisor else None,
            rule_id=rule_id,
            open_slot=f"rule:{rule_id}" if rule_id is not None else None,
            kind=kind,
            title=title[:500],
            description=description,
            source=source,
            status="open",
            due_at=due_at,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
        .returning(*advisor_tasks.c)
    ).first()
    if row is None:
        return None
    task = _task(row)
    record_event(
        conn,
        workspace_id,
        profile_id,
        CREATED,
        {
            "task_id": task.id,
            "task_key": task.key,
            "kind": task.kind,
            "title": task.title,
            "source": task.source,
            "advisor_id": task.advisor_id,
            "due_at": task.due_at.isoformat() if task.due_at else None,
        },
        at=now,
        key=f"advisor-task-created:{task.id}",
    )
    if advisor is not None:
        notify_about(conn, workspace_id, task.id, advisor, now=now)
    return task


def create_task(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    *,
    key: str,
    title: str,
    kind: str = "follow_up",
    due_at: datetime | None = None,
    source: str,
    now: datetime,
    note: str | None = None,
) -> AdvisorTask:
    """A follow-up task for the customer's advisor (assigned by the rules now if they have none); the
    same ``key`` returns the same task and changes nothing. ``note`` is shown to the advisor under the
    title. What journeys call for their "create advisor task" step."""
    key = _check_key(key)
    title = _check_title(title)
    kind = check_kind(kind)
    source = _check_source(source)
    due_at = _check_due(due_at)
    if note is not None and (not isinstance(note, str) or len(note) > 4000):
        raise InvalidInput("note is up to 4000 characters", field="note")
    existing = _by_key(conn, workspace_id, key)
    if existing is not None:
        return existing
    from lifeloop.profiles.service import resolve_profile_id

    pid = resolve_profile_id(conn, workspace_id, profile_id)
    made = _make(
        conn,
        workspace_id,
        pid,
        key=key,
        title=title,
        kind=kind,
        due_at=due_at,
        source=source,
        description=note,
        now=now,
    )
    if made is not None:
        return made
    found = _by_key(conn, workspace_id, key)  # made by a concurrent call with the same key
    if found is None:
        raise Conflict(f"task {key!r} could not be created; try again", field="key")
    return found


def _matches(rule: dict[str, Any], event: PlacedEvent) -> bool:
    if event.name != rule["event"]:
        return False
    return all(event.properties.get(k) == v for k, v in rule["where"].items())


def apply_task_rules(
    conn: Connection, workspace_id: int, events: Sequence[PlacedEvent], now: datetime
) -> int:
    """Tasks for the events that task rules name: one per rule and event (its key), and none while the
    customer still has an open task of that rule. How many were made."""
    rules = list_task_rules(conn, workspace_id, enabled_only=True)
    if not rules:
        return 0
    names = {r["event"] for r in rules}
    made = 0
    t = advisor_tasks.c
    for event in events:
        if event.name not in names:
            continue
        for rule in rules:
            if not _matches(rule, event):
                continue
            slot_taken = conn.execute(
                select(t.id).where(
                    t.workspace_id == workspace_id,
                    t.profile_id == event.profile_id,
                    t.open_slot == f"rule:{rule['id']}",
                )
            ).first()
            if slot_taken is not None:
                continue
            key = f"rule:{rule['id']}:{event.message_id}"
            if _by_key(conn, workspace_id, key) is not None:
                continue
            _label, customer = customer_name(conn, workspace_id, event.profile_id)
            context = {"customer": customer, "event": event.properties, "rule": {"key": rule["key"]}}
            title = render(rule["title"], context) or rule["key"]
            due = now + timedelta(hours=rule["due_hours"]) if rule["due_hours"] is not None else None
            task = _make(
                conn,
                workspace_id,
                event.profile_id,
                key=key[:255],
                title=title,
                kind=rule["kind"],
                due_at=due,
                source=f"rule:{rule['key']}",
                description=render(rule["description"], context),
                now=now,
                rule_id=rule["id"],
            )
            made += task is not None
    return made


def get_task(conn: Connection, workspace_id: int, task_id: int) -> AdvisorTask:
    t = advisor_tasks.c
    row = conn.execute(select(advisor_tasks).where(t.workspace_id == workspace_id, t.id == task_id)).first()
    if row is None:
        raise NotFound(f"no task {task_id} in this workspace", field="task_id")
    return _task(row)


def list_tasks(
    conn: Connection,
    workspace_id: int,
    *,
    now: datetime,
    advisor_id: int | None = None,
    profile_id: int | None = None,
    status: str | None = None,
    overdue: bool = False,
    limit: int = 200,
) -> list[AdvisorTask]:
    """Tasks, soonest due first (then oldest): an advisor's list, a customer's, or the workspace's."""
    t = advisor_tasks.c
    query = select(advisor_tasks).where(t.workspace_id == workspace_id)
    if advisor_id is not None:
        get_advisor(conn, workspace_id, advisor_id)
        query = query.where(t.advisor_id == advisor_id)
    if profile_id is not None:
        from lifeloop.profiles.service import resolve_profile_id

        from .assignment import merged_into

        pid = resolve_profile_id(conn, workspace_id, profile_id)
        query = query.where(t.profile_id.in_([pid, *merged_into(conn, workspace_id, pid)]))
    if status is not None:
        if status not in TASK_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(TASK_STATUSES)}", field="status")
        query = query.where(t.status == status)
    if overdue:
        query = query.where(t.status.in_(OPEN_STATUSES), t.due_at.is_not(None), t.due_at < now)
    if not 1 <= limit <= MAX_LIST:
        raise InvalidInput(f"limit is 1 to {MAX_LIST}", field="limit")
    query = query.order_by(t.due_at.is_(None), t.due_at, t.created_at, t.id).limit(limit)
    return [_task(r) for r in conn.execute(query)]


TRANSITIONS = {"open": {"in_progress", "done", "cancelled"}, "in_progress": {"open", "done", "cancelled"}}


def update_task(
    conn: Connection,
    workspace_id: int,
    task_id: int,
    *,
    now: datetime,
    status: str | None = None,
    outcome: str | None = None,
    note: str | None = None,
) -> AdvisorTask:
    """Move a task on: in_progress, back to open, done (with an outcome: reached, no_answer, purchased,
    declined, and a note) or cancelled (a note says why). Done and cancelled tasks are final."""
    current = get_task(conn, workspace_id, task_id)
    if status is None and outcome is None and note is None:
        raise InvalidInput("give a status, an outcome or a note", field="status")
    target = status or current.status
    if target not in TASK_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(TASK_STATUSES)}", field="status")
    if outcome is not None and outcome not in OUTCOMES:
        raise InvalidInput(f"outcome must be one of {', '.join(OUTCOMES)}", field="outcome")
    if note is not None and (not isinstance(note, str) or len(note) > 4000):
        raise InvalidInput("note is up to 4000 characters", field="note")
    if current.status not in OPEN_STATUSES:
        raise Conflict(f"task {task_id} is already {current.status}", field="status")
    if target != current.status and target not in TRANSITIONS[current.status]:
        raise Conflict(f"a {current.status} task cannot become {target}", field="status")
    if target == "done" and outcome is None:
        raise InvalidInput(f"a done task needs an outcome: {', '.join(OUTCOMES)}", field="outcome")
    if outcome is not None and target != "done":
        raise InvalidInput("an outcome is given when the task is done", field="outcome")
    final = target in ("done", "cancelled")
    values: dict[str, Any] = {"status": target, "updated_at": now}
    if outcome is not None:
        values["outcome"] = outcome
    if note is not None:
        values["outcome_note"] = note
    if final:
        values |= {"completed_at": now, "open_slot": None}
    t = advisor_tasks.c
    row = conn.execute(
        update(advisor_tasks)
        .where(t.workspace_id == workspace_id, t.id == current.id, t.status == current.status)
        .values(values)
        .returning(*advisor_tasks.c)
    ).first()
    if row is None:
        raise Conflict(f"task {task_id} changed meanwhile; read it again", field="status")
    task = _task(row)
    if final:
        record_event(
            conn,
            workspace_id,
            task.profile_id,
            COMPLETED if target == "done" else CANCELLED,
            {
                "task_id": task.id,
                "task_key": task.key,
                "kind": task.kind,
                "advisor_id": task.advisor_id,
                "outcome": task.outcome,
                "note": task.outcome_note,
            },
            at=now,
            key=f"advisor-task-{target}:{task.id}",
        )
    return task
