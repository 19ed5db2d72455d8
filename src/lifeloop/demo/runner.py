"""``lifeloop demo``: set up the Lumi Tea 茶光 workspace, send its simulated history through the real
ingest API over HTTP, then show a newcomer where to look — with every console page alive.

What a run does, in order (the guide prints the seconds of each phase):

1. the workspace, a source and an API token for this run, the console login (``demo.setup``), and the
   LINE channel pointed at a local LINE Messaging API imitation (``demo.line_imitation``);
2. simulate the brand's history and send it to ``POST /v1/batch`` of the real app, served by uvicorn in
   a thread of this process;
3. place the events on profiles in large batches (the API's own resolver is off: one 20,000-event
   transaction costs a third of what twenty 1,000-event ones do);
4. install and publish the LINE shop's journey playbooks, then send and place the last days of the
   history, so those days' follows, carts and orders enter journeys as live traffic would (the
   welcomes go out at once; later steps wait as they would for a real shop);
5. start ``lifeloop worker``'s loops in threads (deliveries, journeys, broadcasts, sweeps, placing new
   events) and wait for the first messages to reach the LINE imitation;
6. refresh the analytics store once, so the overview's charts (messages included) have data at the
   first look, then start the analytics loop too, print the guide, and keep serving until Ctrl-C.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import chain, count
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from rich.console import Console, Group
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine

from lifeloop.analytics.refresh import refresh
from lifeloop.analytics.store import default_path
from lifeloop.config import get_settings
from lifeloop.demo.engagement import demo_checkins, install_engagement, issue_demo_coupons, referral_messages
from lifeloop.demo.line_imitation import LineImitation
from lifeloop.demo.setup import (
    LINE_PLAYBOOKS,
    ConsoleLogin,
    LineCredentials,
    connect_line,
    ensure_console_user,
    install_playbooks,
    line_only_policy,
)
from lifeloop.demo.simulator import BRAND, Simulation
from lifeloop.errors import Conflict, InvalidInput, LifeloopError, NotFound
from lifeloop.events.messages import MAX_BATCH_BYTES
from lifeloop.journeys.stats import entry_counts
from lifeloop.lifecycle.service import active_model, install_preset
from lifeloop.messaging.models import DUE_STATUSES
from lifeloop.messaging.service import list_deliveries
from lifeloop.profiles.resolver import count_pending, resolve_pending
from lifeloop.secret_key import require_for
from lifeloop.store.engine import create_store_engine
from lifeloop.store.migrate import upgrade
from lifeloop.store.schema import utcnow
from lifeloop.web.app import create_app
from lifeloop.worker import Background, WorkerOptions
from lifeloop.workspaces.service import (
    create_api_token,
    create_source,
    create_workspace,
    get_workspace,
    list_sources,
)

HOST = "127.0.0.1"
WORKSPACE = "demo"
SOURCE = "demo-web"
BATCH_SIZE = 400  # messages per /v1/batch request (~250 KB; split further if over the 500 KB limit)
SENDERS = 4
ATTEMPTS = 6
RESOLVE_BATCH = 20_000  # events placed per transaction while loading
LIVE_HOURS = 72  # the last hours of history arrive with the journeys published
DRAIN_SECONDS = 30.0  # at most this long waiting for the first deliveries before printing the guide
ANALYTICS_SECONDS = 60.0  # the demo refreshes analytics more often than `lifeloop worker` (300 s)


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
    login: ConsoleLogin | None = None
    journeys: dict[str, dict[str, int]] = field(default_factory=dict)  # key -> entered, inside
    line_messages: int = 0  # messages the LINE imitation accepted before the guide was printed
    line_requests: dict[str, int] = field(default_factory=dict)  # push, multicast, rich_menu
    analytics_events: int = 0  # events the first analytics refresh copied
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase, in order

    @property
    def console_url(self) -> str:
        return f"{self.base_url}/"

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class _Credentials:
    workspace: str
    workspace_id: int
    created: datetime  # when the demo workspace was first made
    source: str
    write_key: str
    api_token: str
    login: ConsoleLogin


class _Phases:
    """Seconds per phase of the run, for the guide (and for whoever measures the demo)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._since = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._since
        self._since = now


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
    require_for("lifeloop demo", settings)  # the LINE channel's credentials are stored encrypted
    engine = create_store_engine(settings)
    phases = _Phases()
    analytics = default_path()
    try:
        upgrade(engine)
        credentials = _prepare_workspace(engine)
        end = end or credentials.created.replace(minute=0, second=0, microsecond=0)
        phases.done("set up the workspace")
        with console.status(f"simulating {customers:,} customers over {days} days…"):
            simulation = Simulation(customers, days, seed, end)
        phases.done("simulate")
        line_credentials = LineCredentials.generate()
        with LineImitation(line_credentials.channel_access_token) as line:
            with engine.begin() as conn:
                connect_line(conn, credentials.workspace_id, line.url, line_credentials)
            # While loading, this process places events itself, in large batches (see _place); the
            # background worker's tick loop resolves what arrives afterwards.
            app = create_app(settings.model_copy(update={"resolve_in_server": False}), engine)
            app.state.analytics_path = analytics
            app.state.loading = f"loading the demo brand ({customers:,} customers, {days} days of history)"
            server = _BackgroundServer(app, port)
            server.start()
            background: Background | None = None
            try:
                live_from = end - timedelta(hours=min(LIVE_HOURS, days * 6))
                loaded = _load(simulation, server.url, credentials, console, engine, live_from, phases)
                background = Background(engine, _worker_options(analytics)).start(analytics=False)
                with console.status("delivering the journeys' first messages to the LINE imitation…"):
                    _await_deliveries(engine, credentials.workspace_id)
                phases.done("first deliveries")
                with console.status("refreshing the analytics store (charts, RFM value tiers)…"):
                    refreshed = refresh(engine, analytics)
                background.start_analytics()
                phases.done("first analytics refresh")
                app.state.loading = None
                with engine.connect() as conn:
                    journeys = entry_counts(conn, credentials.workspace_id)
                summary = _summary(
                    loaded,
                    credentials,
                    journeys=journeys,
                    line=line,
                    analytics_events=refreshed.events,
                    phases=phases.seconds,
                )
                _print_guide(summary, console, serving=serve)
                if serve:
                    server.serve_until_interrupted(console)
            finally:
                if background is not None:
                    background.stop()
                server.stop()
        return summary
    finally:
        engine.dispose()


