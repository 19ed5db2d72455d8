"""``lifeloop messages …`` and ``lifeloop deliveries …``: send a test message, run the delivery worker,
list deliveries."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Annotated

import typer

from lifeloop.cli_support import console, explains_errors, fail, open_engine
from lifeloop.workspaces.service import workspace_id_of

messages_app = typer.Typer(help="Send messages and run the delivery worker.", no_args_is_help=True)
deliveries_app = typer.Typer(
    help="Deliveries: what was sent, to whom, and what happened.", no_args_is_help=True
)

Workspace = Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")]


@messages_app.command("send-test")
def send_test(
    workspace: Workspace,
    channel: Annotated[str, typer.Option(help="line, wecom, wechat, email, sms or webhook.")],
    to: Annotated[
        str | None, typer.Option(help="An address: LINE userId, e-mail, phone, webhook URL.")
    ] = None,
    profile: Annotated[
        int | None, typer.Option(help="A profile id; its address on the channel is used.")
    ] = None,
    text: Annotated[str | None, typer.Option(help="Plain text body.")] = None,
    content: Annotated[
        str | None, typer.Option(help="The rendered body as JSON (instead of --text).")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Idempotency key; the same key never sends twice.")] = None,
    deliver: Annotated[
        bool, typer.Option(help="Deliver now in this process instead of waiting for a worker.")
    ] = False,
    webhook_secret: Annotated[
        str | None, typer.Option(envvar="LIFELOOP_WEBHOOK_SECRET", help="Signing secret for webhook URLs.")
    ] = None,
) -> None:
    """Queue a test message (transactional: no caps or quiet hours; consent still applies)."""
    from lifeloop.messaging import service
    from lifeloop.store.engine import connect, transaction

    @explains_errors
    def run() -> None:
        if (text is None) == (content is None):
            fail("give the message as --text or as --content JSON")
        try:
            body = {"text": text} if text is not None else json.loads(content or "")
        except json.JSONDecodeError as error:
            fail(f"--content is not JSON: {error}")
        engine = open_engine()
        ws = workspace_id_of(engine, workspace)
        entry, created = transaction(
            engine,
            lambda conn: service.send_message(
                conn,
                ws,
                channel=channel,
                content=body,
                profile_id=profile,
                recipient=to,
                template="test",
                transactional=True,
                optimize_send_time=False,
                idempotency_key=key or f"cli-{uuid.uuid4()}",
            ),
        )
        console.print(
            f"delivery {entry.id} {'queued' if created else 'already queued'} (key {entry.idempotency_key})"
        )
        if deliver:
            from lifeloop.messaging.delivery_worker import Adapters, deliver_due

            adapters = Adapters(engine, webhook_secret=webhook_secret)
            try:
                while deliver_due(engine, worker_id=f"cli-{uuid.uuid4().hex[:8]}", adapters=adapters):
                    with connect(engine) as conn:
                        current, _ = service.get_delivery(conn, ws, entry.id)
                    if current.status not in ("queued", "sending"):
                        break
            finally:
                adapters.close()
            with connect(engine) as conn:
                current, _ = service.get_delivery(conn, ws, entry.id)
            detail = f": {current.last_error}" if current.last_error else ""
            console.print(f"delivery {entry.id} is {current.status}{detail}")

    run()


@messages_app.command("work")
def work(
    worker_id: Annotated[str | None, typer.Option(help="A name for this worker in the delivery log.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Provider calls in flight.")] = 4,
    lease_seconds: Annotated[float, typer.Option(min=1.0)] = 60.0,
    once: Annotated[bool, typer.Option(help="One pass over what is due, then exit.")] = False,
    webhook_secret: Annotated[
        str | None, typer.Option(envvar="LIFELOOP_WEBHOOK_SECRET", help="Signing secret for webhook URLs.")
    ] = None,
) -> None:
    """Run the delivery worker until interrupted (several can run side by side)."""
    import signal

    from lifeloop.messaging.delivery_worker import Adapters, deliver_due, run_delivery_worker
    from lifeloop.secret_key import require_for

    if not once:
        require_for("lifeloop messages work")
    engine = open_engine()
    name = worker_id or f"worker-{uuid.uuid4().hex[:8]}"
    adapters = Adapters(engine, webhook_secret=webhook_secret)
    if once:
        total = 0
        try:
            while claimed := deliver_due(
                engine,
                worker_id=name,
                adapters=adapters,
                batch_size=batch_size,
                concurrency=concurrency,
                lease_seconds=lease_seconds,
            ):
                total += claimed
        finally:
            adapters.close()
        console.print(f"{total} messages handled")
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"delivery worker {name} running; Ctrl-C stops it")
    handled = run_delivery_worker(
        engine,
        stop_event=stop,
        worker_id=name,
        adapters=adapters,
        batch_size=batch_size,
        concurrency=concurrency,
        lease_seconds=lease_seconds,
    )
    console.print(f"stopped after {handled} messages")


@deliveries_app.command("list")
def list_command(
    workspace: Workspace,
    status: Annotated[
        str | None, typer.Option(help="queued, deferred, sending, delivered, failed, dead…")
    ] = None,
    channel: Annotated[str | None, typer.Option()] = None,
    profile: Annotated[int | None, typer.Option(help="Only this profile's deliveries.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List deliveries, newest first."""
    from rich.table import Table

    from lifeloop.messaging import service
    from lifeloop.store.engine import connect

    @explains_errors
    def run() -> None:
        engine = open_engine()
        ws = workspace_id_of(engine, workspace)
        with connect(engine) as conn:
            entries, _ = service.list_deliveries(
                conn, ws, limit=limit, status=status, channel=channel, profile_id=profile
            )
        if as_json:
            for e in entries:
                typer.echo(json.dumps(service.delivery_dict(e), default=str, ensure_ascii=False))
            return
        table = Table("id", "channel", "recipient", "status", "attempts", "updated", "reason")
        for e in entries:
            table.add_row(
                str(e.id),
                e.channel,
                (e.recipient or f"profile {e.profile_id}")[:40],
                e.status,
                str(e.attempts),
                e.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
                (e.last_error or "")[:60],
            )
        console.print(table)

    run()
