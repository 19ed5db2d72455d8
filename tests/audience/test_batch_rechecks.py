"""The batch audience path agrees with the per-profile one on generated histories.

``recompute_audience`` computes every profile's recheck in SQL for a range of profiles at once; the
per-profile ``service.schedule`` (the real-time and sweep path) must find the same moment, or a later
one by less than a day (day buckets stand in for the raw events of whole days). Event tags rebuilt
from the log by the database equal the ones real time gave event by event.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from lifeloop.audience import batch, definitions
from lifeloop.audience.models import audience_rechecks, profile_tags
from lifeloop.audience.service import _View, schedule
from lifeloop.audience.state import load_members, load_tags
from lifeloop.lifecycle import service as lifecycle
from lifeloop.store.schema import utcnow
from tests.conftest import Brand
from tests.lifecycle.test_recompute_scale import histories, install, send

SEGMENTS = {
    # a window over raw events and buckets, a threshold on a time, a stage, a tag and another segment
    "buyers": 'count("Order Completed", within="10d") >= 1',
    "quiet_followers": 'count("Channel Followed") >= 1 and days_since(last_interaction) >= 5',
    "habit_vips": 'in_stage("habit") or has_tag("vip")',
    "lapsed_buyers": 'not in_segment("buyers") and sum("Order Completed", "revenue") > 100',
}


def audience_rechecks_of(engine: sa.Engine, workspace_id: int) -> dict[int, datetime]:
    r = audience_rechecks.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(r.profile_id, r.recheck_at).where(r.workspace_id == workspace_id))
        return dict(rows.all())


def event_tags_of(engine: sa.Engine, workspace_id: int) -> set[tuple[int, str, datetime | None]]:
    t = profile_tags.c
    with engine.connect() as conn:
        query = sa.select(t.profile_id, t.tag, t.expires_at).where(
            t.workspace_id == workspace_id, t.kind == "event"
        )
        return {(r.profile_id, r.tag, r.expires_at) for r in conn.execute(query)}


def test_batch_rechecks_and_event_tags_match_the_per_profile_path(engine: sa.Engine, brand: Brand) -> None:
    ws = brand.workspace_id
    install(engine, ws, "custom")
    with engine.begin() as conn:
        for key in definitions.PRESET_KEYS:  # line event tags (with expiries), wecom vip (windows)
            definitions.install_preset(conn, ws, key)
        for key, condition in SEGMENTS.items():
            definitions.create_segment(conn, ws, key, key, condition)
    send(engine, brand, histories(seed=3, users=40, base=utcnow()))
    real_time_tags = event_tags_of(engine, ws)
    assert real_time_tags, "the histories give event tags"

    now = utcnow() + timedelta(days=3, hours=5)  # time has passed: windows moved, some tags expired
    lifecycle.recompute(engine, ws, now=now, chunk_size=7)
    batch.recompute_audience(engine, ws, now=now, chunk_size=7)  # several ranges
    rebuilt = event_tags_of(engine, ws)
    assert rebuilt == {(p, tag, at) for p, tag, at in real_time_tags if at is None or at > now}
    in_batch = audience_rechecks_of(engine, ws)

    with engine.begin() as conn:  # the per-profile schedule of every profile, at the same moment
        audience = definitions.load(conn, ws)
        live = lifecycle.live_profiles(conn, ws)
        tags, members = load_tags(conn, ws, live), load_members(conn, ws, live)
        for pid in live:
            view = _View(conn, ws, pid, now=now, tags=tags[pid], members=members[pid])
            schedule(conn, ws, audience, view, tags[pid])
    exact = audience_rechecks_of(engine, ws)
    assert exact, "the histories have time rules pending"
    assert in_batch.keys() == exact.keys()
    for pid, at in exact.items():
        assert now < in_batch[pid] <= at, (pid, in_batch[pid], at)
        assert at - in_batch[pid] < timedelta(days=1), (pid, in_batch[pid], at)