def _worker_options(analytics: Path) -> WorkerOptions:
    """``lifeloop worker``'s loops as the demo runs them: in this process, placing new events too (the
    API's own resolver is off), with a shorter analytics period so a newcomer's events show soon."""
    return WorkerOptions(analytics_seconds=ANALYTICS_SECONDS, analytics_path=analytics, worker_id="demo")


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
    """The demo workspace (reused when it exists) with a new source and admin token for this run, and
    the console login (created once, its password set back to the demo's on every run).

    Keys and tokens are stored hashed, so an earlier run's cannot be shown again: each run makes its own.
    """
    with engine.begin() as conn:
        try:
            workspace = get_workspace(conn, WORKSPACE)
        except NotFound:
            workspace = create_workspace(conn, slug=WORKSPACE, name=BRAND, timezone="Asia/Taipei")
            line_only_policy(conn, workspace.id)
        install_engagement(conn, workspace.id, now=utcnow())
        if active_model(conn, workspace.id) is None:  # the brand's customers are LINE friends
            install_preset(conn, workspace.id, "line")
        taken = {s.name for s in list_sources(conn, workspace.id)}
        candidates = chain([SOURCE], (f"{SOURCE}-{i}" for i in count(2)))
        name = next(n for n in candidates if n not in taken)
        _source, write_key = create_source(conn, workspace.id, name=name)
        _token, token = create_api_token(conn, workspace.id, name=f"lifeloop demo ({name})", role="admin")
        login = ensure_console_user(conn, workspace.id)
    return _Credentials(workspace.slug, workspace.id, workspace.created_at, name, write_key, token, login)


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


def _batches(messages: Iterator[dict[str, Any]]) -> Iterator[tuple[bytes, int]]:
    """Encoded ``/v1/batch`` bodies of up to BATCH_SIZE messages, each under the 500 KB limit."""
    chunk: list[dict[str, Any]] = []
    for message in messages:
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


