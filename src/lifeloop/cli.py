"""The ``lifeloop`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lifeloop.accounts.cli import user_app
from lifeloop.analytics.cli import analytics_app
from lifeloop.audience.cli import segments_app, tags_app
from lifeloop.broadcasts.cli import broadcasts_app
from lifeloop.cli_support import console, err, explains_errors, fail, open_engine
from lifeloop.config import get_settings
from lifeloop.engagement.advisors.cli import advisors_app
from lifeloop.engagement.coupons.cli import coupons_app
from lifeloop.engagement.points.cli import checkin_app, points_app
from lifeloop.engagement.referrals.cli import referrals_app
from lifeloop.engagement.tiers.cli import tiers_app
from lifeloop.errors import LifeloopError
from lifeloop.journeys.cli import journeys_app
from lifeloop.lifecycle.cli import lifecycle_app, recompute
from lifeloop.messaging.cli import deliveries_app, messages_app

app = typer.Typer(
    help="lifeloop: customer lifecycle platform for brands' own channels.", no_args_is_help=True
)
workspace_app = typer.Typer(help="Workspaces: one per brand.", no_args_is_help=True)
source_app = typer.Typer(help="Ingest sources and their write keys.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens for the REST API.", no_args_is_help=True)
app.add_typer(workspace_app, name="workspace")
app.add_typer(source_app, name="source")
app.add_typer(token_app, name="token")
app.add_typer(messages_app, name="messages")
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(analytics_app, name="analytics")
app.add_typer(lifecycle_app, name="lifecycle")
app.add_typer(tags_app, name="tags")
app.add_typer(segments_app, name="segments")
app.add_typer(journeys_app, name="journeys")
app.add_typer(broadcasts_app, name="broadcasts")
app.add_typer(coupons_app, name="coupons")
app.add_typer(points_app, name="points")
app.add_typer(checkin_app, name="checkin")
app.add_typer(tiers_app, name="tiers")
app.add_typer(referrals_app, name="referrals")
app.add_typer(advisors_app, name="advisors")
app.add_typer(user_app, name="user")
app.command("recompute")(recompute)


@app.command()
@explains_errors
def migrate() -> None:
    """Create or upgrade the database schema (SQLite or PostgreSQL, from LIFELOOP_DATABASE_URL)."""
    from lifeloop.store.migrate import current_revision, upgrade

    engine = open_engine(migrated=False)
    before = current_revision(engine)
    upgrade(engine)
    after = current_revision(engine)
    where = engine.url.render_as_string(hide_password=True)
    console.print(
        f"schema {before or 'empty'} → {after} on {where}" if before != after else f"schema at {after}"
    )


@workspace_app.command("create")
@explains_errors
def workspace_create(
    slug: Annotated[str, typer.Argument(help="Short name: lowercase letters, digits, dashes.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    timezone: Annotated[str, typer.Option(help="The brand's IANA time zone.")] = "UTC",
) -> None:
    """Create a workspace."""
    from lifeloop.workspaces.service import create_workspace

    engine = open_engine()
    with engine.begin() as conn:
        ws = create_workspace(conn, slug=slug, name=name, timezone=timezone)
    console.print(f"workspace [bold]{ws.slug}[/] created (id {ws.id}, time zone {ws.timezone})")


@workspace_app.command("list")
@explains_errors
def workspace_list() -> None:
    """List workspaces."""
    from lifeloop.workspaces.service import list_workspaces

    engine = open_engine()
    with engine.connect() as conn:
        rows = list_workspaces(conn)
    table = Table("id", "slug", "name", "time zone", "created")
    for ws in rows:
        table.add_row(str(ws.id), ws.slug, ws.name, ws.timezone, ws.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@source_app.command("create")
@explains_errors
def source_create(
    name: Annotated[str, typer.Argument(help="e.g. web, shop-backend, mini-program.")],
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")],
) -> None:
    """Create an ingest source and print its write key (shown once)."""
    from lifeloop.workspaces.service import create_source, get_workspace

    engine = open_engine()
    with engine.begin() as conn:
        ws = get_workspace(conn, workspace)
        source, key = create_source(conn, ws.id, name=name)
    err.print(
        f"source [bold]{source.name}[/] created in {ws.slug}; "
        "its write key (store it, it is not shown again):"
    )
    print(key)


@source_app.command("list")
@explains_errors
def source_list(
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")],
) -> None:
    """List a workspace's sources."""
    from lifeloop.workspaces.service import get_workspace, list_sources

    engine = open_engine()
    with engine.connect() as conn:
        ws = get_workspace(conn, workspace)
        rows = list_sources(conn, ws.id)
    table = Table("id", "name", "key starts", "created", "disabled")
    for s in rows:
        table.add_row(
            str(s.id),
            s.name,
            s.write_key_prefix + "…",
            s.created_at.strftime("%Y-%m-%d"),
            "yes" if s.disabled_at else "",
        )
    console.print(table)


