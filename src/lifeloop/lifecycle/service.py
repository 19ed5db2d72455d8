"""Stage assignment: in real time as events are placed, by a sweep for time-only changes, and in batch.

Every change of stage is written as history (from, to, at, reason) and emitted as events on the
profile — ``Lifecycle Stage Exited`` then ``Lifecycle Stage Entered`` (plus the stage's own
``on_enter`` event) — which journeys trigger on. The three paths use the same model and give the
same stages: the real-time and sweep paths evaluate one profile at a time (``StoredProfile``), the
batch path (``recompute``) is set-based — one ``CASE`` query over the stages' compiled conditions for all
profiles, recheck times by ``INSERT … SELECT`` (``rechecks.write_rechecks``), changes written as
multi-row statements (``bulk``) — so its cost per profile is a few microseconds of SQL, not queries.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, case, delete, func, insert, literal, select, update

from lifeloop.conditions import StoredProfile
from lifeloop.conditions.sql import compile_conditions
from lifeloop.errors import NotFound
from lifeloop.lifecycle import columnar
from lifeloop.lifecycle.bulk import ENTERED, EXITED, StageChange, record_changes, replace_rechecks
from lifeloop.lifecycle.definition import LifecycleModel, load_model, preset
from lifeloop.lifecycle.models import lifecycle_models, lifecycle_rechecks, profile_stages, stage_history
from lifeloop.lifecycle.rechecks import next_recheck, write_rechecks
from lifeloop.profiles import computed
from lifeloop.profiles.models import profiles
from lifeloop.store.engine import connect, transaction
from lifeloop.store.locks import RESOLUTION, lock_workspace
from lifeloop.store.schema import utcnow

if TYPE_CHECKING:  # DuckDB and pyarrow load only where a columnar copy is really used
    from lifeloop.columnar import Workspace

__all__ = ["ENTERED", "EXITED", "StageChange"]  # re-exported for callers of this module


# --- models -------------------------------------------------------------------------------------
def install_model(
    conn: Connection, workspace_id: int, source: str, *, activate: bool = True
) -> dict[str, Any]:
    """Validate and store a new version of a model; with ``activate`` it becomes the workspace's model."""
    model = load_model(source)
    latest = conn.execute(
        select(func.max(lifecycle_models.c.version)).where(
            lifecycle_models.c.workspace_id == workspace_id, lifecycle_models.c.key == model.key
        )
    ).scalar()
    version = (latest or 0) + 1
    if activate:
        conn.execute(
            update(lifecycle_models)
            .where(lifecycle_models.c.workspace_id == workspace_id, lifecycle_models.c.active.is_(True))
            .values(active=False)
        )
    row_id = conn.execute(
        insert(lifecycle_models)
        .values(
            workspace_id=workspace_id,
            key=model.key,
            version=version,
            source=source,
            active=activate,
            created_at=utcnow(),
        )
        .returning(lifecycle_models.c.id)
    ).scalar_one()
    return {"id": row_id, "key": model.key, "version": version, "active": activate}


def install_preset(conn: Connection, workspace_id: int, key: str) -> dict[str, Any]:
    return install_model(conn, workspace_id, preset(key).source)


_parsed: dict[str, LifecycleModel] = {}  # YAML text → parsed model (rows never change)


def active_model(conn: Connection, workspace_id: int) -> LifecycleModel | None:
    row = conn.execute(
        select(lifecycle_models.c.id, lifecycle_models.c.source).where(
            lifecycle_models.c.workspace_id == workspace_id, lifecycle_models.c.active.is_(True)
        )
    ).first()
    if row is None:
        return None
    if row.source not in _parsed:
        _parsed[row.source] = load_model(row.source)
    return _parsed[row.source]


def list_models(conn: Connection, workspace_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(
            lifecycle_models.c.id,
            lifecycle_models.c.key,
            lifecycle_models.c.version,
            lifecycle_models.c.active,
            lifecycle_models.c.created_at,
        )
        .where(lifecycle_models.c.workspace_id == workspace_id)
        .order_by(lifecycle_models.c.key, lifecycle_models.c.version)
    )
    return [dict(r._mapping) for r in rows]


