"""Reading profiles: by id (following merges), by identity, with their identities, merges and timeline."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from lifeloop.errors import InvalidInput, NotFound
from lifeloop.events import store as event_store
from lifeloop.events.messages import normalise_identity
from lifeloop.profiles.models import IDENTITY_KINDS, identities, profile_merges, profiles


@dataclass(slots=True)
class Profile:
    id: int
    user_id: str | None
    traits: dict[str, Any]
    timezone: str | None
    locale: str | None
    first_seen: datetime
    last_seen: datetime
    created_at: datetime
    updated_at: datetime
    identities: list[dict[str, Any]]
    merged_from: list[dict[str, Any]]
    event_count: int


def resolve_profile_id(conn: Connection, workspace_id: int, profile_id: int) -> int:
    """The surviving profile for ``profile_id`` (itself, or the one it was merged into)."""
    row = conn.execute(
        select(profiles.c.id, profiles.c.merged_into).where(
            profiles.c.workspace_id == workspace_id, profiles.c.id == profile_id
        )
    ).first()
    if row is None:
        raise NotFound(f"no profile {profile_id} in this workspace")
    return row.merged_into or row.id


def find_by_identity(conn: Connection, workspace_id: int, kind: str, value: str) -> int:
    if kind not in IDENTITY_KINDS:
        raise InvalidInput(f"identity kind must be one of {', '.join(IDENTITY_KINDS)}", field="identity")
    canonical = value if kind in ("user_id", "anonymous_id") else normalise_identity(kind, value)
    row = conn.execute(
        select(identities.c.profile_id).where(
            identities.c.workspace_id == workspace_id,
            identities.c.kind == kind,
            identities.c.value == canonical,
        )
    ).first()
    if row is None:
        raise NotFound(f"no profile with {kind} {value!r} in this workspace")
    return int(row.profile_id)


def get_profile(conn: Connection, workspace_id: int, profile_id: int) -> Profile:
    pid = resolve_profile_id(conn, workspace_id, profile_id)
    row = conn.execute(
        select(profiles).where(profiles.c.workspace_id == workspace_id, profiles.c.id == pid)
    ).one()
    linked = conn.execute(
        select(identities.c.kind, identities.c.value, identities.c.created_at)
        .where(identities.c.workspace_id == workspace_id, identities.c.profile_id == pid)
        .order_by(identities.c.created_at, identities.c.kind)
    )
    merges = conn.execute(
        select(
            profile_merges.c.loser_id,
            profile_merges.c.reason,
            profile_merges.c.message_id,
            profile_merges.c.events_moved,
            profile_merges.c.merged_at,
        )
        .where(profile_merges.c.workspace_id == workspace_id, profile_merges.c.winner_id == pid)
        .order_by(profile_merges.c.id)
    )
    return _profile_of(
        row,
        identities=[dict(r._mapping) for r in linked],
        merged_from=[
            {"profile_id": r.loser_id, **{k: v for k, v in r._mapping.items() if k != "loser_id"}}
            for r in merges
        ],
        event_count=event_store.count_events(conn, workspace_id, pid),
    )


def _profile_of(
    row: Any, *, identities: list[dict[str, Any]], merged_from: list[dict[str, Any]], event_count: int
) -> Profile:
    return Profile(
        id=row.id,
        user_id=row.user_id,
        traits=row.traits or {},
        timezone=row.timezone,
        locale=row.locale,
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        created_at=row.created_at,
        updated_at=row.updated_at,
        identities=identities,
        merged_from=merged_from,
        event_count=event_count,
    )


def list_profiles(
    conn: Connection, workspace_id: int, *, limit: int = 50, after_id: int | None = None
) -> list[dict[str, Any]]:
    """Surviving profiles, by id, keyset-paginated."""
    query = select(
        profiles.c.id, profiles.c.user_id, profiles.c.traits, profiles.c.first_seen, profiles.c.last_seen
    ).where(profiles.c.workspace_id == workspace_id, profiles.c.merged_into.is_(None))
    if after_id is not None:
        query = query.where(profiles.c.id > after_id)
    return [dict(r._mapping) for r in conn.execute(query.order_by(profiles.c.id).limit(limit))]


def encode_cursor(timestamp: datetime, event_id: int) -> str:
    return base64.urlsafe_b64encode(f"{timestamp.isoformat()}|{event_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, event_id = text.partition("|")
        return datetime.fromisoformat(stamp), int(event_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this API returned", field="cursor") from None


def profile_timeline(
    conn: Connection,
    workspace_id: int,
    profile_id: int,
    *,
    limit: int = 50,
    cursor: str | None = None,
    event_name: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the profile's events (newest first) and the cursor of the next page, if any."""
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500", field="limit")
    pid = resolve_profile_id(conn, workspace_id, profile_id)
    before = decode_cursor(cursor) if cursor else None
    rows = event_store.timeline(
        conn, workspace_id, pid, limit=limit + 1, before=before, event_name=event_name
    )
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1]["timestamp"], page[-1]["id"]) if more else None
    return page, next_cursor


