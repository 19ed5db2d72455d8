"""Stages on stored profiles: assigned in real time as events are resolved, moved by the sweep when only
time passes, rebuilt in batch by recompute with the same result, with history and stage events."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from lifeloop.events.messages import parse_message
from lifeloop.events.models import events
from lifeloop.events.service import ingest
from lifeloop.lifecycle import service as lifecycle
from lifeloop.lifecycle.models import lifecycle_rechecks, profile_stages
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.profiles.service import find_by_identity
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.models import SourceKey
from tests.conftest import Brand
from tests.lifecycle.test_presets import CASES, Case

MODELS = ["line", "wecom", "aarrr", "mall"]


def send_history(engine: sa.Engine, brand: Brand, user: str, case: Case, base: datetime) -> None:
    raws = []
    for n, (days, name, props) in enumerate(case.history):
        at = (base - timedelta(days=days)).isoformat()
        raw: dict = {"userId": user, "messageId": f"{user}-{n}", "timestamp": at}
        if name == "$identify":
            raw |= {"type": "identify", "traits": case.traits}
        elif name == "Page Viewed":
            raw |= {"type": "page", "name": "page", "properties": props}
        else:
            raw |= {"type": "track", "event": name, "properties": props}
        raws.append(raw)
    key = SourceKey(workspace_id=brand.workspace_id, source_id=brand.source_id)
    ingest(engine, key, [parse_message(r, received_at=utcnow()) for r in raws])


def stages_by_user(engine: sa.Engine, brand: Brand, users: list[str], model: str) -> dict[str, str | None]:
    with engine.connect() as conn:
        pids = {u: find_by_identity(conn, brand.workspace_id, "user_id", u) for u in users}
        current = lifecycle.current_stages(conn, brand.workspace_id, model, list(pids.values()))
    return {u: current.get(pid) for u, pid in pids.items()}


@pytest.mark.parametrize("model", MODELS)
def test_real_time_stages_match_the_seeds_and_recompute_agrees(
    engine: sa.Engine, brand: Brand, model: str
) -> None:
    cases = [c for c in CASES if c.model == model and not c.tags]
    with engine.begin() as conn:
        lifecycle.install_preset(conn, brand.workspace_id, model)
    base = utcnow()
    users = [f"{model}-{i}" for i in range(len(cases))]
    for user, case in zip(users, cases, strict=True):
        send_history(engine, brand, user, case, base)
    resolve_pending(engine)

    expected = {u: c.expected for u, c in zip(users, cases, strict=True)}
    assert stages_by_user(engine, brand, users, model) == expected

    # The batch path (one SQL query per stage) finds the same stages, so it changes nothing.
    assert lifecycle.recompute(engine, brand.workspace_id, now=utcnow()) == []
    with engine.connect() as conn:
        active = lifecycle.require_active_model(conn, brand.workspace_id)
        batch = lifecycle.batch_stages(conn, brand.workspace_id, active, now=utcnow())
        pids = {u: find_by_identity(conn, brand.workspace_id, "user_id", u) for u in users}
        assert {u: batch.get(pid) for u, pid in pids.items()} == expected

        # Each placed profile has one history row and one "Lifecycle Stage Entered" event.
        for user, stage in expected.items():
            rows = lifecycle.history(conn, brand.workspace_id, pids[user])
            if stage is None:
                assert rows == []
                continue
            assert [(r["from_stage"], r["to_stage"], r["reason"]) for r in rows] == [(None, stage, "event")]
            entered = conn.execute(
                sa.select(events.c.properties).where(
                    events.c.workspace_id == brand.workspace_id,
                    events.c.profile_id == pids[user],
                    events.c.event == lifecycle.ENTERED,
                )
            ).scalar_one()
            assert entered["stage"] == stage and entered["model"] == model


def test_the_sweep_moves_only_profiles_whose_time_has_come(engine: sa.Engine, brand: Brand) -> None:
    with engine.begin() as conn:
        lifecycle.install_preset(conn, brand.workspace_id, "mall")
    base = utcnow()
    fresh = Case("mall", "", ((7.9, "Page Viewed", {}),), "new")
    settled = Case("mall", "", ((50, "Page Viewed", {}), (2, "Order Completed", {})), "mature")
    send_history(engine, brand, "fresh", fresh, base)
    for i in range(20):
        send_history(engine, brand, f"settled-{i}", settled, base)
    resolve_pending(engine)
    assert stages_by_user(engine, brand, ["fresh", "settled-0"], "mall") == {
        "fresh": "new",
        "settled-0": "mature",
    }

    # Nothing is due yet; a day later only "fresh" (day 8 → growing) is re-evaluated.
    assert lifecycle.sweep(engine, brand.workspace_id, now=utcnow()) == 0
    moved = lifecycle.sweep(engine, brand.workspace_id, now=base + timedelta(days=1))
    assert moved == 1
    assert stages_by_user(engine, brand, ["fresh", "settled-0"], "mall") == {
        "fresh": "growing",
        "settled-0": "mature",
    }
    with engine.connect() as conn:
        pid = find_by_identity(conn, brand.workspace_id, "user_id", "fresh")
        steps = [
            (r["from_stage"], r["to_stage"], r["reason"])
            for r in lifecycle.history(conn, brand.workspace_id, pid)
        ]
        assert steps == [(None, "new", "event"), ("new", "growing", "time")]
        exited = conn.execute(
            sa.select(events.c.properties).where(
                events.c.workspace_id == brand.workspace_id,
                events.c.profile_id == pid,
                events.c.event == lifecycle.EXITED,
            )
        ).scalar_one()
        assert exited["stage"] == "new" and exited["next_stage"] == "growing"

    # 48 days later the settled buyers have been silent 50 days and are 98 days old: declining,
    # with the seed's churn warning event.
    later = base + timedelta(days=48)
    assert lifecycle.sweep(engine, brand.workspace_id, now=later) == 21
    assert stages_by_user(engine, brand, ["settled-0"], "mall") == {"settled-0": "declining"}
    with engine.connect() as conn:
        warnings = conn.execute(
            sa.select(sa.func.count()).where(
                events.c.workspace_id == brand.workspace_id, events.c.event == "Churn Risk Detected"
            )
        ).scalar_one()
        assert warnings == 20
        due_later = conn.execute(
            sa.select(sa.func.count()).where(
                lifecycle_rechecks.c.workspace_id == brand.workspace_id,
                lifecycle_rechecks.c.recheck_at <= later,
            )
        ).scalar_one()
        assert due_later == 0


def test_a_merge_leaves_one_stage_on_the_survivor(engine: sa.Engine, brand: Brand) -> None:
    with engine.begin() as conn:
        lifecycle.install_preset(conn, brand.workspace_id, "line")
    key = SourceKey(workspace_id=brand.workspace_id, source_id=brand.source_id)
    now = utcnow()
    raws = [
        {"type": "track", "event": "Channel Followed", "anonymousId": "line-friend", "messageId": "f"},
        {"type": "track", "event": "Order Completed", "userId": "buyer", "messageId": "o"},
    ]
    ingest(engine, key, [parse_message(r, received_at=now) for r in raws])
    resolve_pending(engine)
    alias = {"type": "alias", "userId": "buyer", "previousId": "line-friend", "messageId": "a"}
    ingest(engine, key, [parse_message(alias, received_at=now)])
    resolve_pending(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(profile_stages.c.profile_id, profile_stages.c.stage).where(
                profile_stages.c.workspace_id == brand.workspace_id
            )
        ).all()
        survivor = find_by_identity(conn, brand.workspace_id, "user_id", "buyer")
    assert rows == [(survivor, "loyal")]


def test_installing_a_model_keeps_versions_and_one_active(engine: sa.Engine, brand: Brand) -> None:
    with engine.begin() as conn:
        lifecycle.install_preset(conn, brand.workspace_id, "line")
        lifecycle.install_preset(conn, brand.workspace_id, "line")
        lifecycle.install_preset(conn, brand.workspace_id, "mall")
        listed = lifecycle.list_models(conn, brand.workspace_id)
        assert [(m["key"], m["version"], m["active"]) for m in listed] == [
            ("line", 1, False),
            ("line", 2, False),
            ("mall", 1, True),
        ]
        assert lifecycle.require_active_model(conn, brand.workspace_id).key == "mall"
