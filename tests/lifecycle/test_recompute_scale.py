"""The set-based recompute agrees with the per-profile path on generated histories.

Stages: recompute (one CASE query) and ``assign_stages`` (one ``StoredProfile`` at a time) give the
same stage to every profile. Rechecks: recompute's times (computed in SQL for a range of profiles)
are the per-profile ``next_recheck`` or earlier, by less than a day, and exact where no day bucket
stands in for raw events. Writes: a recompute that places profiles writes the same history, stage
events and computed properties as the real-time path does.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lifeloop.analytics.sync import sync
from lifeloop.events.messages import parse_message
from lifeloop.events.models import events
from lifeloop.events.service import ingest
from lifeloop.lifecycle import service as lifecycle
from lifeloop.lifecycle.definition import preset
from lifeloop.lifecycle.models import lifecycle_rechecks, stage_history
from lifeloop.profiles.computed import computed_event_days, computed_event_times
from lifeloop.profiles.models import identities
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.models import SourceKey
from tests.conftest import Brand, make_brand, rows_written

# Every kind of time rule the schedule knows: thresholds on several kinds of time, windows over buckets
# and the raw first day, sums in a window, active days and active weeks.
CUSTOM = """
key: custom
name: {zh-CN: 自定义, en: Custom}
stages:
  - key: whale
    name: {zh-CN: 大户, en: Whale}
    when: sum("Order Completed", "revenue", within="45d") > 300 and days_since(last("Order Completed")) <= 20
  - key: habit
    name: {zh-CN: 习惯, en: Habit}
    when: active_days(within="10d") >= 3 or active_weeks(3) >= 3
  - key: cooling
    name: {zh-CN: 降温, en: Cooling}
    when: >-
      days_since(last_interaction) > 5 and days_since(first_seen) >= 14
      and not days_since(first("Menu Clicked")) < 60
  - key: other
    name: {zh-CN: 其他, en: Other}
    when: count(interaction, within="3d") == 0