def set_trait(
    conn: Connection, workspace_id: int, trait: str, values: dict[int, Any], *, now: datetime
) -> int:
    """Set one trait on many live profiles (None removes it); returns how many profiles changed.

    For values lifeloop derives itself, such as the RFM ``value_tier``; identify calls set the rest.
    """
    changed: list[dict[str, Any]] = []
    ids = sorted(values)
    for start in range(0, len(ids), 900):
        rows = conn.execute(
            select(profiles.c.id, profiles.c.traits).where(
                profiles.c.workspace_id == workspace_id,
                profiles.c.id.in_(ids[start : start + 900]),
                profiles.c.merged_into.is_(None),
            )
        )
        for row in rows:
            traits = dict(row.traits or {})
            value = values[row.id]
            if traits.get(trait) == value and (value is not None or trait not in traits):
                continue
            if value is None:
                traits.pop(trait, None)
            else:
                traits[trait] = value
            changed.append({"b_id": row.id, "b_traits": traits})
    if changed:
        conn.execute(
            update(profiles)
            .where(profiles.c.workspace_id == workspace_id, profiles.c.id == bindparam("b_id"))
            .values(traits=bindparam("b_traits"), updated_at=now),
            changed,
        )
    return len(changed)


def profiles_with_dates(
    conn: Connection, workspace_id: int, trait: str, *, month_days: list[str] | None = None
) -> list[tuple[int, str, str | None]]:
    """Live profiles whose trait ``trait`` holds a date (text starting YYYY-MM-DD): (id, value, timezone).

    With ``month_days`` (``"MM-DD"``) only dates on those days of any year, found by the database,
    so a daily birthday look reads the few profiles whose day it is, not every profile.
    """
    from sqlalchemy import String, func, literal

    value: Any
    if conn.dialect.name == "postgresql":
        value = profiles.c.traits.op("->>", return_type=String)(literal(trait, String()))
    else:
        value = func.json_extract(profiles.c.traits, '$."' + trait.replace('"', "") + '"')
    query = select(profiles.c.id, value.label("value"), profiles.c.timezone).where(
        profiles.c.workspace_id == workspace_id, profiles.c.merged_into.is_(None), value.is_not(None)
    )
    if month_days is not None:
        query = query.where(func.substr(value, 6, 5).in_(month_days))
    return [(r.id, str(r.value), r.timezone) for r in conn.execute(query) if isinstance(r.value, str)]


def live_profile_ids(conn: Connection, workspace_id: int) -> list[int]:
    """Every profile not merged away, by id."""
    query = (
        select(profiles.c.id)
        .where(profiles.c.workspace_id == workspace_id, profiles.c.merged_into.is_(None))
        .order_by(profiles.c.id)
    )
    return list(conn.execute(query).scalars())


def read_profiles(conn: Connection, workspace_id: int, pids: Sequence[int]) -> dict[int, Profile]:
    """Profiles by id as ``get_profile`` reads them for a template (no identities or merges), in bulk;
    merged and missing ones are left out."""
    from sqlalchemy import func

    from lifeloop.events.models import events

    found: dict[int, Profile] = {}
    p = profiles.c
    for start in range(0, len(pids), 900):
        chunk = pids[start : start + 900]
        rows = conn.execute(
            select(
                p.id, p.user_id, p.traits, p.timezone, p.locale, p.first_seen, p.last_seen, p.created_at,
                p.updated_at,
            ).where(p.workspace_id == workspace_id, p.id.in_(chunk), p.merged_into.is_(None))
        ).all()  # fmt: skip
        if not rows:
            continue
        counts: dict[int, int] = dict(
            conn.execute(
                select(events.c.profile_id, func.count())
                .where(events.c.workspace_id == workspace_id, events.c.profile_id.in_([r.id for r in rows]))
                .group_by(events.c.profile_id)
            ).all()
        )
        for r in rows:
            found[r.id] = _profile_of(r, identities=[], merged_from=[], event_count=int(counts.get(r.id, 0)))
    return found


def identities_of(
    conn: Connection, workspace_id: int, pids: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """Each profile's identities (kind, value), oldest first, in bulk: a list of customers shows how each
    can be reached without reading every profile in full."""
    found: dict[int, list[dict[str, Any]]] = {pid: [] for pid in pids}
    i = identities.c
    for start in range(0, len(pids), 900):
        rows = conn.execute(
            select(i.profile_id, i.kind, i.value)
            .where(i.workspace_id == workspace_id, i.profile_id.in_(pids[start : start + 900]))
            .order_by(i.profile_id, i.created_at, i.kind)
        )
        for r in rows:
            found[r.profile_id].append({"kind": r.kind, "value": r.value})
    return found
