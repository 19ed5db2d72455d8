"""What operators define: tag rules, event-tag rules and segments — validated, stored, and put in the
order they are evaluated in (a definition after every definition its condition reads)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from lifeloop.audience.models import event_tag_rules, segment_members, segments, tag_rules
from lifeloop.conditions import Condition, parse
from lifeloop.conditions.ast import (
    ActiveDays,
    ActiveWeeks,
    Count,
    DaysSince,
    Fact,
    HasTag,
    InSegment,
    InStage,
    Sum,
    parse_duration,
    walk,
)
from lifeloop.errors import Conflict, InvalidInput, NotFound
from lifeloop.store.schema import utcnow

KEY = re.compile(r"[a-z0-9][a-z0-9_\-]{0,63}")
MAX_TAG = 128
TAG_RULE, SEGMENT = "tag", "segment"

# Seed 000 (LINE): stage tags kept as event tags. TTLs are defaults: intent is short-lived (the
# converting window is a week), product and content interest fade over one and three months.
EVENT_TAG_PRESETS: dict[str, list[tuple[str, str, str, str | None]]] = {
    "line": [
        ("Channel Followed", "source", "source", None),
        ("Channel Followed", "entry_page", "entry_page", None),
        ("Menu Clicked", "item", "interest", "90d"),
        ("Page Viewed", "category", "interest", "90d"),
        ("Message Received", "keyword", "intent", "14d"),
        ("Product Viewed", "category", "product", "30d"),
        ("Product Added", "category", "product", "30d"),
        ("Product Added to Wishlist", "category", "product", "30d"),
    ],
}
# Seed 001 (WeCom): VIP by spend or interaction; adding it creates an advisor task.
TAG_RULE_PRESETS: dict[str, list[tuple[str, str, str, str | None]]] = {
    "wecom": [
        (
            "vip",
            'sum("Order Completed", "revenue", within="365d") >= 2000'
            ' or count(interaction, within="30d") >= 20',
            "VIP by spend or interaction (seed 001)",
            None,  # the seed's advisor task: an advisors task rule on Tag Added vip (docs/engagement.md)
        )
    ],
}
PRESET_KEYS = sorted({*EVENT_TAG_PRESETS, *TAG_RULE_PRESETS})


@dataclass(frozen=True)
class Definition:
    """A tag rule or a segment, parsed."""

    kind: str  # TAG_RULE or SEGMENT
    key: str  # the tag, or the segment key
    id: int
    source: str
    condition: Condition
    emit_on_add: str | None = None


@dataclass(frozen=True)
class EventTagRule:
    event: str
    path: tuple[str, ...]
    prefix: str
    ttl: Any  # timedelta | None


@dataclass
class Audience:
    """A workspace's definitions in evaluation order, and its event-tag rules by event name."""

    order: list[Definition] = field(default_factory=list)
    event_rules: dict[str, list[EventTagRule]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.order and not self.event_rules

    def conditions(self) -> list[Condition]:
        return [d.condition for d in self.order]


def depends_on_time(condition: Condition) -> bool:
    """Whether the condition can change with no new event (the sweep must watch it)."""
    return any(
        isinstance(n, DaysSince | ActiveWeeks | InStage | Fact)
        or (isinstance(n, Count | Sum | ActiveDays) and n.within is not None)
        for n in walk(condition)
    )


def uses(condition: Condition, kind: type | tuple[type, ...]) -> bool:
    return any(isinstance(n, kind) for n in walk(condition))


_parsed: dict[str, Condition] = {}


def _parse_cached(source: str) -> Condition:
    if source not in _parsed:
        _parsed[source] = parse(source)
    return _parsed[source]


def _order(definitions: list[Definition], first: Definition | None = None) -> list[Definition]:
    """Dependencies first (tags before segments where free); a cycle is refused with its path."""
    by_node = {(d.kind, d.key): d for d in definitions}
    rule_tags = {d.key for d in definitions if d.kind == TAG_RULE}

    def deps(d: Definition) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for n in walk(d.condition):
            if isinstance(n, HasTag) and n.tag in rule_tags and (TAG_RULE, n.tag) != (d.kind, d.key):
                found.append((TAG_RULE, n.tag))
            elif isinstance(n, HasTag) and (TAG_RULE, n.tag) == (d.kind, d.key):
                raise InvalidInput(f'tag rule "{d.key}" cannot depend on its own tag', field="condition")
            elif isinstance(n, InSegment):
                if (SEGMENT, n.key) not in by_node:
                    raise InvalidInput(
                        f'in_segment("{n.key}"): there is no segment "{n.key}"', field="condition"
                    )
                found.append((SEGMENT, n.key))
        return found

    ordered: list[Definition] = []
    state: dict[tuple[str, str], str] = {}

    def visit(node: tuple[str, str], path: list[tuple[str, str]]) -> None:
        if state.get(node) == "done":
            return
        if state.get(node) == "open":
            cycle = [*path[path.index(node) :], node]
            text = " → ".join(f"{k} {v}" for k, v in cycle)
            raise InvalidInput(
                f"conditions may not depend on each other in a cycle: {text}", field="condition"
            )
        state[node] = "open"
        for dep in deps(by_node[node]):
            visit(dep, [*path, node])
        state[node] = "done"
        ordered.append(by_node[node])

    if first is not None:  # a cycle is reported from the definition being changed
        visit((first.kind, first.key), [])
    for node in sorted(by_node, key=lambda n: (n[0] != TAG_RULE, n[1])):
        visit(node, [])
    return ordered


def _definitions(conn: Connection, workspace_id: int) -> list[Definition]:
    found = [
        Definition(TAG_RULE, r.tag, r.id, r.condition, _parse_cached(r.condition), r.emit_on_add)
        for r in conn.execute(select(tag_rules).where(tag_rules.c.workspace_id == workspace_id))
    ]
    found += [
        Definition(SEGMENT, r.key, r.id, r.condition, _parse_cached(r.condition))
        for r in conn.execute(
            select(segments.c.id, segments.c.key, segments.c.condition).where(
                segments.c.workspace_id == workspace_id
            )
        )
    ]
    return found


def load(conn: Connection, workspace_id: int) -> Audience:
    audience = Audience(order=_order(_definitions(conn, workspace_id)))
    for r in conn.execute(select(event_tag_rules).where(event_tag_rules.c.workspace_id == workspace_id)):
        ttl = parse_duration(r.ttl) if r.ttl else None
        rule = EventTagRule(r.event, tuple(r.property.split(".")), r.prefix, ttl)
        audience.event_rules.setdefault(r.event, []).append(rule)
    return audience


def _check_order_with(conn: Connection, workspace_id: int, candidate: Definition) -> None:
    """Refuse a definition that reads an unknown segment or closes a cycle (before anything is written)."""
    others = [
        d for d in _definitions(conn, workspace_id) if (d.kind, d.key) != (candidate.kind, candidate.key)
    ]
    _order([*others, candidate], first=candidate)


def _referrers(conn: Connection, workspace_id: int, kind: str, key: str) -> list[str]:
    node = HasTag(key) if kind == TAG_RULE else InSegment(key)
    return [
        f"{d.kind} {d.key}"
        for d in _definitions(conn, workspace_id)
        if (d.kind, d.key) != (kind, key) and any(n == node for n in walk(d.condition))
    ]


def valid_tag(tag: Any, field_name: str = "tag") -> str:
    if not isinstance(tag, str) or not tag.strip() or len(tag) > MAX_TAG or tag != tag.strip():
        raise InvalidInput(f"a tag is 1-{MAX_TAG} characters without surrounding spaces", field=field_name)
    return tag


# --- tag rules ----------------------------------------------------------------------------------
def put_tag_rule(
    conn: Connection,
    workspace_id: int,
    tag: str,
    condition: str,
    *,
    description: str | None = None,
    emit_on_add: str | None = None,
) -> tuple[dict[str, Any], Definition]:
    """Create or replace the rule of ``tag``; returns the row and the parsed definition."""
    valid_tag(tag)
    parsed = parse(condition)
    candidate = Definition(TAG_RULE, tag, 0, condition, parsed, emit_on_add)
    _check_order_with(conn, workspace_id, candidate)
    now = utcnow()
    values = {
        "condition": condition,
        "description": description,
        "emit_on_add": emit_on_add,
        "updated_at": now,
    }
    where = (tag_rules.c.workspace_id == workspace_id, tag_rules.c.tag == tag)
    if conn.execute(select(tag_rules.c.id).where(*where)).first():
        conn.execute(update(tag_rules).where(*where).values(values))
    else:
        conn.execute(insert(tag_rules).values(workspace_id=workspace_id, tag=tag, created_at=now, **values))
    return get_tag_rule(conn, workspace_id, tag), candidate


def get_tag_rule(conn: Connection, workspace_id: int, tag: str) -> dict[str, Any]:
    row = conn.execute(
        select(tag_rules).where(tag_rules.c.workspace_id == workspace_id, tag_rules.c.tag == tag)
    ).first()
    if row is None:
        raise NotFound(f'no tag rule for "{tag}"')
    return dict(row._mapping)


def list_tag_rules(conn: Connection, workspace_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(tag_rules).where(tag_rules.c.workspace_id == workspace_id).order_by(tag_rules.c.tag)
    )
    return [dict(r._mapping) for r in rows]


def delete_tag_rule(conn: Connection, workspace_id: int, tag: str) -> None:
    get_tag_rule(conn, workspace_id, tag)
    if users := _referrers(conn, workspace_id, TAG_RULE, tag):
        raise Conflict(f'the tag "{tag}" is read by {", ".join(users)}; change those first')
    conn.execute(delete(tag_rules).where(tag_rules.c.workspace_id == workspace_id, tag_rules.c.tag == tag))


# --- event-tag rules ----------------------------------------------------------------------------
def add_event_tag_rule(
    conn: Connection, workspace_id: int, event: str, prop: str, prefix: str, ttl: str | None
) -> dict[str, Any]:
    if not isinstance(event, str) or not event.strip() or len(event) > 255:
        raise InvalidInput("event must be an event name", field="event")
    if not isinstance(prop, str) or not all(part.strip() for part in prop.split(".")) or len(prop) > 255:
        raise InvalidInput(
            'property must be a property path such as "source" or "product.category"', field="property"
        )
    if not isinstance(prefix, str) or not KEY.fullmatch(prefix):
        raise InvalidInput("prefix must be lowercase letters, digits, _ or - (up to 64)", field="prefix")
    if ttl is not None and parse_duration(ttl) is None:
        raise InvalidInput('ttl must be a duration such as "30d", "12h" or "2w"', field="ttl")
    where = (
        event_tag_rules.c.workspace_id == workspace_id,
        event_tag_rules.c.event == event,
        event_tag_rules.c.property == prop,
        event_tag_rules.c.prefix == prefix,
    )
    if conn.execute(select(event_tag_rules.c.id).where(*where)).first():
        conn.execute(update(event_tag_rules).where(*where).values(ttl=ttl))
    else:
        conn.execute(
            insert(event_tag_rules).values(
                workspace_id=workspace_id,
                event=event,
                property=prop,
                prefix=prefix,
                ttl=ttl,
                created_at=utcnow(),
            )
        )
    return dict(conn.execute(select(event_tag_rules).where(*where)).one()._mapping)


def list_event_tag_rules(conn: Connection, workspace_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(event_tag_rules)
        .where(event_tag_rules.c.workspace_id == workspace_id)
        .order_by(event_tag_rules.c.event, event_tag_rules.c.property, event_tag_rules.c.prefix)
    )
    return [dict(r._mapping) for r in rows]


def delete_event_tag_rule(conn: Connection, workspace_id: int, rule_id: int) -> None:
    done = conn.execute(
        delete(event_tag_rules).where(
            event_tag_rules.c.workspace_id == workspace_id, event_tag_rules.c.id == rule_id
        )
    )
    if not done.rowcount:
        raise NotFound(f"no event-tag rule {rule_id}")


def install_preset(conn: Connection, workspace_id: int, key: str) -> dict[str, int]:
    """Install a preset's event-tag rules (line) or rule tags (wecom); existing ones are updated."""
    if key not in PRESET_KEYS:
        raise InvalidInput(f"preset must be one of {', '.join(PRESET_KEYS)}", field="preset")
    for event, prop, prefix, ttl in EVENT_TAG_PRESETS.get(key, []):
        add_event_tag_rule(conn, workspace_id, event, prop, prefix, ttl)
    for tag, condition, description, emit in TAG_RULE_PRESETS.get(key, []):
        put_tag_rule(conn, workspace_id, tag, condition, description=description, emit_on_add=emit)
    return {
        "event_tag_rules": len(EVENT_TAG_PRESETS.get(key, [])),
        "tag_rules": len(TAG_RULE_PRESETS.get(key, [])),
    }


# --- segments -----------------------------------------------------------------------------------
def _segment_row(row: Any) -> dict[str, Any]:
    return {
        k: row._mapping[k]
        for k in ("id", "key", "name", "description", "condition", "created_at", "updated_at")
    }


def create_segment(
    conn: Connection,
    workspace_id: int,
    key: str,
    name: str | None,
    condition: str,
    description: str | None = None,
) -> tuple[dict[str, Any], Definition]:
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise InvalidInput("key must be lowercase letters, digits, _ or - (up to 64)", field="key")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise InvalidInput("name is up to 200 characters", field="name")
    parsed = parse(condition)
    candidate = Definition(SEGMENT, key, 0, condition, parsed)
    if conn.execute(
        select(segments.c.id).where(segments.c.workspace_id == workspace_id, segments.c.key == key)
    ).first():
        raise Conflict(f'a segment "{key}" already exists')
    _check_order_with(conn, workspace_id, candidate)
    now = utcnow()
    conn.execute(
        insert(segments).values(
            workspace_id=workspace_id,
            key=key,
            name=name or key,
            description=description,
            condition=condition,
            created_at=now,
            updated_at=now,
        )
    )
    row = get_segment(conn, workspace_id, key)
    return row, Definition(SEGMENT, key, row["id"], condition, parsed)


def update_segment(
    conn: Connection,
    workspace_id: int,
    key: str,
    *,
    name: str | None = None,
    condition: str | None = None,
    description: str | None = None,
) -> tuple[dict[str, Any], Definition]:
    current = get_segment(conn, workspace_id, key)
    source = condition if condition is not None else current["condition"]
    parsed = parse(source)
    _check_order_with(conn, workspace_id, Definition(SEGMENT, key, current["id"], source, parsed))
    values: dict[str, Any] = {"condition": source, "updated_at": utcnow()}
    if name is not None:
        values["name"] = name
    if description is not None:
        values["description"] = description
    conn.execute(
        update(segments)
        .where(segments.c.workspace_id == workspace_id, segments.c.id == current["id"])
        .values(values)
    )
    return get_segment(conn, workspace_id, key), Definition(SEGMENT, key, current["id"], source, parsed)


def get_segment(conn: Connection, workspace_id: int, key: str) -> dict[str, Any]:
    row = conn.execute(
        select(segments).where(segments.c.workspace_id == workspace_id, segments.c.key == key)
    ).first()
    if row is None:
        raise NotFound(f'no segment "{key}"')
    return _segment_row(row)


def list_segments(conn: Connection, workspace_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(segments).where(segments.c.workspace_id == workspace_id).order_by(segments.c.key)
    )
    return [_segment_row(r) for r in rows]


def delete_segment(conn: Connection, workspace_id: int, key: str) -> None:
    """Members go with it (no exit events: the segment no longer exists to be left)."""
    current = get_segment(conn, workspace_id, key)
    if users := _referrers(conn, workspace_id, SEGMENT, key):
        raise Conflict(f'the segment "{key}" is read by {", ".join(users)}; change those first')
    conn.execute(
        delete(segment_members).where(
            segment_members.c.workspace_id == workspace_id, segment_members.c.segment_id == current["id"]
        )
    )
    conn.execute(
        delete(segments).where(segments.c.workspace_id == workspace_id, segments.c.id == current["id"])
    )


def expiry_after(at: datetime, ttl: Any) -> datetime | None:
    return None if ttl is None else at + ttl