"""
MODELS = ["line", "wecom", "aarrr", "mall", "custom"]

EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("Channel Followed", {"channel": "line"}),
    ("Channel Unfollowed", {"channel": "line"}),
    ("Menu Clicked", {"menu": "main"}),
    ("Message Received", {"text": "hi"}),
    ("Message Received", {"text": "想預約", "keyword": "預約"}),
    ("Page Viewed", {"category": "booking"}),
    ("Page Viewed", {"category": "product"}),
    ("Product Added", {}),
    ("Product Added to Wishlist", {}),
    ("Survey Submitted", {"survey": "nps"}),
    ("Order Completed", {"revenue": 120}),
    ("Order Completed", {"revenue": 260.5}),
    ("Referral Completed", {}),
    ("Message Delivered", {}),  # lifeloop's own: not an interaction
    ("$identify", {}),
]


def histories(seed: int, users: int, base: datetime, *, merges: bool = True) -> list[dict[str, Any]]:
    """Raw Segment messages: each user active over a random span of the last 200 days; with ``merges``
    some start anonymous and are merged on identify."""
    rng = random.Random(seed)
    raws: list[dict[str, Any]] = []
    for u in range(users):
        user = f"user-{u}"
        anonymous = f"anon-{u}" if merges and u % 5 == 0 else None
        start = rng.uniform(0, 200)
        end = max(0.0, start - rng.expovariate(1 / 40))
        for n in range(rng.randint(1, 25)):
            days_ago = rng.uniform(end, start) if n else start
            name, props = EVENTS[0] if n == 0 else rng.choice(EVENTS)
            at = (base - timedelta(days=days_ago)).isoformat()
            ids = {"anonymousId": anonymous} if anonymous and n < 3 else {"userId": user}
            raw: dict[str, Any] = {"messageId": f"{user}-{n}", "timestamp": at, **ids}
            if name == "$identify":
                traits = {"phone": "0912"} | ({"birthday": "1990-01-01"} if u % 2 else {})
                raw |= {"type": "identify", "traits": traits}
                if anonymous:
                    raw |= {"userId": user, "anonymousId": anonymous}
            elif name == "Page Viewed":
                raw |= {"type": "page", "name": "p", "properties": props}
            else:
                raw |= {"type": "track", "event": name, "properties": props}
            raws.append(raw)
    return raws


def send(engine: sa.Engine, brand: Brand, raws: list[dict[str, Any]]) -> None:
    key = SourceKey(workspace_id=brand.workspace_id, source_id=brand.source_id)
    ingest(engine, key, [parse_message(r, received_at=utcnow()) for r in raws])
    resolve_pending(engine)


def install(engine: sa.Engine, workspace_id: int, model: str) -> None:
    with engine.begin() as conn:
        if model == "custom":
            lifecycle.install_model(conn, workspace_id, CUSTOM)
        else:
            lifecycle.install_preset(conn, workspace_id, model)


def rechecks(engine: sa.Engine, workspace_id: int) -> dict[int, datetime]:
    r = lifecycle_rechecks.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(r.profile_id, r.recheck_at).where(r.workspace_id == workspace_id))
        return dict(rows.all())


def stages(engine: sa.Engine, workspace_id: int, model: str) -> dict[int, str]:
    with engine.connect() as conn:
        live = lifecycle.live_profiles(conn, workspace_id)
        return lifecycle.current_stages(conn, workspace_id, model, live)


@pytest.mark.parametrize("model", MODELS)
def test_set_based_recompute_matches_the_per_profile_path(
    engine: sa.Engine, brand: Brand, model: str
) -> None:
    install(engine, brand.workspace_id, model)
    send(engine, brand, histories(seed=MODELS.index(model), users=40, base=utcnow()))
    key = "custom" if model == "custom" else preset(model).key

    now = utcnow() + timedelta(days=3, hours=5)  # time has passed: some stages and windows moved
    # Small ranges and two stage-query workers, so profiles are split over several of each.
    changes = lifecycle.recompute(engine, brand.workspace_id, now=now, chunk_size=7, workers=2)
    batch_stages = stages(engine, brand.workspace_id, key)
    batch_rechecks = rechecks(engine, brand.workspace_id)
    assert len(set(batch_stages.values())) >= 2, batch_stages  # the data reaches several stages
    assert {c.reason for c in changes} <= {"recompute"}

    # The per-profile path at the same moment finds the same stages (so changes nothing)…
    with engine.begin() as conn:
        live = lifecycle.live_profiles(conn, brand.workspace_id)
        assert lifecycle.assign_stages(conn, brand.workspace_id, live, now=now, reason="check") == []
    assert stages(engine, brand.workspace_id, key) == batch_stages
    # …and its recheck times are the batch ones or later, by less than a day.
    exact = rechecks(engine, brand.workspace_id)
    assert exact, "the generated histories have time rules pending"
    assert batch_rechecks.keys() == exact.keys()
    for pid, at in exact.items():
        assert now < batch_rechecks[pid] <= at, (pid, batch_rechecks[pid], at)
        assert at - batch_rechecks[pid] < timedelta(days=1), (pid, batch_rechecks[pid], at)
    if model in ("mall", "wecom"):  # thresholds on times only: the two are identical
        assert batch_rechecks == exact


def lifecycle_trail(engine: sa.Engine, workspace_id: int) -> dict[str, Any]:
    """Per user id: stage history (from, to), lifeloop's stage events and their computed rows."""
    h, e, d, t = stage_history.c, events.c, computed_event_days.c, computed_event_times.c
    names = ("Lifecycle Stage Entered", "Lifecycle Stage Exited", "Churn Risk Detected")
    with engine.connect() as conn:
        i = identities.c
        users = dict(
            conn.execute(
                sa.select(i.profile_id, i.value).where(i.workspace_id == workspace_id, i.kind == "user_id")
            ).all()
        )
        trail: dict[str, Any] = {
            user: {"history": [], "events": [], "days": [], "times": []} for user in users.values()
        }
        for row in conn.execute(
            sa.select(h.profile_id, h.from_stage, h.to_stage)
            .where(h.workspace_id == workspace_id)
            .order_by(h.id)
        ):
            trail[users[row.profile_id]]["history"].append((row.from_stage, row.to_stage))
        for row in conn.execute(
            sa.select(e.profile_id, e.event, e.properties)
            .where(e.workspace_id == workspace_id, e.event.in_(names))
            .order_by(e.profile_id, e.event)
        ):
            props = {k: v for k, v in row.properties.items() if k != "reason"}
            trail[users[row.profile_id]]["events"].append((row.event, sorted(props.items(), key=str)))
        for row in conn.execute(
            sa.select(d.profile_id, d.event, d.event_count).where(
                d.workspace_id == workspace_id, d.event.in_(names)
            )
        ):
            trail[users[row.profile_id]]["days"].append((row.event, row.event_count))
        for row in conn.execute(
            sa.select(t.profile_id, t.event).where(t.workspace_id == workspace_id, t.event.in_(names))
        ):
            trail[users[row.profile_id]]["times"].append(row.event)
    for entry in trail.values():
        for part in ("events", "days", "times"):
            entry[part].sort(key=str)
    return trail


