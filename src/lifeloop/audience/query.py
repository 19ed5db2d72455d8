"""Reading the audience: tags held, counts, segment preview (SQL, nothing written) and CSV export."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, func, select

from lifeloop.audience.definitions import get_segment
from lifeloop.audience.models import profile_tags, segment_members
from lifeloop.conditions import compile_condition, parse
from lifeloop.errors import InvalidInput
from lifeloop.profiles.models import profiles
from lifeloop.store.engine import connect

MAX_PREVIEW = 500
EXPORT_COLUMNS = ("profile_id", "user_id", "email", "traits")


def _holds(now: datetime) -> Any:
    return profile_tags.c.expires_at.is_(None) | (profile_tags.c.expires_at > now)


def tag_counts(conn: Connection, workspace_id: int, now: datetime) -> list[dict[str, Any]]:
    """Every tag held now, with how many profiles hold it, by kind."""
    t = profile_tags.c
    rows = conn.execute(
        select(t.tag, t.kind, func.count())
        .where(t.workspace_id == workspace_id, _holds(now))
        .group_by(t.tag, t.kind)
        .order_by(t.tag, t.kind)
    )
    return [{"tag": r[0], "kind": r[1], "profiles": int(r[2])} for r in rows]


def profile_tag_list(
    conn: Connection, workspace_id: int, profile_id: int, now: datetime
) -> list[dict[str, Any]]:
    t = profile_tags.c
    rows = conn.execute(
        select(t.tag, t.kind, t.added_at, t.expires_at)
        .where(t.workspace_id == workspace_id, t.profile_id == profile_id, _holds(now))
        .order_by(t.tag)
    )
    return [dict(r._mapping) for r in rows]


def member_count(conn: Connection, workspace_id: int, key: str) -> int:
    segment = get_segment(conn, workspace_id, key)
    m = segment_members.c
    query = select(func.count()).where(m.workspace_id == workspace_id, m.segment_id == segment["id"])
    return int(conn.execute(query).scalar_one())


def member_ids(conn: Connection, workspace_id: int, key: str) -> list[int]:
    """Every member of a segment, by profile id (journeys enter a segment's members)."""
    segment = get_segment(conn, workspace_id, key)
    m = segment_members.c
    query = (
        select(m.profile_id)
        .where(m.workspace_id == workspace_id, m.segment_id == segment["id"])
        .order_by(m.profile_id)
    )
    return list(conn.execute(query).scalars())


def _person(row: Any) -> dict[str, Any]:
    traits = row.traits or {}
    email = traits.get("email") if isinstance(traits, dict) else None
    return {"profile_id": row.id, "user_id": row.user_id, "email": email, "traits": traits}


def preview(
    conn: Connection,
    workspace_id: int,
    condition: str,
    *,
    now: datetime,
    limit: int = 20,
    after_id: int | None = None,
) -> dict[str, Any]:
    """How many profiles match ``condition`` now and the first ``limit`` of them, by the SQL compiler.

    ``after_id`` pages through the matches by profile id (the console's customer search): the count is
    still of every match, the profiles are the next ``limit`` with a larger id.
    """
    if not isinstance(limit, int) or not 0 <= limit <= MAX_PREVIEW:
        raise InvalidInput(f"limit must be 0-{MAX_PREVIEW}", field="limit")
    query = compile_condition(
        parse(condition), workspace_id=workspace_id, now=now, dialect=conn.dialect.name, conn=conn
    )
    matching = query.subquery()
    count = conn.execute(select(func.count()).select_from(matching)).scalar_one()
    # The page is cut from the matches themselves (in id order, through the primary key), so only its
    # ``limit`` ids reach the profiles table: an IN over every match costs 0.4 s at a million profiles.
    page = select(matching.c.id).distinct()
    if after_id is not None:
        page = page.where(matching.c.id > after_id)
    page = page.order_by(matching.c.id).limit(limit)
    listed = select(profiles.c.id, profiles.c.user_id, profiles.c.traits).where(
        profiles.c.workspace_id == workspace_id, profiles.c.id.in_(page.scalar_subquery())
    )
    first = conn.execute(listed.order_by(profiles.c.id))
    return {"count": int(count), "profiles": [_person(r) for r in first]}


def export_csv(
    engine: Engine, workspace_id: int, segment_id: int, *, chunk_rows: int = 1000
) -> Iterator[str]:
    """The segment's members as CSV text chunks, read in pages by profile id (streams any size)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    after = 0
    m = segment_members.c
    while True:
        with connect(engine) as conn:
            rows = conn.execute(
                select(profiles.c.id, profiles.c.user_id, profiles.c.traits)
                .select_from(
                    segment_members.join(
                        profiles,
                        (profiles.c.workspace_id == m.workspace_id) & (profiles.c.id == m.profile_id),
                    )
                )
                .where(
                    m.workspace_id == workspace_id,
                    profiles.c.workspace_id == workspace_id,
                    m.segment_id == segment_id,
                    m.profile_id > after,
                )
                .order_by(m.profile_id)
                .limit(chunk_rows)
            ).all()
        for row in rows:
            person = _person(row)
            traits = orjson.dumps(person["traits"], option=orjson.OPT_SORT_KEYS).decode()
            writer.writerow((person["profile_id"], person["user_id"] or "", person["email"] or "", traits))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(rows) < chunk_rows:
            return
        after = rows[-1].id


def segment_id_of(conn: Connection, workspace_id: int, key: str) -> int:
    return int(get_segment(conn, workspace_id, key)["id"])
