"""Reading identity state straight from the store, to check what the API did."""

from __future__ import annotations

import sqlalchemy as sa

from lifeloop.events.models import events
from lifeloop.profiles.models import identities, profile_merges, profiles


def owner(engine: sa.Engine, workspace_id: int, kind: str, value: str) -> int | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(identities.c.profile_id).where(
                identities.c.workspace_id == workspace_id,
                identities.c.kind == kind,
                identities.c.value == value,
            )
        ).scalar()


def event_profiles(engine: sa.Engine, workspace_id: int) -> dict[str, int]:
    """message_id → profile id."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(events.c.message_id, events.c.profile_id).where(events.c.workspace_id == workspace_id)
        )
        return {r.message_id: r.profile_id for r in rows}


def partition(engine: sa.Engine, workspace_id: int) -> set[frozenset[str]]:
    """Events grouped by the profile they belong to (independent of profile ids)."""
    groups: dict[int, set[str]] = {}
    for message_id, pid in event_profiles(engine, workspace_id).items():
        groups.setdefault(pid, set()).add(message_id)
    return {frozenset(g) for g in groups.values()}


def merges(engine: sa.Engine, workspace_id: int) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(profile_merges)
            .where(profile_merges.c.workspace_id == workspace_id)
            .order_by(profile_merges.c.id)
        )
        return [dict(r._mapping) for r in rows]


def assert_consistent(engine: sa.Engine, workspace_id: int) -> None:
    """No event or identity points at a merged-away or missing profile."""
    with engine.connect() as conn:
        live = {
            r.id
            for r in conn.execute(
                sa.select(profiles.c.id).where(
                    profiles.c.workspace_id == workspace_id, profiles.c.merged_into.is_(None)
                )
            )
        }
        event_owners = set(
            conn.execute(
                sa.select(events.c.profile_id).where(events.c.workspace_id == workspace_id)
            ).scalars()
        )
        identity_owners = set(
            conn.execute(
                sa.select(identities.c.profile_id).where(identities.c.workspace_id == workspace_id)
            ).scalars()
        )
        chained = conn.execute(
            sa.select(sa.func.count())
            .select_from(profiles)
            .where(profiles.c.workspace_id == workspace_id, profiles.c.merged_into.is_not(None))
            .where(profiles.c.merged_into.not_in(live) if live else sa.true())
        ).scalar_one()
    assert event_owners <= live, f"events on merged profiles: {event_owners - live}"
    assert identity_owners <= live, f"identities on merged profiles: {identity_owners - live}"
    assert chained == 0, "a merged profile points at another merged profile"