def test_recompute_writes_what_the_real_time_path_writes(engine: sa.Engine, brand: Brand) -> None:
    base = utcnow()
    raws = histories(seed=99, users=30, base=base, merges=False)  # a merged-away profile keeps its history
    # Workspace A places profiles as their events arrive; workspace B gets the model afterwards and
    # places them all with one recompute.
    install(engine, brand.workspace_id, "mall")
    send(engine, brand, raws)
    other = make_brand(engine, "other")
    send(engine, other, raws)
    install(engine, other.workspace_id, "mall")
    changes = lifecycle.recompute(engine, other.workspace_id)

    assert len(changes) == len(stages(engine, other.workspace_id, "mall")) > 0
    realtime, batch = lifecycle_trail(engine, brand.workspace_id), lifecycle_trail(engine, other.workspace_id)
    assert batch == realtime
    assert any(entry["events"] for entry in batch.values())
    assert any(e[0] == "Churn Risk Detected" for entry in batch.values() for e in entry["events"])
    # Nothing to do the second time, and nothing written but the rebuilt properties: not even the same
    # recheck times again.
    assert lifecycle.recompute(engine, other.workspace_id) == []
    with rows_written(engine) as written:
        assert lifecycle.recompute(engine, other.workspace_id, properties=False) == []
    assert written == []
    assert lifecycle_trail(engine, other.workspace_id) == batch


@pytest.mark.parametrize("model", MODELS)
def test_columnar_recompute_matches_the_per_profile_path(
    engine: sa.Engine, brand: Brand, model: str, tmp_path: Path
) -> None:
    copy = tmp_path / "analytics.duckdb"
    raws = histories(seed=10 + MODELS.index(model), users=40, base=utcnow())
    # Half the events are copied before the rest arrive: merges then join copied and new events.
    send(engine, brand, raws[: len(raws) // 2])
    sync(engine, copy, workspace_id=brand.workspace_id)
    send(engine, brand, raws[len(raws) // 2 :])
    install(engine, brand.workspace_id, model)  # every profile enters a stage in the recompute
    key = "custom" if model == "custom" else preset(model).key

    now = utcnow() + timedelta(days=3, hours=5)
    changes = lifecycle.recompute(
        engine, brand.workspace_id, now=now, chunk_size=7, properties=False, analytics_path=copy
    )
    columnar_stages = stages(engine, brand.workspace_id, key)
    columnar_rechecks = rechecks(engine, brand.workspace_id)
    assert len(set(columnar_stages.values())) >= 2, columnar_stages
    assert len(changes) == len(columnar_stages)
    assert columnar_rechecks, "the generated histories have time rules pending"

    # The per-profile path at the same moment changes nothing and computes the very same recheck times.
    with engine.begin() as conn:
        live = lifecycle.live_profiles(conn, brand.workspace_id)
        assert lifecycle.assign_stages(conn, brand.workspace_id, live, now=now, reason="check") == []
    assert stages(engine, brand.workspace_id, key) == columnar_stages
    assert rechecks(engine, brand.workspace_id) == columnar_rechecks
    # The SQL batch path agrees on the stages, and a second columnar run has nothing to write.
    assert lifecycle.recompute(engine, brand.workspace_id, now=now, properties=False) == []
    before = written(engine, brand.workspace_id)
    again = lifecycle.recompute(engine, brand.workspace_id, now=now, properties=False, analytics_path=copy)
    assert again == []
    assert written(engine, brand.workspace_id) == before


def written(engine: sa.Engine, workspace_id: int) -> tuple[int, int]:
    """How many history rows and events the workspace holds."""
    with engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.workspace_id == workspace_id)
            ).scalar_one()
            for table in (stage_history, events)
        )
