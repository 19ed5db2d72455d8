"""``lifeloop recompute``: stages, then tags and segments, of one workspace in batch.

The columnar engine (the default) syncs the analytics copy of the events once and evaluates the lifecycle
model and every tag rule and segment on it through one ``columnar.Workspace``, so the values they share
(``first_seen``, windowed counts…) are computed in a single scan of the events. The SQL engine evaluates
them on the operational database, one query per condition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from lifeloop.analytics.sync import Progress, sync
from lifeloop.audience import batch
from lifeloop.audience.definitions import load
from lifeloop.audience.state import Change
from lifeloop.columnar import Workspace
from lifeloop.lifecycle import service as lifecycle
from lifeloop.lifecycle.bulk import StageChange
from lifeloop.store.engine import connect
from lifeloop.store.schema import utcnow

OnProgress = Callable[[int, int], None]


@dataclass
class Recomputed:
    stage_changes: list[StageChange]
    audience_changes: list[Change]
    seconds: dict[str, float] = field(default_factory=dict)  # per phase


def recompute_workspace(
    engine: Engine,
    workspace_id: int,
    *,
    analytics_path: str | Path | None,
    now: datetime | None = None,
    from_log: bool = True,
    on_copy: Progress | None = None,
    on_stages: OnProgress | None = None,
    on_audience: OnProgress | None = None,
) -> Recomputed:
    """Rebuild the stages, tags and segments of a workspace (with ``from_log``, also the computed
    properties and event tags, from the event log); columnar on the analytics store at ``analytics_path``,
    or SQL when it is None."""
    now = now or utcnow()
    seconds: dict[str, float] = {}
    if analytics_path is None:
        stages = lifecycle.recompute(
            engine, workspace_id, now=now, on_progress=on_stages, properties=from_log, timings=seconds
        )
        started = time.perf_counter()
        moved = batch.recompute_audience(
            engine, workspace_id, now=now, on_progress=on_audience, event_tags=from_log
        )
        seconds["audience"] = time.perf_counter() - started
        return Recomputed(stages, moved, seconds)
    started = time.perf_counter()
    # merges come from the state copy (columnar.Workspace), not the metrics' profile map
    sync(engine, analytics_path, workspace_id=workspace_id, progress=on_copy, profile_map=False)
    seconds["copy"] = time.perf_counter() - started
    with Workspace(engine, workspace_id, analytics_path, now=now) as columnar:
        with connect(engine) as conn:
            model = lifecycle.active_model(conn, workspace_id)
            audience = load(conn, workspace_id)
        # Every condition's values are registered before the first evaluation: one scan computes them all.
        for conditions in ([s.condition for s in model.stages] if model else [], audience.conditions()):
            for condition in conditions:
                columnar.plan.test(condition)
            columnar.plan.recheck(conditions)
        stages = lifecycle.recompute(
            engine,
            workspace_id,
            now=now,
            on_progress=on_stages,
            properties=from_log,
            timings=seconds,
            columnar_copy=columnar,
        )
        started = time.perf_counter()
        moved = batch.recompute_audience(
            engine,
            workspace_id,
            now=now,
            on_progress=on_audience,
            event_tags=from_log,
            columnar_copy=columnar,
        )
        seconds["audience"] = time.perf_counter() - started
    return Recomputed(stages, moved, seconds)
