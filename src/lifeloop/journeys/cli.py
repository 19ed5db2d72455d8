"""``lifeloop journeys …``: drafts, publishing, status, entries, statistics, playbooks, the worker."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lifeloop.cli_support import console, err, explains_errors, fail, open_engine, print_json
from lifeloop.workspaces.service import workspace_id_of

journeys_app = typer.Typer(
    help="Journeys: automations triggered by events, stages, segments, tags, dates and schedules.",
    no_args_is_help=True,
)
WorkspaceOption = Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")]
KeyArgument = Annotated[str, typer.Argument(help="The journey's key.")]


@journeys_app.command("list")
@explains_errors
def list_command(workspace: WorkspaceOption) -> None:
    """List the workspace's journeys with their status and version."""
    from lifeloop.journeys import service
    from lifeloop.store.engine import connect

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        rows = service.list_journeys(conn, ws)
    table = Table("key", "name", "status", "version", "playbook")
    for j in rows:
        table.add_row(j.key, j.name.get("zh-CN", "") + " / " + j.name.get("en", ""), j.status,
                      str(j.version or "—"), j.playbook or "")  # fmt: skip
    console.print(table)


@journeys_app.command("save")
@explains_errors
def save_command(
    path: Annotated[Path, typer.Argument(help="A YAML or JSON definition file; - reads standard input.")],
    workspace: WorkspaceOption,
    publish: Annotated[bool, typer.Option("--publish", help="Publish it as a new version at once.")] = False,
) -> None:
    """Create a journey from a definition file, or replace its draft."""
    from lifeloop.journeys import service

    text = sys.stdin.read() if str(path) == "-" else _read(path)
    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        journey = service.save_draft(conn, ws, text)
        if publish:
            journey = service.publish(conn, ws, journey.key, by="cli")
    console.print(
        f"journey [bold]{journey.key}[/] saved ({journey.status}, version {journey.version or '—'})"
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror}")


@journeys_app.command("publish")
@explains_errors
def publish_command(key: KeyArgument, workspace: WorkspaceOption) -> None:
    """Publish the draft as a new version and switch the journey on."""
    from lifeloop.journeys import service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        journey = service.publish(conn, ws, key, by="cli")
    console.print(f"journey [bold]{key}[/] is active at version {journey.version}")


def _set_status(key: str, workspace: str, status: str) -> None:
    from lifeloop.journeys import service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        service.set_status(conn, ws, key, status)
    console.print(f"journey [bold]{key}[/] is {status}")


@journeys_app.command("pause")
@explains_errors
def pause_command(key: KeyArgument, workspace: WorkspaceOption) -> None:
    """Stop new entries; runs inside wait until the journey is resumed."""
    _set_status(key, workspace, "paused")


@journeys_app.command("resume")
@explains_errors
def resume_command(key: KeyArgument, workspace: WorkspaceOption) -> None:
    """Switch a paused journey on again."""
    _set_status(key, workspace, "active")


@journeys_app.command("archive")
@explains_errors
def archive_command(key: KeyArgument, workspace: WorkspaceOption) -> None:
    """Archive for good: every run inside leaves."""
    _set_status(key, workspace, "archived")


@journeys_app.command("show")
@explains_errors
def show_command(
    key: KeyArgument,
    workspace: WorkspaceOption,
    version: Annotated[int | None, typer.Option(help="A published version instead of the draft.")] = None,
) -> None:
    """Print a journey's draft (or a published version) as JSON."""
    from lifeloop.journeys import service
    from lifeloop.store.engine import connect

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        if version is None:
            print_json(service.get_journey(conn, ws, key).draft)
        else:
            print_json(service.version_definition(conn, ws, key, version))


