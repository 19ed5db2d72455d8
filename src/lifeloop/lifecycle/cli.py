"""``lifeloop lifecycle …`` and ``lifeloop recompute``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from lifeloop.cli_support import console, err, explains_errors, fail, open_engine
from lifeloop.workspaces.service import workspace_id_of

lifecycle_app = typer.Typer(
    help="Lifecycle models: presets, custom YAML, stage counts.", no_args_is_help=True
)
WorkspaceOption = Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")]


@lifecycle_app.command("presets")
def presets() -> None:
    """List the shipped presets and their stages."""
    from lifeloop.lifecycle.definition import preset, preset_keys

    table = Table("preset", "name", "stages (first match wins)")
    for key in preset_keys():
        model = preset(key)
        table.add_row(
            key, f"{model.names['zh-CN']}\n{model.names['en']}", " → ".join(s.key for s in model.stages)
        )
    console.print(table)


@lifecycle_app.command("install")
@explains_errors
def install(
    model: Annotated[str, typer.Argument(help="A preset (line, wecom, aarrr, mall) or a .yaml file.")],
    workspace: WorkspaceOption,
) -> None:
    """Install a model version and make it the workspace's active model."""
    from lifeloop.lifecycle import service

    engine = open_engine()
    workspace_id = workspace_id_of(engine, workspace)
    path = Path(model)
    with engine.begin() as conn:
        if path.suffix in (".yaml", ".yml"):
            if not path.is_file():
                fail(f"{path} is not a file")
            row = service.install_model(conn, workspace_id, path.read_text(encoding="utf-8"))
        else:
            row = service.install_preset(conn, workspace_id, model)
    console.print(f"installed {row['key']} version {row['version']} (active)")
    err.print("run `lifeloop recompute` to place every existing profile now")


@lifecycle_app.command("stages")
@explains_errors
def stages(workspace: WorkspaceOption) -> None:
    """How many profiles are in each stage of the active model."""
    from lifeloop.lifecycle import service
    from lifeloop.store.engine import connect

    engine = open_engine()
    workspace_id = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        model = service.require_active_model(conn, workspace_id)
        counts = service.stage_distribution(conn, workspace_id)
    table = Table("stage", "name", "profiles", title=f"{model.key} v{model.version}")
    for stage in model.stages:
        table.add_row(stage.key, stage.name("zh-CN"), f"{counts[stage.key]:,}")
    console.print(table)


@explains_errors
def recompute(
    workspace: WorkspaceOption,
    from_log: Annotated[
        bool,
        typer.Option(
            "--from-log/--no-from-log",
            help="Also rebuild computed properties and event tags from the event log (the default). "
            "--no-from-log keeps those, which ingest maintains, and re-evaluates stages, rule tags and "
            "segments only: what a new model or rule needs.",
        ),
    ] = True,
    engine_name: Annotated[
        str,
        typer.Option(
            "--engine",
            help="columnar (the default): evaluate every profile on the analytics store's DuckDB copy of the "
            "events (LIFELOOP_ANALYTICS_PATH), synced first; sql: one query per condition on the database.",
        ),
    ] = "columnar",
) -> None:
    """Rebuild stages, tags and segments (and, by default, computed properties) with progress bars."""
    from lifeloop.analytics.store import default_path
    from lifeloop.recompute import recompute_workspace

    if engine_name not in ("columnar", "sql"):
        fail(f"--engine must be columnar or sql, not {engine_name!r}")
    engine = open_engine()
    workspace_id = workspace_id_of(engine, workspace)
    path = default_path() if engine_name == "columnar" else None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err) as progress:
        copying = progress.add_task(
            "copying new events to the analytics store", total=None, visible=bool(path)
        )
        stages = progress.add_task("stages", total=None, start=False)
        audience = progress.add_task("tags and segments", total=None, start=False)
        copied = [0]

        def copy_progress(done: int, left: int) -> None:
            copied[0] += done
            progress.update(copying, completed=copied[0], total=copied[0] + left)

        def advance(task: TaskID) -> Callable[[int, int], None]:
            def step(done: int, total: int) -> None:
                progress.start_task(task)
                progress.update(task, total=total, advance=done)

            return step

        done = recompute_workspace(
            engine,
            workspace_id,
            analytics_path=path,
            from_log=from_log,
            on_copy=copy_progress,
            on_stages=advance(stages),
            on_audience=advance(audience),
        )
        changes, moved = done.stage_changes, done.audience_changes
    console.print(f"{len(changes):,} stage changes recorded")
    console.print(f"{len(moved):,} tag and segment changes recorded")
