"""``lifeloop demo``: set up the Lumi Tea 茶光 workspace, send its simulated history through the real
ingest API over HTTP, then show a newcomer where to look."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, count
from typing import Any

import httpx
import orjson
import uvicorn
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine

from lifeloop.config import get_settings
from lifeloop.demo.simulator import BRAND, Simulation
from lifeloop.errors import Conflict, InvalidInput, LifeloopError, NotFound
from lifeloop.events.messages import MAX_BATCH_BYTES
from lifeloop.lifecycle.service import active_model, install_preset
from lifeloop.profiles.resolver import count_pending
from lifeloop.store.engine import create_store_engine
from lifeloop.store.migrate import upgrade
from lifeloop.web.app import create_app
from lifeloop.workspaces.service import (
    create_api_token,
    create_source,
    create_workspace,
    get_workspace,
    list_sources,
    workspace_id_of,
)

HOST = "127.0.0.1"
WORKSPACE = "demo"
SOURCE = "demo-web"
BATCH_SIZE = 100
SENDERS = 4
ATTEMPTS = 6


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What ``run_demo`` did, with the credentials it created."""

    base_url: str
    workspace: str
    source: str
    write_key: str
    api_token: str
    customers: int
    days: int
    end: datetime  # the simulated history ends here
    events: int  # sent
    accepted: int  # stored by this run
    duplicates: int  # already stored (an earlier run)
    seconds: float  # sending time
    by_event: dict[str, int] = field(default_factory=dict)
    showcase_email: str | None = None
    showcase_user_id: str | None = None
    showcase_profile_id: int | None = None

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class _Credentials:
    workspace: str
    created: datetime  # when the demo workspace was first made
    source: str
    write_key: str
    api_token: str


def run_demo(
    *,
    customers: int = 3000,
    days: int = 180,
    serve: bool = True,
    port: int = 8000,
    console: Console | None = None,
    seed: int = 7,
    end: datetime | None = None,
) -> DemoSummary:
    """Create the demo brand, load its history through ``POST /v1/batch``, print a guide, optionally serve.

    The history ends at ``end``, by default the hour the demo workspace was created: a second run sends
    the very same messages (same ids, same content) and stores nothing. Delete the database for a fresh one.
    """
    console = console or Console()
    if customers < 1 or days < 1:
        raise InvalidInput("the demo needs at least 1 customer and 1 day")
    _check_port(port)
    settings = get_settings()
    engine = create_store_engine(settings)
    try:
        upgrade(engine)
        credentials = _prepare_workspace(engine)
        end = end or credentials.created.replace(minute=0, second=0, microsecond=0)
        with console.status(f"simulating {customers:,} customers over {days} days…"):
            simulation = Simulation(customers, days, seed, end)
        app = create_app(settings, engine)
        app.state.loading = f"loading the demo brand ({customers:,} customers, {days} days of history)"
        server = _BackgroundServer(app, port)
        server.start()
        try:
            summary = _load(simulation, server.url, credentials, console, engine)
            app.state.loading = None
            _print_guide(summary, console, serving=serve)
            if serve:
                server.serve_until_interrupted(console)
        finally:
            server.stop()
        return summary
    finally:
        engine.dispose()