@token_app.command("create")
@explains_errors
def token_create(
    name: Annotated[str, typer.Argument(help="What the token is for.")],
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")],
    role: Annotated[str, typer.Option(help="admin, operator, analyst or viewer.")] = "admin",
) -> None:
    """Create an API token for /api/v1 and print it (shown once)."""
    from lifeloop.workspaces.service import create_api_token, get_workspace

    engine = open_engine()
    with engine.begin() as conn:
        ws = get_workspace(conn, workspace)
        _token, secret = create_api_token(conn, ws.id, name=name, role=role)
    err.print(f"{role} token [bold]{name}[/] created in {ws.slug} (store it, it is not shown again):")
    print(secret)


@app.command("import")
@explains_errors
def import_command(
    kind: Annotated[str, typer.Argument(help="profiles or events")],
    path: Annotated[Path, typer.Argument(help="A .csv or .parquet file.")],
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")],
    source: Annotated[str, typer.Option(help="Source name the rows are recorded under.")] = "import",
    rejects: Annotated[Path | None, typer.Option(help="Write rejected rows and reasons to this CSV.")] = None,
) -> None:
    """Import profiles or events from CSV or Parquet, with a progress bar and a summary of rejected rows."""
    import csv

    from sqlalchemy import select

    from lifeloop.events.importer import count_rows, import_file
    from lifeloop.profiles.resolver import count_pending, resolve_pending
    from lifeloop.workspaces.models import SourceKey, sources
    from lifeloop.workspaces.service import create_source, get_workspace

    if kind not in ("profiles", "events"):
        fail(f"kind must be 'profiles' or 'events', not {kind!r}")
    if not path.is_file():
        fail(f"{path} is not a file")
    if path.suffix.lower() not in (".csv", ".parquet"):
        fail(f"{path.name}: use a .csv or .parquet file")
    engine = open_engine()
    with engine.begin() as conn:
        ws = get_workspace(conn, workspace)
        source_id = conn.execute(
            select(sources.c.id).where(sources.c.workspace_id == ws.id, sources.c.name == source)
        ).scalar()
        if source_id is None:
            source_id = create_source(conn, ws.id, name=source)[0].id
    total = count_rows(path)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err) as progress:
        task = progress.add_task(f"importing {kind}", total=total)
        report = import_file(
            engine,
            SourceKey(workspace_id=ws.id, source_id=source_id),
            path,
            kind,  # type: ignore[arg-type]
            on_progress=lambda n: progress.advance(task, n),
        )
        waiting = count_pending(engine, ws.id)
        resolving = progress.add_task("resolving identities", total=waiting)
        resolve_pending(engine, ws.id, on_progress=lambda n: progress.advance(resolving, n))
    console.print(
        f"{report.rows} rows: [green]{report.accepted} stored[/], {report.duplicates} already stored, "
        f"[red]{len(report.rejected)} rejected[/]"
    )
    for reason, count in report.reasons():
        console.print(f"  {count} × {reason}")
    if report.rejected and rejects is not None:
        with rejects.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["line", "reason"])
            writer.writerows(report.rejected)
        console.print(f"rejected rows written to {rejects}")
    if report.rows and len(report.rejected) == report.rows:
        fail("every row was rejected; nothing was imported")


