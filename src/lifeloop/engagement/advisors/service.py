"""Advisors and the rules that assign customers to them and create their tasks (the operator's settings).

Assigning customers is ``assignment``'s job, tasks are ``tasks``', notifications ``notify``'s.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import orjson
from liquid import Environment
from liquid.exceptions import LiquidError
from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lifeloop.errors import Conflict, InvalidInput, NotFound
from lifeloop.store.schema import utcnow

from .models import (
    ASSIGNMENT_METHODS,
    advisor_assignment_rules,
    advisor_requests,
    advisor_task_rules,
    advisors,
)

KEY = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
WECOM_USERID = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")
ARRIVAL_CHANNELS = ("wecom", "line", "wechat", "email", "sms", "web", "app", "store")
MAX_DUE_HOURS = 24 * 365
# Task templates render with a lenient environment: a missing trait renders empty rather than losing the
# task (the task is made in the transaction that placed the customer's events).
TEMPLATES = Environment()


def insert_for(conn: Connection, table: Any) -> Any:
    """An INSERT that can say ON CONFLICT DO NOTHING on either database."""
    return pg_insert(table) if conn.dialect.name == "postgresql" else sqlite_insert(table)


# --- idempotency keys ------------------------------------------------------------------------------


def _fingerprint(operation: str, request: dict[str, Any]) -> str:
    body = orjson.dumps({"operation": operation, **request}, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(body).hexdigest()


def check_request_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= 200 or not key.isprintable():
        raise InvalidInput("an idempotency key is 1-200 printable characters", field="key")
    return key


def earlier_result(
    conn: Connection, workspace_id: int, key: str | None, operation: str, request: dict[str, Any]
) -> dict[str, Any] | None:
    """Reserve ``key`` for this request; the first result if the same request came with it before.

    The reservation is a row inserted in the caller's transaction: a concurrent request with the key
    waits for it (PostgreSQL's unique index) and then reads its result; bad input rolls both back.
    A key used for a different request is a ``Conflict``.
    """
    if check_request_key(key) is None:
        return None
    fingerprint = _fingerprint(operation, request)
    reserved = conn.execute(
        insert_for(conn, advisor_requests)
        .values(
            workspace_id=workspace_id,
            key=key,
            operation=operation,
            fingerprint=fingerprint,
            result=None,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing()
        .returning(advisor_requests.c.key)
    ).first()
    if reserved is not None:
        return None
    row = conn.execute(
        select(advisor_requests).where(
            advisor_requests.c.workspace_id == workspace_id, advisor_requests.c.key == key
        )
    ).one()
    if row.operation != operation or row.fingerprint != fingerprint or row.result is None:
        raise Conflict(f"the key {key!r} was already used for another request", field="key")
    return dict(row.result)


def remember_result(conn: Connection, workspace_id: int, key: str | None, result: dict[str, Any]) -> None:
    if key is None:
        return
    conn.execute(
        update(advisor_requests)
        .where(advisor_requests.c.workspace_id == workspace_id, advisor_requests.c.key == key)
        .values(result=result)
    )


# --- advisors --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Advisor:
    id: int
    name: str
    wecom_userid: str
    user_id: int | None
    store: str | None
    channels: list[str]
    active: bool
    capacity: int | None
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def advisor_of(row: Any) -> Advisor:
    return Advisor(
        id=row.id,
        name=row.name,
        wecom_userid=row.wecom_userid,
        user_id=row.user_id,
        store=row.store,
        channels=list(row.channels or []),
        active=bool(row.active),
        capacity=row.capacity,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 200:
        raise InvalidInput("an advisor's name is 1-200 characters", field="name")
    return name.strip()


def _check_userid(userid: Any) -> str:
    if not isinstance(userid, str) or not WECOM_USERID.match(userid):
        raise InvalidInput(
            "wecom_userid is the member's WeCom userid: 1-64 letters, digits, _ . @ or -",
            field="wecom_userid",
        )
    return userid


def _check_store(store: Any) -> str | None:
    if store is None or store == "":
        return None
    if not isinstance(store, str) or len(store) > 128:
        raise InvalidInput("store is a name of up to 128 characters", field="store")
    return store.strip()


def _check_channels(channels: Any) -> list[str]:
    if not isinstance(channels, list | tuple) or not all(isinstance(c, str) for c in channels):
        raise InvalidInput("channels is a list of channel names", field="channels")
    unknown = [c for c in channels if c not in ARRIVAL_CHANNELS]
    if unknown:
        raise InvalidInput(
            f"unknown channel {unknown[0]!r}; channels are {', '.join(ARRIVAL_CHANNELS)}", field="channels"
        )
    return sorted(set(channels))


def _check_capacity(capacity: Any) -> int | None:
    if capacity is None:
        return None
    if isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= 1_000_000:
        raise InvalidInput("capacity is a number of customers from 1 (or none: no limit)", field="capacity")
    return capacity


def _check_member(conn: Connection, workspace_id: int, user_id: Any) -> int | None:
    from lifeloop.accounts.models import memberships

    if user_id is None:
        return None
    if isinstance(user_id, bool) or not isinstance(user_id, int):
        raise InvalidInput("user_id is a console user's id", field="user_id")
    member = conn.execute(
        select(memberships.c.user_id).where(
            memberships.c.workspace_id == workspace_id, memberships.c.user_id == user_id
        )
    ).first()
    if member is None:
        raise InvalidInput(f"user {user_id} is not a member of this workspace", field="user_id")
    return user_id


def _userid_taken(conn: Connection, workspace_id: int, userid: str, but: int | None = None) -> None:
    query = select(advisors.c.id).where(
        advisors.c.workspace_id == workspace_id, advisors.c.wecom_userid == userid
    )
    if but is not None:
        query = query.where(advisors.c.id != but)
    if conn.execute(query).first() is not None:
        raise Conflict(f"an advisor with WeCom userid {userid!r} already exists", field="wecom_userid")


def create_advisor(
    conn: Connection,
    workspace_id: int,
    *,
    name: str,
    wecom_userid: str,
    user_id: int | None = None,
    store: str | None = None,
    channels: Sequence[str] = (),
    capacity: int | None = None,
    key: str | None = None,
    now: datetime | None = None,
) -> Advisor:
    """A new, active advisor; the same ``key`` again returns the first one and changes nothing."""
    now = now or utcnow()
    userid = _check_userid(wecom_userid)
    values: dict[str, Any] = {
        "name": _check_name(name),
        "wecom_userid": userid,
        "user_id": _check_member(conn, workspace_id, user_id),
        "store": _check_store(store),
        "channels": _check_channels(list(channels)),
        "capacity": _check_capacity(capacity),
    }
    earlier = earlier_result(conn, workspace_id, key, "advisor.create", values)
    if earlier is not None:
        return get_advisor(conn, workspace_id, int(earlier["id"]))
    _userid_taken(conn, workspace_id, userid)
    row = conn.execute(
        insert(advisors)
        .values(workspace_id=workspace_id, active=True, created_at=now, updated_at=now, **values)
        .returning(*advisors.c)
    ).one()
    remember_result(conn, workspace_id, key, {"id": row.id})
    return advisor_of(row)


def get_advisor(conn: Connection, workspace_id: int, advisor_id: int) -> Advisor:
    row = conn.execute(
        select(advisors).where(advisors.c.workspace_id == workspace_id, advisors.c.id == advisor_id)
    ).first()
    if row is None:
        raise NotFound(f"no advisor {advisor_id} in this workspace", field="advisor_id")
    return advisor_of(row)


def advisor_by_userid(conn: Connection, workspace_id: int, wecom_userid: str) -> Advisor | None:
    row = conn.execute(
        select(advisors).where(
            advisors.c.workspace_id == workspace_id, advisors.c.wecom_userid == wecom_userid
        )
    ).first()
    return advisor_of(row) if row is not None else None


def find_advisor(conn: Connection, workspace_id: int, ref: str | int) -> Advisor:
    """An advisor by id or by WeCom userid (what the CLI takes)."""
    if isinstance(ref, int) or str(ref).isdigit():
        try:
            return get_advisor(conn, workspace_id, int(ref))
        except NotFound:
            pass
    found = advisor_by_userid(conn, workspace_id, str(ref))
    if found is None:
        raise NotFound(f"no advisor {ref!r} (id or WeCom userid) in this workspace", field="advisor")
    return found


def list_advisors(conn: Connection, workspace_id: int, *, active: bool | None = None) -> list[Advisor]:
    query = select(advisors).where(advisors.c.workspace_id == workspace_id)
    if active is not None:
        query = query.where(advisors.c.active.is_(active))
    return [advisor_of(r) for r in conn.execute(query.order_by(advisors.c.id))]


UNCHANGED: Any = object()


def update_advisor(
    conn: Connection,
    workspace_id: int,
    advisor_id: int,
    *,
    name: Any = UNCHANGED,
    wecom_userid: Any = UNCHANGED,
    user_id: Any = UNCHANGED,
    store: Any = UNCHANGED,
    channels: Any = UNCHANGED,
    capacity: Any = UNCHANGED,
    now: datetime | None = None,
) -> Advisor:
    """Change an advisor's details (``assignment.set_active`` turns one off, handing over customers)."""
    now = now or utcnow()
    current = get_advisor(conn, workspace_id, advisor_id)
    values: dict[str, Any] = {}
    if name is not UNCHANGED:
        values["name"] = _check_name(name)
    if wecom_userid is not UNCHANGED:
        values["wecom_userid"] = _check_userid(wecom_userid)
        _userid_taken(conn, workspace_id, values["wecom_userid"], but=current.id)
    if user_id is not UNCHANGED:
        values["user_id"] = _check_member(conn, workspace_id, user_id)
    if store is not UNCHANGED:
        values["store"] = _check_store(store)
    if channels is not UNCHANGED:
        values["channels"] = _check_channels(channels)
    if capacity is not UNCHANGED:
        values["capacity"] = _check_capacity(capacity)
    if not values:
        return current
    row = conn.execute(
        update(advisors)
        .where(advisors.c.workspace_id == workspace_id, advisors.c.id == current.id)
        .values(updated_at=now, **values)
        .returning(*advisors.c)
    ).one()
    return advisor_of(row)


# --- assignment rules ------------------------------------------------------------------------------


def _check_key(key: Any, what: str) -> str:
    if not isinstance(key, str) or not KEY.match(key):
        raise InvalidInput(f"a {what} key is 1-64 lower-case letters, digits, _ or -", field="key")
    return key


def _check_rule_config(conn: Connection, workspace_id: int, method: str, config: Any) -> dict[str, Any]:
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise InvalidInput("config must be a JSON object", field="config")
    allowed = {"advisors"} | ({"trait"} if method == "store" else set())
    extra = sorted(set(config) - allowed)
    if extra:
        raise InvalidInput(
            f"a {method} rule's config takes {', '.join(sorted(allowed))}, not {extra[0]!r}", field="config"
        )
    out: dict[str, Any] = {}
    if method == "store":
        trait = config.get("trait", "store")
        if not isinstance(trait, str) or not trait.strip() or len(trait) > 64:
            raise InvalidInput(
                "config.trait names the customer trait holding their store", field="config.trait"
            )
        out["trait"] = trait
    if "advisors" in config:
        ids = config["advisors"]
        if (
            not isinstance(ids, list)
            or not ids
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        ):
            raise InvalidInput("config.advisors is a non-empty list of advisor ids", field="config.advisors")
        for advisor_id in ids:
            get_advisor(conn, workspace_id, advisor_id)  # NotFound names it
        out["advisors"] = sorted(set(ids))
    return out


def _rule_dict(row: Any) -> dict[str, Any]:
    return {
        "key": row.key,
        "position": row.position,
        "method": row.method,
        "config": dict(row.config or {}),
        "enabled": bool(row.enabled),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def put_assignment_rule(
    conn: Connection,
    workspace_id: int,
    key: str,
    *,
    method: str,
    position: int | None = None,
    config: Any = None,
    enabled: bool = True,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Create or replace an assignment rule; rules are tried by ``position`` (default: after the last)."""
    now = now or utcnow()
    _check_key(key, "rule")
    if method not in ASSIGNMENT_METHODS:
        raise InvalidInput(f"method must be one of {', '.join(ASSIGNMENT_METHODS)}", field="method")
    if position is not None and (isinstance(position, bool) or not isinstance(position, int) or position < 0):
        raise InvalidInput("position is a whole number from 0", field="position")
    if not isinstance(enabled, bool):
        raise InvalidInput("enabled is true or false", field="enabled")
    checked = _check_rule_config(conn, workspace_id, method, config)
    t = advisor_assignment_rules.c
    where = (t.workspace_id == workspace_id, t.key == key)
    existing = conn.execute(select(t.id, t.position).where(*where)).first()
    if position is None:
        if existing is not None:
            position = existing.position
        else:
            last = conn.execute(select(func.max(t.position)).where(t.workspace_id == workspace_id)).scalar()
            position = 0 if last is None else last + 1
    values = {
        "method": method,
        "position": position,
        "config": checked,
        "enabled": enabled,
        "updated_at": now,
    }
    if existing is not None:
        conn.execute(update(advisor_assignment_rules).where(*where).values(values))
    else:
        conn.execute(
            insert(advisor_assignment_rules).values(
                workspace_id=workspace_id, key=key, created_at=now, **values
            )
        )
    return get_assignment_rule(conn, workspace_id, key)


def get_assignment_rule(conn: Connection, workspace_id: int, key: str) -> dict[str, Any]:
    t = advisor_assignment_rules.c
    row = conn.execute(
        select(advisor_assignment_rules).where(t.workspace_id == workspace_id, t.key == key)
    ).first()
    if row is None:
        raise NotFound(f"no assignment rule {key!r} in this workspace", field="key")
    return _rule_dict(row)


def list_assignment_rules(
    conn: Connection, workspace_id: int, *, enabled_only: bool = False
) -> list[dict[str, Any]]:
    t = advisor_assignment_rules.c
    query = select(advisor_assignment_rules).where(t.workspace_id == workspace_id)
    if enabled_only:
        query = query.where(t.enabled.is_(True))
    return [_rule_dict(r) for r in conn.execute(query.order_by(t.position, t.id))]


def delete_assignment_rule(conn: Connection, workspace_id: int, key: str) -> None:
    get_assignment_rule(conn, workspace_id, key)
    t = advisor_assignment_rules.c
    conn.execute(delete(advisor_assignment_rules).where(t.workspace_id == workspace_id, t.key == key))


# --- task rules ------------------------------------------------------------------------------------


def check_template(source: Any, field: str, *, required: bool) -> str | None:
    if source is None or source == "":
        if required:
            raise InvalidInput(f"{field} is required", field=field)
        return None
    if not isinstance(source, str) or len(source) > 4000:
        raise InvalidInput(f"{field} is a Liquid template of up to 4000 characters", field=field)
    try:
        TEMPLATES.from_string(source)
    except LiquidError as error:
        raise InvalidInput(f"{field} is not valid Liquid: {error}", field=field) from None
    return source


def render(source: str | None, context: dict[str, Any]) -> str | None:
    """A task template for one customer and event; a template that fails on this data is shown as written."""
    if source is None:
        return None
    try:
        return TEMPLATES.from_string(source).render(**context).strip()
    except (LiquidError, TypeError, ValueError, ArithmeticError):
        return source


def check_kind(kind: Any) -> str:
    if not isinstance(kind, str) or not KEY.match(kind) or len(kind) > 32:
        raise InvalidInput("kind is 1-32 lower-case letters, digits, _ or - (e.g. follow_up)", field="kind")
    return kind


def _check_where(where: Any) -> dict[str, Any]:
    if where is None:
        return {}
    if not isinstance(where, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str | int | float | bool))
        for k, v in where.items()
    ):
        raise InvalidInput("where maps event properties to the values they must have", field="where")
    return where


def _task_rule_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "key": row.key,
        "event": row.event,
        "where": dict(row.where or {}),
        "kind": row.kind,
        "title": row.title,
        "description": row.description,
        "due_hours": row.due_hours,
        "enabled": bool(row.enabled),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def put_task_rule(
    conn: Connection,
    workspace_id: int,
    key: str,
    *,
    event: str,
    title: str,
    where: Any = None,
    description: str | None = None,
    due_hours: int | None = None,
    kind: str = "follow_up",
    enabled: bool = True,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Create or replace a task rule: each ``event`` carrying ``where`` creates a task for the customer's
    advisor, unless the customer already has an open task of this rule."""
    now = now or utcnow()
    _check_key(key, "task rule")
    if not isinstance(event, str) or not event.strip() or len(event) > 255:
        raise InvalidInput("event is an event name, e.g. Tag Added", field="event")
    if event.startswith("Advisor "):
        raise InvalidInput("a task rule cannot react to the advisors' own events", field="event")
    if due_hours is not None and (
        isinstance(due_hours, bool) or not isinstance(due_hours, int) or not 0 <= due_hours <= MAX_DUE_HOURS
    ):
        raise InvalidInput(f"due_hours is 0 to {MAX_DUE_HOURS} hours (or none)", field="due_hours")
    if not isinstance(enabled, bool):
        raise InvalidInput("enabled is true or false", field="enabled")
    values = {
        "event": event,
        "where": _check_where(where),
        "kind": check_kind(kind),
        "title": check_template(title, "title", required=True),
        "description": check_template(description, "description", required=False),
        "due_hours": due_hours,
        "enabled": enabled,
        "updated_at": now,
    }
    t = advisor_task_rules.c
    where_key = (t.workspace_id == workspace_id, t.key == key)
    if conn.execute(select(t.id).where(*where_key)).first() is not None:
        conn.execute(update(advisor_task_rules).where(*where_key).values(values))
    else:
        conn.execute(
            insert(advisor_task_rules).values(workspace_id=workspace_id, key=key, created_at=now, **values)
        )
    return get_task_rule(conn, workspace_id, key)


def get_task_rule(conn: Connection, workspace_id: int, key: str) -> dict[str, Any]:
    t = advisor_task_rules.c
    row = conn.execute(select(advisor_task_rules).where(t.workspace_id == workspace_id, t.key == key)).first()
    if row is None:
        raise NotFound(f"no task rule {key!r} in this workspace", field="key")
    return _task_rule_dict(row)


def list_task_rules(
    conn: Connection, workspace_id: int, *, enabled_only: bool = False
) -> list[dict[str, Any]]:
    t = advisor_task_rules.c
    query = select(advisor_task_rules).where(t.workspace_id == workspace_id)
    if enabled_only:
        query = query.where(t.enabled.is_(True))
    return [_task_rule_dict(r) for r in conn.execute(query.order_by(t.key))]


def delete_task_rule(conn: Connection, workspace_id: int, key: str) -> None:
    """Remove a rule; its tasks stay (they no longer block a new one: none will be made)."""
    get_task_rule(conn, workspace_id, key)
    t = advisor_task_rules.c
    conn.execute(delete(advisor_task_rules).where(t.workspace_id == workspace_id, t.key == key))