class _Sender:
    """Sends messages to ``/v1/batch`` from a few threads, one progress bar per part of the history."""

    def __init__(self, client: httpx.Client, pool: ThreadPoolExecutor, progress: Progress) -> None:
        self.client, self.pool, self.progress = client, pool, progress
        self.accepted = self.duplicates = 0
        self.seconds = 0.0

    def send(self, messages: Iterator[dict[str, Any]], description: str, total: int) -> None:
        task = self.progress.add_task(description, total=total, rate=0.0)
        started = time.perf_counter()
        done_before = self.accepted + self.duplicates
        pending: dict[Future[tuple[int, int]], int] = {}

        def settle(futures: set[Future[tuple[int, int]]]) -> None:
            for future in futures:
                stored, repeated = future.result()
                self.accepted, self.duplicates = self.accepted + stored, self.duplicates + repeated
                self.progress.advance(task, pending.pop(future))
            sent = self.accepted + self.duplicates - done_before
            self.progress.update(task, rate=sent / max(time.perf_counter() - started, 1e-9))

        for body, size in _batches(messages):
            if len(pending) >= SENDERS * 2:  # bounded: the history is rendered as it is sent
                settle(wait(pending, return_when=FIRST_COMPLETED).done)
            pending[self.pool.submit(_post, self.client, body)] = size
        while pending:
            settle(wait(pending).done)
        self.seconds += time.perf_counter() - started


def _load(
    simulation: Simulation,
    base_url: str,
    credentials: _Credentials,
    console: Console,
    engine: Engine,
    live_from: datetime,
    phases: _Phases,
) -> DemoSummary:
    """Send the history and place it; install the journeys; then send and place the last days."""
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
    cut = simulation.count_before(live_from)
    hours = round((simulation.world.end_ms / 1000 - live_from.timestamp()) / 3600)
    with (
        client,
        ThreadPoolExecutor(SENDERS, thread_name_prefix="demo-sender") as pool,
        Progress(*columns, console=console) as progress,
    ):
        sender = _Sender(client, pool, progress)
        sender.send(simulation.messages(0, cut), "sending the history", cut)
        phases.done("send the history")
        _place(engine, credentials.workspace_id, progress, "placing it on profiles")
        phases.done("place the history on profiles")
        issued = issue_demo_coupons(engine, credentials.workspace_id, now=utcnow())
        progress.console.print(f"{issued} welcome and day-7 coupons issued")
        with engine.begin() as conn:
            install_playbooks(conn, credentials.workspace_id)
        progress.console.print(f"{len(LINE_PLAYBOOKS)} LINE journey playbooks installed and published")
        phases.done("install the journeys")
        sender.send(simulation.messages(cut), f"sending the last {hours} h", len(simulation) - cut)
        _place(engine, credentials.workspace_id, progress, "placing it, journeys live")
        friends = referral_messages(engine, credentials.workspace_id, now=utcnow(), seed=simulation.seed)
        joins = [m for m in friends if m["type"] == "identify"]  # placed before their orders
        sender.send(iter(joins), "sending invited friends", len(joins))
        _place(engine, credentials.workspace_id, progress, "placing them")
        sender.send(iter(friends[len(joins) :]), "sending their first orders", len(friends) - len(joins))
        _place(engine, credentials.workspace_id, progress, "placing them")
        checked = demo_checkins(engine, credentials.workspace_id, now=utcnow(), seed=simulation.seed)
        progress.console.print(
            f"{len(joins)} sign-ups with an invite code; {checked} daily check-ins in the last week"
        )
        phases.done("send and place the last days, journeys live")
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
        events=len(simulation) + len(friends),
        accepted=sender.accepted,
        duplicates=sender.duplicates,
        seconds=sender.seconds,
        by_event=summary.by_event,
        showcase_email=showcase.email if showcase else None,
        showcase_user_id=showcase.user_id if showcase else None,
        showcase_profile_id=profile_id,
        login=credentials.login,
    )


def _place(engine: Engine, workspace_id: int, progress: Progress, description: str) -> None:
    """Place the events just sent on their customers' profiles, as ``lifeloop worker`` does, in
    RESOLVE_BATCH-event transactions (stages, tags, segments and journeys react in each)."""
    total = count_pending(engine, workspace_id)
    task = progress.add_task(description, total=total, rate=0.0)
    started = time.monotonic()

    def advance(placed: int) -> None:
        progress.advance(task, placed)
        done = progress.tasks[task].completed
        progress.update(task, rate=done / max(time.monotonic() - started, 1e-9))

    resolve_pending(engine, workspace_id, batch_size=RESOLVE_BATCH, on_progress=advance)
    progress.update(task, completed=total)