def model_version(conn: Connection, workspace_id: int, key: str, version: int) -> LifecycleModel:
    """A stored version of a model, as it was installed: the console shows old versions and can put one
    back (by installing its YAML again, so the history stays in order)."""
    source = conn.execute(
        select(lifecycle_models.c.source).where(
            lifecycle_models.c.workspace_id == workspace_id,
            lifecycle_models.c.key == key,
            lifecycle_models.c.version == version,
        )
    ).scalar()
    if source is None:
        raise NotFound(f"no lifecycle model {key!r} version {version} in this workspace")
    if source not in _parsed:
        _parsed[source] = load_model(source)
    return _parsed[source]


def require_active_model(conn: Connection, workspace_id: int) -> LifecycleModel:
    model = active_model(conn, workspace_id)
    if model is None:
        raise NotFound("this workspace has no active lifecycle model; install one (e.g. a preset) first")
    return model


# --- state --------------------------------------------------------------------------------------
def current_stages(
    conn: Connection, workspace_id: int, model: str, profile_ids: Sequence[int]
) -> dict[int, str]:
    if not profile_ids:
        return {}
    rows = conn.execute(
        select(profile_stages.c.profile_id, profile_stages.c.stage).where(
            profile_stages.c.workspace_id == workspace_id,
            profile_stages.c.model == model,
            profile_stages.c.profile_id.in_(profile_ids),
        )
    )
    return {r.profile_id: r.stage for r in rows}


def assign_stages(
    conn: Connection, workspace_id: int, profile_ids: Sequence[int], *, now: datetime, reason: str
) -> list[StageChange]:
    """Re-evaluate the active model for ``profile_ids`` (one at a time, O(each profile's data))."""
    model = active_model(conn, workspace_id)
    if model is None or not profile_ids:
        return []
    ids = sorted(set(profile_ids))
    before = current_stages(conn, workspace_id, model.key, ids)
    conditions = [stage.condition for stage in model.stages]
    changes: list[StageChange] = []
    times: list[tuple[int, datetime]] = []
    for pid in ids:
        view = StoredProfile(conn, workspace_id, pid, now=now)
        stage = model.stage_for(view)
        to_stage = stage.key if stage else None
        if to_stage != before.get(pid):
            changes.append(StageChange(pid, model.key, before.get(pid), to_stage, reason))
        at = next_recheck(conditions, view, conn, workspace_id, pid)
        if at is not None:
            times.append((pid, at))
    record_changes(conn, workspace_id, model, changes, now)
    replace_rechecks(conn, workspace_id, model.key, times, profile_ids=ids)
    return changes


def forget_profile(conn: Connection, workspace_id: int, profile_id: int) -> None:
    """A profile merged away leaves every model; the survivor is re-evaluated by the caller."""
    for table in (profile_stages, lifecycle_rechecks):
        conn.execute(
            delete(table).where(table.c.workspace_id == workspace_id, table.c.profile_id == profile_id)
        )


def due_profiles(conn: Connection, workspace_id: int, model: str, now: datetime, *, limit: int) -> list[int]:
    rows = conn.execute(
        select(lifecycle_rechecks.c.profile_id)
        .where(
            lifecycle_rechecks.c.workspace_id == workspace_id,
            lifecycle_rechecks.c.model == model,
            lifecycle_rechecks.c.recheck_at <= now,
        )
        .order_by(lifecycle_rechecks.c.recheck_at)
        .limit(limit)
    )
    return [r[0] for r in rows]


def sweep(engine: Engine, workspace_id: int, *, now: datetime | None = None, batch_size: int = 500) -> int:
    """Apply time-only changes that are due; returns how many profiles were re-evaluated."""
    now = now or utcnow()
    total = 0
    while True:

        def work(conn: Connection) -> int:
            lock_workspace(conn, RESOLUTION, workspace_id)  # never alongside the resolver's writes
            model = active_model(conn, workspace_id)
            if model is None:
                return 0
            due = due_profiles(conn, workspace_id, model.key, now, limit=batch_size)
            assign_stages(conn, workspace_id, due, now=now, reason="time")
            return len(due)

        done = transaction(engine, work)
        total += done
        if done < batch_size:
            return total


def workspaces_with_models(engine: Engine) -> list[int]:
    with connect(engine) as conn:
        query = select(lifecycle_models.c.workspace_id).where(lifecycle_models.c.active.is_(True))
        return [r[0] for r in conn.execute(query.execution_options(cross_workspace=True))]