@journeys_app.command("enter")
@explains_errors
def enter_command(
    key: KeyArgument,
    workspace: WorkspaceOption,
    profile: Annotated[list[int] | None, typer.Option("--profile", help="A profile id (repeatable).")] = None,
    segment: Annotated[str | None, typer.Option(help="Enter every member of this segment.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="The same key again enters nobody twice.")
    ] = None,
) -> None:
    """Enter profiles or a segment's members into an active journey."""
    from lifeloop.journeys import service

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        ids = service.enter_profiles(
            conn, ws, key, profile_ids=profile or None, segment=segment,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
        )  # fmt: skip
    console.print(f"{len(ids)} entered journey [bold]{key}[/]; `lifeloop worker` moves them on")


@journeys_app.command("stats")
@explains_errors
def stats_command(
    key: KeyArgument,
    workspace: WorkspaceOption,
    version: Annotated[int | None, typer.Option(help="Only this version.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
) -> None:
    """Entered, at each step, converted, exits by reason, messages, and each A/B arm against the holdout."""
    from lifeloop.journeys.stats import journey_stats
    from lifeloop.store.engine import connect

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        stats = journey_stats(conn, ws, key, version=version)
    if as_json:
        print_json(stats)
        return
    console.print(
        f"[bold]{key}[/]: {stats['entered']} entered, {stats['waiting']} inside, "
        f"{stats['converted']} converted, revenue {stats['revenue']:,.2f}"
    )
    steps = Table("step", "completed", "waiting", "outcomes")
    for step, item in stats["steps"].items():
        outcomes = ", ".join(f"{k} {v}" for k, v in item["outcomes"].items())
        steps.add_row(step, str(item["completed"]), str(item["waiting"]), outcomes)
    console.print(steps)
    exits = ", ".join(f"{k} {v}" for k, v in stats["exited"].items()) or "none"
    console.print(f"left: {exits}")
    messages = stats["messages"]
    console.print("messages: " + (", ".join(f"{k} {v}" for k, v in messages["by_status"].items()) or "none"))
    for status, reasons in messages["reasons"].items():
        console.print(f"  {status}: " + ", ".join(f"{r} ({n})" for r, n in reasons.items()))
    experiment = stats["experiment"]
    if experiment:
        for arm, item in experiment["arms"].items():
            verdict = item.get("vs_holdout", {}).get("verdict", "")
            console.print(
                f"arm [bold]{arm}[/]: {item['users']} users, {item['converted']} converted. {verdict}"
            )


@journeys_app.command("playbooks")
@explains_errors
def playbooks_command() -> None:
    """List the playbooks that ship with lifeloop."""
    from lifeloop.journeys.playbooks import list_playbooks

    table = Table("key", "name", "trigger")
    for item in list_playbooks():
        name = item["name"]
        table.add_row(
            item["key"], f"{name.get('zh-CN', '')} / {name.get('en', '')}", str(item.get("trigger", ""))
        )
    console.print(table)


@journeys_app.command("install")
@explains_errors
def install_command(
    playbook: Annotated[str, typer.Argument(help="A playbook's key (see `lifeloop journeys playbooks`).")],
    workspace: WorkspaceOption,
    publish: Annotated[bool, typer.Option("--publish", help="Switch it on at once.")] = False,
) -> None:
    """Install a playbook: its templates (zh-CN and en), segments and journey."""
    from lifeloop.journeys.playbooks import install_playbook

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with engine.begin() as conn:
        journey = install_playbook(conn, ws, playbook, publish=publish)
    console.print(f"playbook [bold]{playbook}[/] installed as journey {journey.key} ({journey.status})")


@journeys_app.command("dry-run")
@explains_errors
def dry_run_command(
    key: KeyArgument,
    workspace: WorkspaceOption,
    days: Annotated[int, typer.Option(help="Replay the stored events of the last N days.")] = 30,
    version: Annotated[str, typer.Option(help='"draft" or a published version number.')] = "draft",
) -> None:
    """Replay stored events through the journey without sending anything: who would enter, reach each
    step, be messaged, capped or converted."""
    from lifeloop.journeys.dry_run import dry_run
    from lifeloop.store.engine import connect

    engine = open_engine()
    ws = workspace_id_of(engine, workspace)
    with connect(engine) as conn:
        print_json(dry_run(conn, ws, key, days=days, version=version))


@journeys_app.command("work")
@explains_errors
def work_command(
    once: Annotated[bool, typer.Option("--once", help="Advance what is due now, then exit.")] = False,
    batch_size: Annotated[int, typer.Option(help="Runs claimed per transaction.")] = 500,
    idle_seconds: Annotated[float, typer.Option(help="Pause when nothing is due.")] = 0.2,
) -> None:
    """Advance due journey runs and look at time triggers (`lifeloop worker` does this too)."""
    import time

    from lifeloop.journeys.engine import run_due, run_until_idle
    from lifeloop.journeys.scheduler import tick

    engine = open_engine()
    if once:
        entered = tick(engine)
        moved = run_until_idle(engine, limit=batch_size)
        console.print(f"{entered} entered by time triggers, {moved} runs advanced")
        return
    err.print("journey worker started; Ctrl+C stops it")
    next_tick = 0.0
    try:
        while True:
            if time.monotonic() >= next_tick:
                tick(engine)
                next_tick = time.monotonic() + 30
            if run_due(engine, limit=batch_size) < batch_size:
                time.sleep(idle_seconds)
    except KeyboardInterrupt:
        pass