def _log_to_stderr() -> None:
    """The worker's log at LIFELOOP_LOG_LEVEL (debug adds each delivery batch's timings)."""
    import logging

    logging.basicConfig(
        level=get_settings().log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    for chatty in ("httpx", "httpcore"):  # a line per provider request says nothing the outbox does not
        logging.getLogger(chatty).setLevel(logging.WARNING)


@app.command()
@explains_errors
def worker(
    idle_seconds: Annotated[float, typer.Option(help="Pause between polls when there is no work.")] = 0.2,
    once: Annotated[bool, typer.Option("--once", help="Do the waiting work once, then exit.")] = False,
    sweep_seconds: Annotated[
        float, typer.Option(help="How often time-only stage changes are applied.")
    ] = 60.0,
    deliveries: Annotated[bool, typer.Option(help="Also deliver due messages from the outbox.")] = True,
    journeys: Annotated[bool, typer.Option(help="Also advance due journey runs and time triggers.")] = True,
    delivery_lease: Annotated[
        float, typer.Option(help="Seconds a delivery holds claimed messages before another worker may.")
    ] = 60.0,
    webhook_secret: Annotated[
        str | None,
        typer.Option(
            envvar="LIFELOOP_WEBHOOK_SECRET", help="Signs webhooks of workspaces without a webhook channel."
        ),
    ] = None,
    analytics_seconds: Annotated[
        float, typer.Option(help="How often the analytics store and value tiers are refreshed; 0: never.")
    ] = 300.0,
) -> None:
    """Run background work: place ingested events on profiles, move stages whose time has come,
    advance journeys, queue the messages of due broadcasts, deliver due messages from the outbox, and
    keep the analytics store and value tiers current.

    Several workers may run at once: they take turns per workspace and never claim a message twice.
    """
    import signal
    import threading

    from lifeloop.secret_key import require_for
    from lifeloop.worker import WorkerOptions, run_once, run_worker

    if deliveries and not once:  # deliveries decrypt channel credentials and sign tracking links
        require_for("lifeloop worker")
    _log_to_stderr()
    engine = open_engine()
    if once:
        done = run_once(engine, journeys=journeys)
        console.print(
            f"{done.placed} events placed on profiles, {done.swept} profiles re-evaluated by time, "
            f"{done.advanced} journey runs advanced, {done.queued} broadcast recipients queued"
        )
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    options = WorkerOptions(
        idle_seconds=idle_seconds,
        sweep_seconds=sweep_seconds,
        deliveries=deliveries,
        journeys=journeys,
        delivery_lease=delivery_lease,
        webhook_secret=webhook_secret,
        analytics_seconds=analytics_seconds,
    )
    err.print("worker started; Ctrl+C stops it after the current batch")
    run_worker(engine, stop, options)


@app.command()
@explains_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default LIFELOOP_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default LIFELOOP_PORT).")] = None,
    workers: Annotated[
        int, typer.Option(help="Worker processes (PostgreSQL; SQLite works best with 1).")
    ] = 1,
) -> None:
    """Serve the REST API (/api/v1), the Segment-compatible ingest API (/v1), channel webhooks and
    tracking links, and the API docs (/docs, /redoc)."""
    import uvicorn

    from lifeloop.secret_key import require_for

    settings = get_settings()
    require_for("lifeloop serve", settings)
    open_engine()  # refuse to serve an unmigrated store
    uvicorn.run(
        "lifeloop.web.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level=settings.log_level,
    )


@app.command()
@explains_errors
def demo(
    customers: Annotated[int, typer.Option(help="Customers to simulate.")] = 3000,
    days: Annotated[int, typer.Option(help="Days of history.")] = 180,
    serve_after: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Keep serving after loading.")
    ] = True,
    port: Annotated[int | None, typer.Option(help="Port (default LIFELOOP_PORT).")] = None,
) -> None:
    """Create a synthetic brand, send its history through the ingest API, and serve it."""
    from lifeloop.demo.runner import run_demo

    run_demo(
        customers=customers, days=days, serve=serve_after, port=port or get_settings().port, console=console
    )


def main() -> None:
    try:
        app()
    except LifeloopError as error:
        err.print(f"[bold red]error:[/] {error.message}")
        sys.exit(1)


if __name__ == "__main__":
    main()