def _check_port(port: int) -> None:
    """Fail before any work when something already listens on the port."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind((HOST, port))
        except OSError:
            advice = "stop what listens there or pass --port with a free port"
            raise Conflict(f"port {port} on {HOST} is already in use; {advice}") from None


def _prepare_workspace(engine: Engine) -> _Credentials:
    """The demo workspace (reused when it exists) with a new source and admin token for this run.

    Keys and tokens are stored hashed, so an earlier run's cannot be shown again: each run makes its own.
    """
    with engine.begin() as conn:
        try:
            workspace = get_workspace(conn, WORKSPACE)
        except NotFound:
            workspace = create_workspace(conn, slug=WORKSPACE, name=BRAND, timezone="Asia/Taipei")
        if active_model(conn, workspace.id) is None:  # the brand's customers are LINE friends
            install_preset(conn, workspace.id, "line")
        taken = {s.name for s in list_sources(conn, workspace.id)}
        candidates = chain([SOURCE], (f"{SOURCE}-{i}" for i in count(2)))
        name = next(n for n in candidates if n not in taken)
        _source, write_key = create_source(conn, workspace.id, name=name)
        _token, token = create_api_token(conn, workspace.id, name=f"lifeloop demo ({name})", role="admin")
    return _Credentials(workspace.slug, workspace.created_at, name, write_key, token)


class _BackgroundServer:
    """The real app under uvicorn, in a thread of this process."""

    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(app, host=HOST, port=port, log_level="warning", access_log=False, ws="none")
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="lifeloop-demo-server", daemon=True)

    def start(self, timeout: float = 20.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.thread.is_alive():  # uvicorn exits when it cannot bind
                    raise Conflict(
                        f"could not start the server on {self.url}; is port {self.port} already in use?"
                    )
                if self.server.started:
                    try:
                        if client.get("/health").status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                time.sleep(0.05)
        self.stop()
        raise LifeloopError(f"the server on {self.url} did not answer /health within {timeout:.0f} s")

    def serve_until_interrupted(self, console: Console) -> None:
        console.print(f"Serving on [bold]{self.url}[/] — press [bold]Ctrl-C[/] to stop.")
        try:
            while self.thread.is_alive():
                self.thread.join(0.5)  # a timed join keeps Ctrl-C deliverable to this thread
        except KeyboardInterrupt:
            console.print("stopping…")

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=15)


# -- loading ---------------------------------------------------------------------------------------


def _batches(simulation: Simulation) -> Iterator[tuple[bytes, int]]:
    """Encoded ``/v1/batch`` bodies of up to BATCH_SIZE messages, each under the 500 KB limit."""
    chunk: list[dict[str, Any]] = []
    for message in simulation:
        chunk.append(message)
        if len(chunk) == BATCH_SIZE:
            yield from _encode(chunk)
            chunk = []
    if chunk:
        yield from _encode(chunk)


def _encode(messages: list[dict[str, Any]]) -> Iterator[tuple[bytes, int]]:
    body = orjson.dumps({"batch": messages})
    if len(body) <= MAX_BATCH_BYTES or len(messages) == 1:
        yield body, len(messages)
        return
    half = len(messages) // 2
    yield from _encode(messages[:half])
    yield from _encode(messages[half:])


def _post(client: httpx.Client, body: bytes) -> tuple[int, int]:
    """Send one batch, retrying connection errors and server overload; returns (accepted, duplicates)."""
    problem = ""
    for attempt in range(ATTEMPTS):
        try:
            response = client.post("/v1/batch", content=body)
        except httpx.TransportError as error:
            problem = f"{type(error).__name__}: {error}"
        else:
            if response.status_code == 200:
                result = response.json()
                return int(result["accepted"]), int(result["duplicates"])
            if response.status_code < 500 and response.status_code != 429:
                raise LifeloopError(
                    f"the ingest API refused a demo batch ({response.status_code}): {response.text[:500]}"
                )
            problem = f"HTTP {response.status_code}: {response.text[:200]}"
        time.sleep(min(0.25 * 2**attempt, 4.0))
    raise LifeloopError(f"could not deliver a batch to /v1/batch after {ATTEMPTS} attempts ({problem})")


def _load(
    simulation: Simulation, base_url: str, credentials: _Credentials, console: Console, engine: Engine
) -> DemoSummary:
    accepted = duplicates = 0
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>7,.0f} events/s"),
        TimeElapsedColumn(),
    )
    client = httpx.Client(
        base_url=base_url,
        auth=(credentials.write_key, ""),
        headers={"Content-Type": "application/json"},
        timeout=httpx.Timeout(60.0, connect=5.0),
        limits=httpx.Limits(max_connections=SENDERS),
    )
    started = time.perf_counter()
    with (
        client,
        ThreadPoolExecutor(SENDERS, thread_name_prefix="demo-sender") as pool,
        Progress(*columns, console=console) as progress,
    ):
        task = progress.add_task("sending events", total=len(simulation), rate=0.0)
        pending: dict[Future[tuple[int, int]], int] = {}

        def settle(futures: set[Future[tuple[int, int]]]) -> None:
            nonlocal accepted, duplicates
            for future in futures:
                stored, repeated = future.result()
                accepted, duplicates = accepted + stored, duplicates + repeated
                progress.advance(task, pending.pop(future))
            rate = (accepted + duplicates) / max(time.perf_counter() - started, 1e-9)
            progress.update(task, rate=rate)

        for body, size in _batches(simulation):
            if len(pending) >= SENDERS * 2:  # bounded: the history is rendered as it is sent
                settle(wait(pending, return_when=FIRST_COMPLETED).done)
            pending[pool.submit(_post, client, body)] = size
        while pending:
            settle(wait(pending).done)
        seconds = time.perf_counter() - started
        _await_profiles(engine, credentials.workspace, progress)
    showcase = simulation.showcase()
    profile_id = (
        _lookup(base_url, credentials.api_token, showcase.email) if showcase and showcase.email else None
    )
    summary = simulation.summary()
    return DemoSummary(
        base_url=base_url,
        workspace=credentials.workspace,
        source=credentials.source,
        write_key=credentials.write_key,
        api_token=credentials.api_token,
        customers=summary.customers,
        days=simulation.world.days,
        end=datetime.fromtimestamp(simulation.world.end_ms / 1000, UTC),
        events=len(simulation),
        accepted=accepted,
        duplicates=duplicates,
        seconds=seconds,
        by_event=summary.by_event,
        showcase_email=showcase.email if showcase else None,
        showcase_user_id=showcase.user_id if showcase else None,
        showcase_profile_id=profile_id,
    )


def _await_profiles(engine: Engine, slug: str, progress: Progress) -> None:
    """Wait while the server's resolver places the events just sent on their customers' profiles."""
    workspace_id = workspace_id_of(engine, slug)
    total = left = count_pending(engine, workspace_id)
    task = progress.add_task("placing events on profiles", total=total, rate=0.0)
    started = time.monotonic()
    while left:
        time.sleep(0.2)
        left = count_pending(engine, workspace_id)
        placed = total - left
        progress.update(task, completed=placed, rate=placed / max(time.monotonic() - started, 1e-9))


def _lookup(base_url: str, token: str, email: str) -> int | None:
    """The profile id of a demo customer, found the way a newcomer would: through the REST API."""
    response = httpx.get(
        f"{base_url}/api/v1/profiles/lookup",
        params={"identity": f"email:{email}"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10.0,
    )
    return int(response.json()["id"]) if response.status_code == 200 else None


# -- the guide -------------------------------------------------------------------------------------


def _print_guide(summary: DemoSummary, console: Console, *, serving: bool) -> None:
    """A panel with the numbers and where to look, then copy-paste commands that use the real credentials."""
    url = summary.base_url
    grid = Table.grid(padding=(0, 2))
    grid.add_row(
        "customers", f"{summary.customers:,} over {summary.days} days up to {summary.end:%Y-%m-%d %H:%M} UTC"
    )
    rate = f"{summary.events_per_second:,.0f} events/s"
    grid.add_row("events sent", f"{summary.events:,} in {summary.seconds:.1f} s ({rate})")
    grid.add_row("stored", f"{summary.accepted:,} new, {summary.duplicates:,} already there")
    grid.add_row("API docs", f"{url}/docs")
    grid.add_row("OpenAPI", f"{url}/openapi.json")
    grid.add_row("write key", f"{summary.write_key}  (source {summary.source})")
    grid.add_row("API token", f"{summary.api_token}  (admin)")
    title = f"[bold]{BRAND}[/] · workspace [bold]{summary.workspace}[/]"
    console.print(Panel(grid, title=title, border_style="green", expand=False))
    # Outside the panel and soft-wrapped, so long commands copy and paste as one line.
    console.print(Text(_commands(summary), style="cyan"), soft_wrap=True)
    if not serving:
        port = url.rsplit(":", 1)[-1]
        console.print(
            f"The server has stopped; `lifeloop serve --port {port}` serves this data again.", style="dim"
        )


def _commands(summary: DemoSummary) -> str:
    url = summary.base_url
    auth = '-H "Authorization: Bearer $LIFELOOP_TOKEN"'
    lines = [
        f"export LIFELOOP_TOKEN={summary.api_token} LIFELOOP_WRITE_KEY={summary.write_key}",
        "# a few profiles",
        f'curl -s {auth} "{url}/api/v1/profiles?limit=5"',
    ]
    if summary.showcase_email:
        lookup = f"{url}/api/v1/profiles/lookup?identity=email:{summary.showcase_email}"
        lines += ["# one customer, found by e-mail", f'curl -s {auth} "{lookup}"']
    profile = summary.showcase_profile_id if summary.showcase_profile_id is not None else 1
    lines += [
        "# their timeline, newest first",
        f'curl -s {auth} "{url}/api/v1/profiles/{profile}/events?limit=20"',
    ]
    event: dict[str, Any] = {"userId": summary.showcase_user_id or "LM000001", "event": "Product Viewed"}
    event["properties"] = {"product_id": "TEA-OB02"}
    lines += [
        "# send your own event with the write key",
        f"curl -s -u \"$LIFELOOP_WRITE_KEY:\" {url}/v1/track -H 'Content-Type: application/json' \\\n"
        f"  -d '{orjson.dumps(event).decode()}'",
    ]
    return "\n".join(lines)
