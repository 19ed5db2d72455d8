"""The batch audience path agrees with the per-profile one on generated histories.

``recompute_audience`` computes every profile's recheck in SQL for a range of profiles at once; the
per-profile ``service.schedule`` (the real-time and sweep path) must find the same moment, or a later
one by less than a day (day buckets stand in for the raw events of whole days). Event tags rebuilt
from the log by the database equal the ones real time gave event by event.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from lifeloop.analytics.sync import sync
from lifeloop.audience import batch, definitions
from lifeloop.audience.models import audience_rechecks, profile_tags, segment_members
from lifeloop.audience.service import _View, schedule
from lifeloop.audience.state import load_members, load_tags
from lifeloop.lifecycle import service as lifecycle
from lifeloop.store.schema import utcnow
from tests.conftest import Brand, rows_written
from tests.lifecycle.test_recompute_scale import histories, install, send

SEGMENTS = {
    # a window over raw events and buckets, a threshold on a time, a stage, a tag and another segment
    "buyers": 'count("Order Completed", within="10d") >= 1',
    "quiet_followers": 'count("Channel Followed") >= 1 and days_since(last_interaction) >= 5',
    "habit_vips": 'in_stage("habit") or has_tag("vip") or has_tag("booker")',
    "lapsed_buyers": 'not in_segment("buyers") and sum("Order Completed", "revenue") > 100',
}


def audience_rechecks_of(engine: sa.Engine, workspace_id: int) -> dict[int, datetime]:
    r = audience_rechecks.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(r.profile_id, r.recheck_at).where(r.workspace_id == workspace_id))
        return dict(rows.all())


def schedule_each_profile(engine: sa.Engine, workspace_id: int, now: datetime) -> None:
    """``service.schedule`` (the real-time and sweep path) for every live profile, one at a time."""
    with engine.begin() as conn:
        audience = definitions.load(conn, workspace_id)
        live = lifecycle.live_profiles(conn, workspace_id)
        tags, members = load_tags(conn, workspace_id, live), load_members(conn, workspace_id, live)
        for pid in live:
            view = _View(conn, workspace_id, pid, now=now, tags=tags[pid], members=members[pid])
            schedule(conn, workspace_id, audience, view, tags[pid])


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

    schedule_each_profile(engine, ws, now)  # the per-profile schedule, at the same moment
    exact = audience_rechecks_of(engine, ws)
    assert exact, "the histories have time rules pending"
    assert in_batch.keys() == exact.keys()
    for pid, at in exact.items():
        assert now < in_batch[pid] <= at, (pid, in_batch[pid], at)
        assert at - in_batch[pid] < timedelta(days=1), (pid, in_batch[pid], at)


def audience_state(engine: sa.Engine, workspace_id: int) -> tuple[set[Any], set[Any]]:
    """Every tag (with its kind and expiry) and every segment membership of the workspace."""
    t, m = profile_tags.c, segment_members.c
    with engine.connect() as conn:
        tags = conn.execute(
            sa.select(t.profile_id, t.tag, t.kind, t.expires_at).where(t.workspace_id == workspace_id)
        )
        members = conn.execute(sa.select(m.profile_id, m.segment_id).where(m.workspace_id == workspace_id))
        return set(map(tuple, tags)), set(map(tuple, members))


def test_columnar_recompute_matches_the_sql_and_per_profile_paths(
    engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    ws, copy = brand.workspace_id, tmp_path / "analytics.duckdb"
    raws = histories(seed=4, users=40, base=utcnow())
    send(engine, brand, raws[: len(raws) // 2])
    sync(engine, copy, workspace_id=ws)  # half the events copied, the rest read as the copy's tail
    send(engine, brand, raws[len(raws) // 2 :])
    install(engine, ws, "custom")
    with engine.begin() as conn:  # installed after the events: the recompute places everyone
        for key in definitions.PRESET_KEYS:
            definitions.install_preset(conn, ws, key)
        # A rule tag that a segment reads, with a where= filter on properties and a window.
        booker = 'count("Page Viewed", where=property.category == "booking") >= 1'
        booker += ' and active_days(within="30d") >= 1'
        definitions.put_tag_rule(conn, ws, "booker", booker)
        for key, condition in SEGMENTS.items():
            definitions.create_segment(conn, ws, key, key, condition)

    now = utcnow() + timedelta(days=3, hours=5)
    lifecycle.recompute(engine, ws, now=now, properties=False, analytics_path=copy)
    changes = batch.recompute_audience(engine, ws, now=now, chunk_size=7, analytics_path=copy)
    assert {c.kind for c in changes} == {"tag", "segment"}
    state, in_columnar = audience_state(engine, ws), audience_rechecks_of(engine, ws)
    assert any(kind == "rule" for _, _, kind, _ in state[0]) and state[1]

    # The SQL batch path finds nothing to change, nor does a second columnar run. Each path run again
    # writes no row: its recheck times are those it stored (the SQL path's can be earlier by less than a
    # day, so it rewrites the columnar ones once).
    for run in ({"event_tags": False}, {"analytics_path": copy}):
        assert batch.recompute_audience(engine, ws, now=now, **run) == []
        with rows_written(engine) as written:
            assert batch.recompute_audience(engine, ws, now=now, **run) == []
        assert [w for w in written if "state_changes" not in w] == []  # (pruning the read log aside)
    assert audience_state(engine, ws) == state
    assert audience_rechecks_of(engine, ws) == in_columnar

    schedule_each_profile(engine, ws, now)  # the per-profile schedule gives the very same moments
    assert in_columnar and audience_rechecks_of(engine, ws) == in_columnar
