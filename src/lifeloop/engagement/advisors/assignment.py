"""Which advisor serves a customer: the workspace's assignment rules, a manual choice, a hand-over.

Rules are tried in their order; the first that finds an advisor wins:
- ``wecom_contact``: the advisor whose WeCom userid the customer added (the add-contact callback's
  ``Channel Followed`` event with ``userid``), capacity notwithstanding (they are already in touch);
- ``store``: round-robin among the advisors of the customer's store (trait ``config.trait``, ``store``);
- ``channel``: round-robin among the advisors serving the customer's channel of arrival (the channel
  of their first event that names one, else of their first channel identity);
- ``round_robin``: among every active advisor.
``config.advisors`` limits any rule to some advisors. A workspace without rules assigns round-robin.
Advisors at capacity are skipped (except by ``wecom_contact``).

Round-robin takes turns: each assignment gives the advisor the workspace's next turn number, and the
candidate whose last turn is oldest is next. Assignments of a workspace take turns themselves: a
transaction-scoped advisory lock on PostgreSQL (the single writer on SQLite), taken before the current
assignment and the turns are read, so concurrent assignments never pick from the same stale turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from lifeloop.engagement.events import record_event
from lifeloop.errors import Conflict, InvalidInput
from lifeloop.store.locks import lock_workspace

from . import notify
from .models import OPEN_STATUSES, advisor_assignments, advisor_tasks, advisors
from .service import (
    Advisor,
    advisor_of,
    earlier_result,
    get_advisor,
    list_assignment_rules,
    remember_result,
)

ASSIGNMENT = 0x1E5A  # the advisory lock kind of a workspace's assignments (store.locks)
CHANNEL_IDENTITIES = {
    "wecom_external_userid": "wecom",
    "line_user_id": "line",
    "wechat_openid": "wechat",
    "wechat_unionid": "wechat",
    "email": "email",
    "phone": "sms",
}
# Segment's context.channel says what kind of client sent the event; "server" says nothing of the customer.
SEGMENT_CHANNELS = {"browser": "web", "mobile": "app", "server": ""}
ASSIGNED, UNASSIGNED = "Advisor Assigned", "Advisor Unassigned"


@dataclass(frozen=True, slots=True)
class Assignment:
    profile_id: int
    advisor_id: int | None
    method: str
    rule_key: str | None
    reason: str | None
    version: int
    assigned_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _assignment_of(row: Any) -> Assignment:
    return Assignment(
        row.profile_id, row.advisor_id, row.method, row.rule_key, row.reason, row.version, row.assigned_at
    )


def current_assignment(conn: Connection, workspace_id: int, profile_id: int) -> Assignment | None:
    a = advisor_assignments.c
    row = conn.execute(
        select(advisor_assignments).where(a.workspace_id == workspace_id, a.profile_id == profile_id)
    ).first()
    return _assignment_of(row) if row is not None else None


def _active_advisor(conn: Connection, workspace_id: int, advisor_id: int | None) -> Advisor | None:
    if advisor_id is None:
        return None
    row = conn.execute(
        select(advisors).where(
            advisors.c.workspace_id == workspace_id, advisors.c.id == advisor_id, advisors.c.active.is_(True)
        )
    ).first()
    return advisor_of(row) if row is not None else None


def merged_into(conn: Connection, workspace_id: int, profile_id: int) -> list[int]:
    """The profiles merged into this one (their assignments and tasks are the customer's too)."""
    from lifeloop.profiles.models import profiles

    p = profiles.c
    return list(
        conn.execute(
            select(p.id).where(p.workspace_id == workspace_id, p.merged_into == profile_id).order_by(p.id)
        ).scalars()
    )


def _inherit(conn: Connection, workspace_id: int, profile_id: int, *, now: datetime) -> Advisor | None:
    """A customer whose profile absorbed others keeps the advisor one of those had (the latest assigned):
    a WeCom contact's profile merged into the shop's by a later identify stays with its advisor."""
    losers = merged_into(conn, workspace_id, profile_id)
    if not losers:
        return None
    a = advisor_assignments.c
    rows = conn.execute(
        select(advisor_assignments)
        .where(a.workspace_id == workspace_id, a.profile_id.in_(losers), a.advisor_id.is_not(None))
        .order_by(a.assigned_at.desc(), a.profile_id.desc())
    )
    for row in rows:
        advisor = conn.execute(
            select(advisors).where(
                advisors.c.workspace_id == workspace_id,
                advisors.c.id == row.advisor_id,
                advisors.c.active.is_(True),
            )
        ).first()
        if advisor is not None:
            lock_workspace(conn, ASSIGNMENT, workspace_id)
            reason = f"kept from profile {row.profile_id}, merged into this one"
            _set(
                conn,
                workspace_id,
                profile_id,
                advisor,
                method=row.method,
                rule_key=row.rule_key,
                reason=reason,
                now=now,
            )
            return advisor_of(advisor)
    return None


def advisor_for(conn: Connection, workspace_id: int, profile_id: int, *, now: datetime) -> Advisor | None:
    """The customer's advisor: their active one, else one a profile merged into theirs had, else one the
    rules assign now (None: nobody fits)."""
    current = current_assignment(conn, workspace_id, profile_id)
    found = _active_advisor(conn, workspace_id, current.advisor_id if current else None)
    if found is not None:
        return found
    inherited = _inherit(conn, workspace_id, profile_id, now=now)
    if inherited is not None:
        return inherited
    assigned = assign_by_rules(conn, workspace_id, profile_id, now=now)
    return _active_advisor(conn, workspace_id, assigned.advisor_id if assigned else None)


# --- what the rules look at ------------------------------------------------------------------------


def _recent_contact(conn: Connection, workspace_id: int, profile_id: int) -> str | None:
    """The WeCom userid of the advisor the customer last added (from the add-contact callback)."""
    from lifeloop.events.models import events

    e = events.c
    rows = conn.execute(
        select(e.properties)
        .where(e.workspace_id == workspace_id, e.profile_id == profile_id, e.event == "Channel Followed")
        .order_by(e.timestamp.desc(), e.id.desc())
        .limit(20)
    )
    for (props,) in rows:
        props = props or {}
        if props.get("channel") == "wecom" and isinstance(props.get("userid"), str) and props["userid"]:
            return str(props["userid"])
    return None


def arrival_channel(conn: Connection, workspace_id: int, profile_id: int) -> str | None:
    """The channel the customer arrived by: their first event that names one, else their first channel
    identity."""
    from lifeloop.events.models import events
    from lifeloop.profiles.models import identities

    e = events.c
    rows = conn.execute(
        select(e.context, e.properties)
        .where(e.workspace_id == workspace_id, e.profile_id == profile_id)
        .order_by(e.timestamp, e.id)
        .limit(50)
    )
    for context, props in rows:
        for part in (props or {}, context or {}):
            channel = part.get("channel") if isinstance(part, dict) else None
            if isinstance(channel, str) and channel:
                channel = SEGMENT_CHANNELS.get(channel, channel)
                if channel:
                    return channel
    i = identities.c
    kinds = conn.execute(
        select(i.kind)
        .where(
            i.workspace_id == workspace_id, i.profile_id == profile_id, i.kind.in_(list(CHANNEL_IDENTITIES))
        )
        .order_by(i.created_at, i.kind)
    ).scalars()
    for kind in kinds:
        return CHANNEL_IDENTITIES[kind]
    return None


def _traits(conn: Connection, workspace_id: int, profile_id: int) -> dict[str, Any]:
    from lifeloop.profiles.models import profiles

    row = conn.execute(
        select(profiles.c.traits).where(profiles.c.workspace_id == workspace_id, profiles.c.id == profile_id)
    ).first()
    return dict(row.traits or {}) if row is not None else {}


def _candidates(conn: Connection, workspace_id: int, exclude: Sequence[int]) -> list[Any]:
    query = select(advisors).where(advisors.c.workspace_id == workspace_id, advisors.c.active.is_(True))
    if exclude:
        query = query.where(advisors.c.id.not_in(list(exclude)))
    return list(conn.execute(query.order_by(advisors.c.id)))


def _with_room(conn: Connection, workspace_id: int, rows: list[Any]) -> list[Any]:
    limited = [r.id for r in rows if r.capacity is not None]
    if not limited:
        return rows
    a = advisor_assignments.c
    counts: dict[int, int] = dict(
        conn.execute(
            select(a.advisor_id, func.count())
            .where(a.workspace_id == workspace_id, a.advisor_id.in_(limited))
            .group_by(a.advisor_id)
        ).all()
    )
    return [r for r in rows if r.capacity is None or counts.get(r.id, 0) < r.capacity]


def _next_in_turn(conn: Connection, workspace_id: int, rows: list[Any]) -> Any | None:
    rows = _with_room(conn, workspace_id, rows)
    if not rows:
        return None
    chosen = min(rows, key=lambda r: (-1 if r.last_turn is None else r.last_turn, r.id))
    return chosen


def _take_turn(conn: Connection, workspace_id: int, advisor_id: int) -> None:
    last = conn.execute(
        select(func.max(advisors.c.last_turn)).where(advisors.c.workspace_id == workspace_id)
    ).scalar()
    conn.execute(
        update(advisors)
        .where(advisors.c.workspace_id == workspace_id, advisors.c.id == advisor_id)
        .values(last_turn=(last or 0) + 1)
    )


def _pick(
    conn: Connection, workspace_id: int, profile_id: int, exclude: Sequence[int]
) -> tuple[Any, str, str | None] | None:
    """(advisor row, method, rule key) the rules choose for the customer, or None."""
    everyone = _candidates(conn, workspace_id, exclude)
    if not everyone:
        return None
    rules = list_assignment_rules(conn, workspace_id, enabled_only=True)
    if not rules:
        chosen = _next_in_turn(conn, workspace_id, everyone)
        return (chosen, "round_robin", None) if chosen is not None else None
    traits: dict[str, Any] | None = None
    for rule in rules:
        pool = everyone
        if "advisors" in rule["config"]:
            pool = [r for r in pool if r.id in rule["config"]["advisors"]]
        method = rule["method"]
        if method == "wecom_contact":
            userid = _recent_contact(conn, workspace_id, profile_id)
            contact = [r for r in pool if userid is not None and r.wecom_userid == userid]
            if contact:
                return contact[0], method, rule["key"]
            continue
        if method == "store":
            traits = traits if traits is not None else _traits(conn, workspace_id, profile_id)
            store = traits.get(rule["config"].get("trait", "store"))
            pool = [r for r in pool if store not in (None, "") and r.store == str(store)]
        elif method == "channel":
            channel = arrival_channel(conn, workspace_id, profile_id)
            pool = [r for r in pool if channel is not None and channel in (r.channels or [])]
        chosen = _next_in_turn(conn, workspace_id, pool)
        if chosen is not None:
            return chosen, method, rule["key"]
    return None


# --- assigning -------------------------------------------------------------------------------------


def _hand_over_tasks(
    conn: Connection, workspace_id: int, profile_id: int, advisor: Any | None, *, now: datetime
) -> None:
    """The customer's open tasks follow them to their new advisor (who is told about each)."""
    from .tasks import notify_about

    t = advisor_tasks.c
    open_tasks = list(
        conn.execute(
            select(advisor_tasks).where(
                t.workspace_id == workspace_id, t.profile_id == profile_id, t.status.in_(OPEN_STATUSES)
            )
        )
    )
    for task in open_tasks:
        new_id = advisor.id if advisor is not None else None
        if task.advisor_id == new_id:
            continue
        if task.advisor_id is not None:
            notify.withdraw(
                conn, workspace_id, advisor_id=task.advisor_id, task_ids=[task.id], reason="handed over"
            )
        conn.execute(
            update(advisor_tasks)
            .where(t.workspace_id == workspace_id, t.id == task.id)
            .values(advisor_id=new_id, updated_at=now)
        )
        if advisor is not None:
            notify_about(conn, workspace_id, task.id, advisor_of(advisor), now=now)


def _set(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    advisor: Any | None,
    *,
    method: str,
    rule_key: str | None,
    reason: str | None,
    now: datetime,
) -> Assignment:
    """Write the customer's assignment (or its absence), record the event, hand over open tasks."""
    from .service import insert_for

    current = current_assignment(conn, workspace_id, profile_id)
    version = (current.version if current else 0) + 1
    advisor_id = advisor.id if advisor is not None else None
    values = {
        "advisor_id": advisor_id,
        "method": method,
        "rule_key": rule_key,
        "reason": reason,
        "version": version,
        "assigned_at": now,
    }
    a = advisor_assignments.c
    if current is None:
        conn.execute(
            insert_for(conn, advisor_assignments).values(
                workspace_id=workspace_id, profile_id=profile_id, **values
            )
        )
    else:
        conn.execute(
            update(advisor_assignments)
            .where(a.workspace_id == workspace_id, a.profile_id == profile_id)
            .values(values)
        )
    if advisor is not None:
        _take_turn(conn, workspace_id, advisor.id)
    previous = current.advisor_id if current else None
    props: dict[str, Any] = {
        "previous_advisor_id": previous,
        "method": method,
        "rule": rule_key,
        "reason": reason,
    }
    if advisor is not None:
        props = {
            "advisor_id": advisor.id,
            "advisor": advisor.name,
            "wecom_userid": advisor.wecom_userid,
            **props,
        }
    record_event(
        conn,
        workspace_id,
        profile_id,
        ASSIGNED if advisor is not None else UNASSIGNED,
        props,
        at=now,
        key=f"advisor-assignment:{profile_id}:{version}",
    )
    _hand_over_tasks(conn, workspace_id, profile_id, advisor, now=now)
    return Assignment(profile_id, advisor_id, method, rule_key, reason, version, now)


def _live_profile(conn: Connection, workspace_id: int, profile_id: int) -> int:
    from lifeloop.profiles.service import resolve_profile_id

    return resolve_profile_id(conn, workspace_id, profile_id)  # NotFound for another workspace's


def assign_by_rules(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    *,
    now: datetime,
    reason: str | None = None,
    exclude: Sequence[int] = (),
    reassign: bool = False,
) -> Assignment | None:
    """Give the customer an advisor by the rules, unless they already have an active one (``reassign``:
    even then). Returns the assignment, or None when no advisor fits (nothing is written then)."""
    lock_workspace(conn, ASSIGNMENT, workspace_id)
    current = current_assignment(conn, workspace_id, profile_id)
    if not reassign and current is not None and _active_advisor(conn, workspace_id, current.advisor_id):
        return current
    picked = _pick(conn, workspace_id, profile_id, exclude)
    if picked is None:
        return None
    advisor, method, rule_key = picked
    if current is not None and current.advisor_id == advisor.id:
        return current
    return _set(
        conn, workspace_id, profile_id, advisor, method=method, rule_key=rule_key, reason=reason, now=now
    )


def assign(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    *,
    now: datetime,
    advisor_id: int | None = None,
    reason: str | None = None,
    key: str | None = None,
) -> Assignment:
    """Assign on demand: to ``advisor_id`` (manual, with a reason), or by the rules (again, even if the
    customer has an advisor). The same ``key`` again returns the first result and changes nothing."""
    if reason is not None and (not isinstance(reason, str) or len(reason) > 1000):
        raise InvalidInput("reason is a sentence of up to 1000 characters", field="reason")
    reason = reason.strip() if reason else None
    if advisor_id is not None and not reason:
        raise InvalidInput("a manual assignment needs a reason", field="reason")
    pid = _live_profile(conn, workspace_id, profile_id)
    request = {"profile_id": pid, "advisor_id": advisor_id, "reason": reason}
    earlier = earlier_result(conn, workspace_id, key, "advisor.assign", request)
    if earlier is not None:
        return Assignment(**{**earlier, "assigned_at": datetime.fromisoformat(earlier["assigned_at"])})
    lock_workspace(conn, ASSIGNMENT, workspace_id)
    if advisor_id is not None:
        advisor = get_advisor(conn, workspace_id, advisor_id)
        if not advisor.active:
            raise Conflict(f"advisor {advisor_id} is not active", field="advisor_id")
        row = conn.execute(
            select(advisors).where(advisors.c.workspace_id == workspace_id, advisors.c.id == advisor_id)
        ).one()
        result = _set(conn, workspace_id, pid, row, method="manual", rule_key=None, reason=reason, now=now)
    else:
        by_rules = assign_by_rules(conn, workspace_id, pid, now=now, reason=reason, reassign=True)
        if by_rules is None:
            raise Conflict("no active advisor fits this customer by the assignment rules", field="profile_id")
        result = by_rules
    remember_result(
        conn, workspace_id, key, {**result.as_dict(), "assigned_at": result.assigned_at.isoformat()}
    )
    return result


def on_wecom_contact(
    conn: Connection, workspace_id: int, profile_id: int, userid: str, *, now: datetime
) -> None:
    """A customer added an advisor on WeCom: with a ``wecom_contact`` rule, a customer without an active
    advisor gets that one (a customer already served keeps theirs)."""
    rules = list_assignment_rules(conn, workspace_id, enabled_only=True)
    if not any(r["method"] == "wecom_contact" for r in rules):
        return
    row = conn.execute(
        select(advisors).where(
            advisors.c.workspace_id == workspace_id,
            advisors.c.wecom_userid == userid,
            advisors.c.active.is_(True),
        )
    ).first()
    if row is None:
        return
    lock_workspace(conn, ASSIGNMENT, workspace_id)
    current = current_assignment(conn, workspace_id, profile_id)
    if current is not None and _active_advisor(conn, workspace_id, current.advisor_id):
        return
    rule_key = next(r["key"] for r in rules if r["method"] == "wecom_contact")
    _set(conn, workspace_id, profile_id, row, method="wecom_contact", rule_key=rule_key, reason=None, now=now)


def set_active(
    conn: Connection, workspace_id: int, advisor_id: int, *, active: bool, now: datetime
) -> dict[str, Any]:
    """Turn an advisor on or off. Turning one off hands each of their customers to another advisor by the
    rules (or leaves them without one, recorded as ``Advisor Unassigned``), with their open tasks."""
    advisor = get_advisor(conn, workspace_id, advisor_id)
    lock_workspace(conn, ASSIGNMENT, workspace_id)
    conn.execute(
        update(advisors)
        .where(advisors.c.workspace_id == workspace_id, advisors.c.id == advisor.id)
        .values(active=active, updated_at=now)
    )
    moved = {"reassigned": 0, "unassigned": 0}
    if active or not advisor.active:
        return moved
    a = advisor_assignments.c
    customers = list(
        conn.execute(
            select(a.profile_id)
            .where(a.workspace_id == workspace_id, a.advisor_id == advisor.id)
            .order_by(a.profile_id)
        ).scalars()
    )
    reason = f"advisor {advisor.name} ({advisor.wecom_userid}) deactivated"
    for pid in customers:
        picked = _pick(conn, workspace_id, pid, exclude=[advisor.id])
        if picked is None:
            _set(conn, workspace_id, pid, None, method="unassigned", rule_key=None, reason=reason, now=now)
            moved["unassigned"] += 1
        else:
            chosen, method, rule_key = picked
            _set(conn, workspace_id, pid, chosen, method=method, rule_key=rule_key, reason=reason, now=now)
            moved["reassigned"] += 1
    # Tasks of customers no longer theirs moved above; any left (none expected) lose their advisor.
    t = advisor_tasks.c
    left = list(
        conn.execute(
            select(t.id).where(
                t.workspace_id == workspace_id, t.advisor_id == advisor.id, t.status.in_(OPEN_STATUSES)
            )
        ).scalars()
    )
    if left:
        notify.withdraw(conn, workspace_id, advisor_id=advisor.id, task_ids=left, reason=reason)
        conn.execute(
            update(advisor_tasks)
            .where(t.workspace_id == workspace_id, t.id.in_(left))
            .values(advisor_id=None, updated_at=now)
        )
    return moved


def customers_of(conn: Connection, workspace_id: int, advisor_id: int) -> list[Assignment]:
    get_advisor(conn, workspace_id, advisor_id)
    a = advisor_assignments.c
    rows = conn.execute(
        select(advisor_assignments)
        .where(a.workspace_id == workspace_id, a.advisor_id == advisor_id)
        .order_by(a.assigned_at, a.profile_id)
    )
    return [_assignment_of(r) for r in rows]