def batch_stages(
    conn: Connection,
    workspace_id: int,
    model: LifecycleModel,
    *,
    now: datetime,
    id_range: tuple[int, int] | None = None,
) -> dict[int, str]:
    """Every live profile's stage (of those with an id in ``id_range``, inclusive) in one query: a ``CASE``
    over the stages' compiled conditions, in order, so the first that holds wins and later ones are not
    evaluated for that profile."""
    compiled = compile_conditions(
        [stage.condition for stage in model.stages],
        workspace_id=workspace_id,
        now=now,
        dialect=conn.dialect.name,
        id_range=id_range,
        conn=conn,
    )
    branches = [(test, literal(stage.key)) for test, stage in zip(compiled.tests, model.stages, strict=True)]
    stage_of = case(*branches, else_=None).label("stage")
    rows = select(profiles.c.id, stage_of).select_from(compiled.source).where(*compiled.live)
    return {pid: stage for pid, stage in conn.execute(rows) if stage is not None}


def _stages_in_parallel(
    engine: Engine, workspace_id: int, model: LifecycleModel, live: list[int], *, now: datetime, workers: int
) -> dict[int, str]:
    """``batch_stages`` over ``workers`` ranges of profile ids at once, each on its own connection: the
    query is CPU-bound in the database (SQLite runs it without holding Python's GIL)."""
    size = -(-len(live) // max(workers, 1))
    ranges = [(live[i], live[min(i + size, len(live)) - 1]) for i in range(0, len(live), size)]

    def run(id_range: tuple[int, int]) -> dict[int, str]:
        with connect(engine) as conn:
            return batch_stages(conn, workspace_id, model, now=now, id_range=id_range)

    if len(ranges) <= 1:
        return run(ranges[0]) if ranges else {}
    with ThreadPoolExecutor(max_workers=len(ranges), thread_name_prefix="lifeloop-stages") as pool:
        parts = list(pool.map(run, ranges))
    return {pid: stage for part in parts for pid, stage in part.items()}


def live_profiles(conn: Connection, workspace_id: int) -> list[int]:
    """Ids of the workspace's profiles that were not merged away, ascending."""
    query = (
        select(profiles.c.id)
        .where(profiles.c.workspace_id == workspace_id, profiles.c.merged_into.is_(None))
        .order_by(profiles.c.id)
    )
    return list(conn.execute(query).scalars())


def _stages_between(conn: Connection, workspace_id: int, model: str, low: int, high: int) -> dict[int, str]:
    s = profile_stages.c
    query = select(s.profile_id, s.stage).where(
        s.workspace_id == workspace_id, s.model == model, s.profile_id >= low, s.profile_id <= high
    )
    return dict(conn.execute(query).all())


def recompute(
    engine: Engine,
    workspace_id: int,
    *,
    now: datetime | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    chunk_size: int = 20_000,
    timings: dict[str, float] | None = None,
    workers: int | None = None,
    properties: bool = True,
    analytics_path: str | Path | None = None,
    columnar_copy: Workspace | None = None,
) -> list[StageChange]:
    """Rebuild computed properties (unless ``properties`` is False: ingest maintains them, and a changed
    model needs only its stages) and stages of a workspace in batch; records and emits the changes.

    Set-based throughout: properties by ``INSERT … SELECT``, every stage by one ``CASE`` query; then,
    per range of profile ids (one transaction each, ``on_progress(done, total)`` after each), the
    current stages are compared, the changes written as multi-row statements (history, stage, stage
    events) and the range's recheck times computed and stored by one ``INSERT … SELECT``. With
    ``timings``, the seconds spent in each phase are added to it (properties, stages, changes, rechecks).
    The stage query runs on ``workers`` connections at once (default: one per CPU for large workspaces).

    With ``analytics_path``, stages and rechecks are evaluated on the columnar copy of the events in that
    analytics store instead (synced first; ``lifecycle.columnar``): the same results, from one scan of the
    events instead of a query per profile, and only the differences are written; ``columnar_copy`` is
    such a copy already open and synced (``lifeloop.recompute`` shares one between stages and audience).
    """
    now = now or utcnow()
    spent = timings if timings is not None else {}

    def clock(phase: str, started: float) -> None:
        spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - started

    def rebuild_properties(conn: Connection) -> int:
        lock_workspace(conn, RESOLUTION, workspace_id)  # no event is placed while they are rebuilt
        return computed.recompute(conn, workspace_id)

    if properties:
        started = time.perf_counter()
        transaction(engine, rebuild_properties)
        clock("properties", started)
    started = time.perf_counter()
    with connect(engine) as conn:
        found = active_model(conn, workspace_id)
    if found is None:  # no model: the properties (which tags and segments read) are all there is to do
        return []
    model = found
    if columnar_copy is not None:
        return columnar.recompute_stages(
            engine, columnar_copy, model, chunk_size=chunk_size, on_progress=on_progress, clock=clock
        )
    if analytics_path is not None:
        from lifeloop.analytics.sync import sync  # pandas and DuckDB: only for the columnar path
        from lifeloop.columnar import Workspace

        sync(engine, analytics_path, workspace_id=workspace_id, profile_map=False)
        clock("sync", started)
        with Workspace(engine, workspace_id, analytics_path, now=now) as copy:
            return columnar.recompute_stages(
                engine, copy, model, chunk_size=chunk_size, on_progress=on_progress, clock=clock
            )
    with connect(engine) as conn:
        live = live_profiles(conn, workspace_id)
    if workers is None:  # threads pay off only when the query runs for a while
        workers = (os.cpu_count() or 1) if len(live) >= 50_000 else 1
    target = _stages_in_parallel(engine, workspace_id, model, live, now=now, workers=workers)
    clock("stages", started)
    conditions = [stage.condition for stage in model.stages]
    changes: list[StageChange] = []
    for start in range(0, len(live), chunk_size):
        chunk = live[start : start + chunk_size]

        def work(conn: Connection, chunk: list[int] = chunk) -> list[StageChange]:
            # Current stages are read here, in the writing transaction: the resolver may have moved some.
            started = time.perf_counter()
            before = _stages_between(conn, workspace_id, model.key, chunk[0], chunk[-1])
            done = [
                StageChange(pid, model.key, before.get(pid), target.get(pid), "recompute")
                for pid in chunk
                if target.get(pid) != before.get(pid)
            ]
            record_changes(conn, workspace_id, model, done, now)
            clock("changes", started)
            started = time.perf_counter()
            write_rechecks(conn, workspace_id, model.key, conditions, now=now, low=chunk[0], high=chunk[-1])
            clock("rechecks", started)
            return done

        changes += transaction(engine, work)
        if on_progress is not None:
            on_progress(len(chunk), len(live))
    return changes


def stage_distribution(conn: Connection, workspace_id: int) -> dict[str, int]:
    model = require_active_model(conn, workspace_id)
    rows = conn.execute(
        select(profile_stages.c.stage, func.count())
        .where(profile_stages.c.workspace_id == workspace_id, profile_stages.c.model == model.key)
        .group_by(profile_stages.c.stage)
    )
    counts: dict[str, int] = {stage: count for stage, count in rows}
    return {stage.key: int(counts.get(stage.key, 0)) for stage in model.stages}


def history(conn: Connection, workspace_id: int, profile_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(stage_history)
        .where(stage_history.c.workspace_id == workspace_id, stage_history.c.profile_id == profile_id)
        .order_by(stage_history.c.at, stage_history.c.id)
    )
    return [dict(r._mapping) for r in rows]


@dataclass(frozen=True, slots=True)
class StagePreview:
    """How a model would place the workspace's customers now: per stage, and those it places nowhere."""

    stages: dict[str, int]
    outside: int


def preview_distribution(
    conn: Connection, workspace_id: int, model: LifecycleModel, *, now: datetime | None = None
) -> StagePreview:
    """What ``model`` would give each stage if it were activated and recomputed now, writing nothing:
    the batch path's own ``CASE`` query (``batch_stages``), so the preview is what a recompute places."""
    placed = batch_stages(conn, workspace_id, model, now=now or utcnow())
    counts = Counter(placed.values())
    stages = {stage.key: int(counts.get(stage.key, 0)) for stage in model.stages}
    return StagePreview(stages, len(live_profiles(conn, workspace_id)) - len(placed))
