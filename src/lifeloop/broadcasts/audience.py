"""Who a broadcast reaches: its audience resolved to live profile ids, and each one's variant."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy import Connection, select

from lifeloop.broadcasts.definition import Audience, Definition, Variant
from lifeloop.experiments import sticky_fraction, sticky_pick
from lifeloop.store.rows import IN_CHUNK


def chunks(ids: Sequence[int], size: int = IN_CHUNK) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def audience_ids(conn: Connection, workspace_id: int, audience: Audience, *, now: datetime) -> list[int]:
    """Live (not merged) profiles that satisfy every part of the audience, by id."""
    from lifeloop.audience.query import segment_id_of
    from lifeloop.conditions import matching_profiles, parse
    from lifeloop.profiles.models import profiles

    if audience.segment:
        segment_id_of(conn, workspace_id, audience.segment)  # NotFound names an unknown segment
    found: set[int] | None = None
    text = audience.condition_text()
    if text is not None:
        found = set(matching_profiles(conn, workspace_id, parse(text, field="audience"), now=now))
    p = profiles.c
    live = (p.workspace_id == workspace_id, p.merged_into.is_(None))
    if audience.profile_ids is not None:
        listed = _survivors(conn, workspace_id, sorted(set(audience.profile_ids)))
        found = listed if found is None else found & listed
    if audience.user_ids is not None:
        named: set[int] = set()
        for chunk in chunks(sorted(set(audience.user_ids))):  # type: ignore[arg-type]
            named.update(conn.execute(select(p.id).where(*live, p.user_id.in_(chunk))).scalars())
        found = named if found is None else found & named
    if audience.tiers is not None:
        found = _in_tiers(conn, workspace_id, found, set(audience.tiers))
    return sorted(found or ())


def _survivors(conn: Connection, workspace_id: int, ids: list[int]) -> set[int]:
    """Listed profile ids as the profiles that hold them now (a merged id counts as its survivor)."""
    from lifeloop.profiles.models import profiles
    from lifeloop.profiles.service import resolve_profile_id

    p = profiles.c
    out: set[int] = set()
    for chunk in chunks(ids):
        for pid, merged_into in conn.execute(
            select(p.id, p.merged_into).where(p.workspace_id == workspace_id, p.id.in_(chunk))
        ):
            out.add(pid if merged_into is None else resolve_profile_id(conn, workspace_id, pid))
    return out


def _in_tiers(conn: Connection, workspace_id: int, among: set[int] | None, tiers: set[str]) -> set[int]:
    """Profiles (of ``among``, or all) in one of the value tiers, named as the contact policy names them."""
    from lifeloop.messaging.policy import TIER_ALIASES, tier_of
    from lifeloop.profiles.models import profiles

    wanted = {TIER_ALIASES.get(t.strip().lower(), t.strip().lower()) for t in tiers}
    p = profiles.c
    query = select(p.id, p.traits).where(p.workspace_id == workspace_id, p.merged_into.is_(None))
    if among is None:
        return {pid for pid, traits in conn.execute(query) if tier_of(traits) in wanted}
    out: set[int] = set()
    for chunk in chunks(sorted(among)):
        rows = conn.execute(query.where(p.id.in_(chunk)))
        out.update(pid for pid, traits in rows if tier_of(traits) in wanted)
    return out


def variant_of(definition: Definition, broadcast_id: int, profile_id: int) -> Variant | None:
    """The user's variant, or None for the holdout group: the same answer every time it is asked."""
    variants = definition.all_variants()
    roll = sticky_fraction("broadcast", broadcast_id, profile_id)
    index = sticky_pick(roll, definition.holdout, [v.weight for v in variants])
    return None if index is None else variants[index]