def _await_deliveries(engine: Engine, workspace_id: int, timeout: float = DRAIN_SECONDS) -> None:
    """Wait until no message of the workspace is due (the delivery thread has sent what it can now;
    what is left waits for a journey step, quiet hours or a retry) and the delivery events are placed
    on their profiles (so the analytics refresh that follows counts them), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = utcnow()
        with engine.connect() as conn:
            due = any(
                entry.status == "sending" or entry.next_attempt_at <= now
                for status in (*DUE_STATUSES, "sending")
                for entry in list_deliveries(conn, workspace_id, status=status, limit=200)[0]
            )
        if not due and not count_pending(engine, workspace_id):
            return
        time.sleep(0.2)


def _summary(
    loaded: DemoSummary,
    credentials: _Credentials,
    *,
    journeys: dict[str, dict[str, int]],
    line: LineImitation,
    analytics_events: int,
    phases: dict[str, float],
) -> DemoSummary:
    with line.lock:
        messages, requests = line.delivered, dict(line.requests)
    return replace(
        loaded,
        login=credentials.login,
        journeys=journeys,
        line_messages=messages,
        line_requests=requests,
        analytics_events=analytics_events,
        phases=dict(phases),
    )


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


def console_line(summary: DemoSummary) -> str:
    """The guide's first line: where the console is and how to sign in."""
    login = summary.login
    who = f"  login {login.email} / {login.password}" if login is not None else ""
    return f"Console: {summary.console_url}{who}"


def _print_guide(summary: DemoSummary, console: Console, *, serving: bool) -> None:
    """A panel with the console login first, the numbers and where to look, then copy-paste commands
    that use the real credentials."""
    url = summary.base_url
    grid = Table.grid(padding=(0, 2))
    grid.add_row(
        "customers", f"{summary.customers:,} over {summary.days} days up to {summary.end:%Y-%m-%d %H:%M} UTC"
    )
    rate = f"{summary.events_per_second:,.0f} events/s"
    grid.add_row("events sent", f"{summary.events:,} in {summary.seconds:.1f} s ({rate})")
    grid.add_row("stored", f"{summary.accepted:,} new, {summary.duplicates:,} already there")
    entered = sum(c["entered"] for c in summary.journeys.values())
    inside = sum(c["inside"] for c in summary.journeys.values())
    live = f"{len(LINE_PLAYBOOKS)} LINE playbooks live"
    grid.add_row("journeys", f"{live}: {entered:,} entries, {inside:,} waiting for a step")
    requests = ", ".join(f"{n:,} {kind}" for kind, n in sorted(summary.line_requests.items()))
    delivered = f"{summary.line_messages:,} messages delivered to the local LINE imitation"
    grid.add_row("LINE", f"{delivered} ({requests or 'no requests'})")
    every = f"refreshed every {ANALYTICS_SECONDS:.0f} s"
    grid.add_row("analytics", f"{summary.analytics_events:,} events in the store, {every}")
    grid.add_row("API docs", f"{url}/docs")
    grid.add_row("OpenAPI", f"{url}/openapi.json")
    grid.add_row("write key", f"{summary.write_key}  (source {summary.source})")
    grid.add_row("API token", f"{summary.api_token}  (admin)")
    title = f"[bold]{BRAND}[/] · workspace [bold]{summary.workspace}[/]"
    body = Group(Text(console_line(summary), style="bold yellow"), Text(""), grid)
    console.print(Panel(body, title=title, border_style="green", expand=False))
    # Outside the panel and soft-wrapped, so long commands copy and paste as one line.
    console.print(Text(_commands(summary), style="cyan"), soft_wrap=True)
    total = sum(summary.phases.values())
    steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in summary.phases.items())
    console.print(f"Ready in {total:.0f} s ({steps}).", style="dim", soft_wrap=True)
    if not serving:
        port = url.rsplit(":", 1)[-1]
        console.print(
            f"The server has stopped; `lifeloop serve --port {port}` serves this data again "
            "(and `lifeloop worker` does the background work). The LINE channel pointed at the demo's "
            "LINE imitation, which stopped too: connect a real channel in the console.",
            style="dim",
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
