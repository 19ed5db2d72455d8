"""Batch recompute of stages on the columnar copy of the events (``lifeloop.columnar``).

Every live profile's stage and recheck time come from one DuckDB query (a scan of the event columns);
they are compared there with the stored stages and rechecks (``Workspace.state``: on SQLite the
analytics store's copy, brought up to date from the state change log), so only the profiles whose stage
or recheck changed are read again and written, in transactions of ``chunk_size`` profiles. The writes
are those of the other paths (``bulk.record_changes``, ``bulk.replace_rechecks``), so the three leave the
same rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, select

from lifeloop.conditions.columnar import text
from lifeloop.lifecycle.bulk import StageChange, record_changes, replace_rechecks
from lifeloop.lifecycle.definition import LifecycleModel
from lifeloop.lifecycle.models import profile_stages
from lifeloop.store.engine import transaction
from lifeloop.store.rows import IN_CHUNK

if TYPE_CHECKING:  # DuckDB and pyarrow load only where a columnar copy is really used
    from lifeloop.columnar import Workspace


def aware(moment: datetime | None) -> datetime | None:
    """A naive UTC time from DuckDB as an aware one."""
    return None if moment is None else moment.replace(tzinfo=UTC)


def stage_targets(columnar: Workspace, model: LifecycleModel) -> None:
    """``stage_targets(pid, stage, recheck_at)`` for every live profile: the first stage whose condition
    holds (NULL for none) and the next moment one of the conditions could change by time alone."""
    plan = columnar.plan
    conditions = [stage.condition for stage in model.stages]
    branches = " ".join(
        f"WHEN {plan.test(c)} THEN {text(s.key)}" for c, s in zip(conditions, model.stages, strict=True)
    )
    recheck = plan.recheck(conditions)
    columnar.load_state(plan, conditions)
    columnar.evaluate("stage_targets", plan, {"stage": f"CASE {branches} END", "recheck_at": recheck})


def recompute_stages(
    engine: Engine,
    columnar: Workspace,
    model: LifecycleModel,
    *,
    chunk_size: int,
    on_progress: Callable[[int, int], None] | None,
    clock: Callable[[str, float], None],
) -> list[StageChange]:
    """Evaluate ``stage_targets`` and write the stages and rechecks that differ from the stored ones."""
    ws = columnar.workspace_id
    started = time.perf_counter()
    stage_targets(columnar, model)
    clock("stages", started)
    started = time.perf_counter()
    this_model = ("model", [model.key])
    columnar.state(
        None, "stages", "stage_rechecks", narrow={"stages": this_model, "stage_rechecks": this_model}
    )
    db, key = columnar.db, text(model.key)
    moved = dict(
        db.execute(
            "SELECT t.pid, t.stage FROM stage_targets t "
            f"LEFT JOIN (SELECT * FROM st_stages WHERE model = {key}) c ON c.profile_id = t.pid "
            "WHERE t.stage IS DISTINCT FROM c.stage"
        ).fetchall()
    )
    rescheduled: dict[int, datetime | None] = {
        pid: aware(at)
        for pid, at in db.execute(
            "SELECT coalesce(t.pid, c.profile_id), t.recheck_at "
            "FROM (SELECT pid, recheck_at FROM stage_targets WHERE recheck_at IS NOT NULL) t "
            f"FULL JOIN (SELECT * FROM st_stage_rechecks WHERE model = {key}) c ON c.profile_id = t.pid "
            "WHERE t.recheck_at IS DISTINCT FROM c.recheck_at"
        ).fetchall()
    }
    clock("compare", started)
    started = time.perf_counter()
    changes = write_changes(
        engine,
        ws,
        model,
        moved,
        rescheduled,
        now=columnar.now,
        chunk_size=chunk_size,
        on_progress=on_progress,
    )
    clock("changes", started)
    return changes


def write_changes(
    engine: Engine,
    workspace_id: int,
    model: LifecycleModel,
    moved: dict[int, str | None],
    rescheduled: dict[int, datetime | None],
    *,
    now: datetime,
    chunk_size: int,
    on_progress: Callable[[int, int], None] | None,
) -> list[StageChange]:
    """Record the stage changes (target stage per profile) and recheck times (None: no recheck) per range
    of profiles, one transaction each; a profile's stage is read again in its transaction, since the
    real-time path may have moved it since the comparison."""
    touched = sorted({*moved, *rescheduled})
    changes: list[StageChange] = []
    if on_progress is not None and not touched:
        on_progress(0, 0)
    for start in range(0, len(touched), chunk_size):
        chunk = touched[start : start + chunk_size]

        def work(conn: Connection, chunk: list[int] = chunk) -> list[StageChange]:
            ids = [pid for pid in chunk if pid in moved]
            s = profile_stages.c
            before = {
                pid: stage
                for part in range(0, len(ids), IN_CHUNK)
                for pid, stage in conn.execute(
                    select(s.profile_id, s.stage).where(
                        s.workspace_id == workspace_id,
                        s.model == model.key,
                        s.profile_id.in_(ids[part : part + IN_CHUNK]),
                    )
                )
            }
            done = [
                StageChange(pid, model.key, before.get(pid), moved[pid], "recompute")
                for pid in ids
                if moved[pid] != before.get(pid)
            ]
            record_changes(conn, workspace_id, model, done, now)
            times = [(pid, at) for pid in chunk if (at := rescheduled.get(pid)) is not None]
            replace_rechecks(
                conn, workspace_id, model.key, times, profile_ids=[p for p in chunk if p in rescheduled]
            )
            return done

        changes += transaction(engine, work)
        if on_progress is not None:
            on_progress(len(chunk), len(touched))
    return changes
