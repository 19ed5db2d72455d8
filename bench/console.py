"""Server time of every console page, signed in as a workspace admin, at demo scale and at 1,000,000
customers.

Each page is requested in-process through Starlette's TestClient; a pure ASGI wrapper around the whole app
(middleware, authentication, error handlers included) times each request from the moment the app receives
it until the last byte of the response body is handed back: the *server's* time, without the client's.
The first request of each page is timed on its own, just after the analytics store file is touched: pages
keep what they read from the store until it is next written (``analytics.service``), so this is a page's
first view after a sync. After ``--warmup`` requests, ``--requests`` are timed per page (5 for a page whose
first request takes over 3 s, 3 over 10 s, so one slow page cannot dominate the run); p50 / p95 (linear
interpolation) / max.
Pages that answer 404 when the benchmark runs are reported as "missing", other non-200 answers as "failed".

Where the time goes, per request (means over the timed requests; the parts are exclusive, so a part's
time inside another part counts only in the inner one, and they add up to the request):
- ``metrics``: inside ``Metric.run`` (the metric's SQL on DuckDB, its frame; what the pages ask through
  ``run_metrics``), ``lifeloop.analytics.service.run_metric`` and ``MetricResult.to_json``, without opening
  the store; also per metric name (inclusive);
- ``duckdb_open_close``: opening (``duckdb.connect``, schema check) and closing the analytics store file,
  which every analytics call does once (``analytics.store.store``);
- ``analytics_other``: the other analytics calls pages make (``event_names``, ``rfm.layer_counts``,
  ``customer_value``: its DuckDB summary ``clv_summary``, the BG/NBD / Gamma-Gamma fits, the predictions;
  ``value_distribution``, ``at_risk_customers``), each also by name;
- ``oltp_sql``: cursor execution of OLTP statements (SQLAlchemy ``before/after_cursor_execute``; the
  slowest statements are listed per page);
- ``template``: Jinja ``Template.render``;
- ``other``: the rest (Python in the page and the domain functions, fetching and decoding OLTP rows,
  session look-up, FastAPI).

Scales (each on a fresh SQLite operational store and DuckDB analytics store in a temporary directory):
- ``demo``: the demo brand exactly as ``lifeloop demo`` builds it (``run_demo``: the simulator's history sent
  through ``POST /v1/batch`` over HTTP and resolved by the server), plus the console's own audience
  definitions, so that the tags / segments / journeys / templates pages have something to show: the
  ``line`` and ``wecom`` audience presets, two segments and three journey playbooks (drafts); then
  ``lifeloop recompute`` (``recompute_workspace``) and the worker's ``refresh`` (sync + RFM value tiers).
- ``1m``: ``synthetic.shop_events`` (1,000,000 customers, ~10 events each over two years, moved so that the
  history ends yesterday) plus the lifecycle engine's ``Lifecycle Stage Entered`` events for the stages
  derived below, loaded into the analytics store as bench/analytics.py does, with rollups and an RFM
  scoring. The operational store gets, in bulk (sqlite3 executemany, as bench/lifecycle.py loads): one
  profile per customer (name and e-mail traits), its user-id and e-mail identities, its ``line`` stage
  (silent after 30 days without interaction, else loyal: every synthetic customer has ordered) and stage
  history, the ``vip`` rule tag and the members of three segments, all computed from the same synthetic
  events; the operational event log holds only the events of the one customer whose page is measured.

Run:  python bench/console.py [--scales demo,1m] [--users 1000000] [--demo-customers 3000] [--requests 20]
Writes bench/results/console.json and prints a table per scale.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import socket
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import duckdb
import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event as sa_event

ROOT = Path(__file__).resolve().parents[1]
try:
    import lifeloop  # noqa: F401
except ImportError:  # a checkout without the package installed
    sys.path.insert(0, str(ROOT / "src"))

import jinja2  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from rich.console import Console as RichConsole  # noqa: E402

from lifeloop.accounts.service import add_member, create_user  # noqa: E402
from lifeloop.analytics import clv as clv_models  # noqa: E402
from lifeloop.analytics import rfm  # noqa: E402
from lifeloop.analytics import service as analytics_service  # noqa: E402
from lifeloop.analytics.engines import duckdb as duckdb_engine  # noqa: E402
from lifeloop.analytics.metrics.base import STAGE_EVENT, Metric, MetricResult  # noqa: E402
from lifeloop.analytics.refresh import refresh  # noqa: E402
from lifeloop.analytics.rollups import rebuild  # noqa: E402
from lifeloop.analytics.store import open_store  # noqa: E402
from lifeloop.analytics.synthetic import load_events, shop_events  # noqa: E402
from lifeloop.audience import definitions  # noqa: E402
from lifeloop.config import Settings, get_settings  # noqa: E402
from lifeloop.journeys.playbooks import install_playbook  # noqa: E402
from lifeloop.lifecycle.service import install_preset  # noqa: E402
from lifeloop.recompute import recompute_workspace  # noqa: E402
from lifeloop.store.engine import create_store_engine  # noqa: E402
from lifeloop.store.migrate import upgrade  # noqa: E402
from lifeloop.web.app import create_app  # noqa: E402
from lifeloop.web.console.pages import analytics as analytics_page  # noqa: E402
from lifeloop.web.console.render import NAV  # noqa: E402
from lifeloop.workspaces.service import create_workspace, workspace_id_of  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "console.json"
GOAL_MS = 300.0
# A page whose first request takes over SLOW_S seconds gets no further warm-up and SLOW_REQUESTS timed
# requests instead of --requests (VERY_SLOW_REQUESTS over VERY_SLOW_S): one slow page cannot take the run.
SLOW_S, SLOW_REQUESTS = 3.0, 5
VERY_SLOW_S, VERY_SLOW_REQUESTS = 10.0, 3
PASSWORD = "bench-console-password"
TZ = "Asia/Taipei"
TZ_OFFSET = pd.Timedelta(hours=8)  # Taipei has no daylight saving time
PLAYBOOKS = ("welcome_line", "cart_abandonment", "churned_big_sales")  # installed as drafts
SEGMENTS = {  # key → (name, condition); the 1M scale fills their members from the same rules
    "recent_buyers": ("Recent buyers", 'count("Order Completed", within="30d") >= 1'),
    "silent_friends": ("Silent friends", 'in_stage("line", "silent")'),
}
FUNNEL = ("Product Viewed", "Product Added", "Order Completed")
PATH_EVENT = "Product Viewed"


# --------------------------------------------------------------------------------------- measuring
class Probe:
    """Time spent in named places during the current request (requests run one at a time).

    ``parts`` are exclusive: a wrapped call inside another (the store opened inside ``run_metric``, SQL
    inside a domain call) counts in its own part only, so the parts and "other" add up to the request.
    ``calls`` are inclusive, per call label."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = defaultdict(float)
        self.calls: dict[str, float] = defaultdict(float)
        self.sql: dict[str, float] = defaultdict(float)
        self._stack: list[list[float]] = []  # [time spent in nested timed places] per open timed place
        self._sql_started: dict[int, float] = {}

    def reset(self) -> None:
        self.parts.clear()
        self.calls.clear()
        self.sql.clear()
        self._stack.clear()

    @contextmanager
    def timing(self, part: str, label: str) -> Iterator[None]:
        self._stack.append([0.0])
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - started
            nested = self._stack.pop()[0]
            self.parts[part] += spent - nested
            self.calls[label] += spent
            if self._stack:
                self._stack[-1][0] += spent

    def wrap(self, owner: Any, attribute: str, part: str, label: Callable[..., str] | None = None) -> None:
        """Replace ``owner.attribute`` by a timed version that adds to ``part`` and to a call label."""
        inner = getattr(owner, attribute)
        probe = self

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            with probe.timing(part, label(*args, **kwargs) if label else attribute):
                return inner(*args, **kwargs)

        timed_call.__wrapped__ = inner  # type: ignore[attr-defined]
        setattr(owner, attribute, timed_call)

    def wrap_store(self, owner: Any, attribute: str = "store") -> None:
        """Time opening (connect, schema check) and closing the DuckDB file behind ``owner.store``."""
        inner = getattr(owner, attribute)
        probe = self

        @contextmanager
        def timed_store(*args: Any, **kwargs: Any) -> Iterator[Any]:
            manager = inner(*args, **kwargs)
            with probe.timing("duckdb_open_close", "analytics store open"):
                con = manager.__enter__()
            try:
                yield con
            except BaseException:
                if not manager.__exit__(*sys.exc_info()):
                    raise
            else:
                with probe.timing("duckdb_open_close", "analytics store close"):
                    manager.__exit__(None, None, None)

        setattr(owner, attribute, timed_store)

    def watch(self, engine: sa.Engine) -> None:
        """Cursor execution time of every OLTP statement on ``engine``, per statement text."""

        @sa_event.listens_for(engine, "before_cursor_execute")
        def _before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            self._sql_started[id(cursor)] = time.perf_counter()

        @sa_event.listens_for(engine, "after_cursor_execute")
        def _after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            started = self._sql_started.pop(id(cursor), None)
            if started is not None:
                spent = time.perf_counter() - started
                self.parts["oltp_sql"] += spent
                self.sql[" ".join(statement.split())[:160]] += spent
                if self._stack:
                    self._stack[-1][0] += spent


PROBE = Probe()
PROBE.wrap(analytics_service, "run_metric", "metrics", lambda path, ws, name, params: f"run_metric:{name}")
PROBE.wrap(Metric, "run", "metrics", lambda metric, *a, **k: f"metric:{metric.name}")  # the pages' metrics
PROBE.wrap(MetricResult, "to_json", "metrics", lambda *a, **k: "MetricResult.to_json")
for _name in ("event_names", "customer_value", "clv_summary", "_predictions"):
    PROBE.wrap(analytics_service, _name, "analytics_other")
for _name in ("value_distribution", "at_risk_customers"):
    PROBE.wrap(analytics_service, _name, "analytics_other")
PROBE.wrap(clv_models.BetaGeoModel, "fit", "analytics_other", lambda *a, **k: "BetaGeoModel.fit")
PROBE.wrap(clv_models.GammaGammaModel, "fit", "analytics_other", lambda *a, **k: "GammaGammaModel.fit")
PROBE.wrap(rfm, "layer_counts", "analytics_other")
PROBE.wrap(jinja2.Template, "render", "template", lambda *a, **k: "Template.render")
PROBE.wrap(duckdb, "connect", "duckdb_open_close", lambda *a, **k: "duckdb.connect")  # inside the open
PROBE.wrap_store(duckdb_engine)  # run_metric's store
PROBE.wrap_store(analytics_page)  # the analytics pages' own (RFM layers)
PROBE.wrap_store(analytics_service)  # the pages' metrics, event names and customer value
PARTS = ("metrics", "duckdb_open_close", "analytics_other", "oltp_sql", "template")


class ServerTimer:
    """ASGI wrapper: seconds from receiving a request to sending the last byte of its response."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.last = time.perf_counter() - started

        await self.app(scope, receive, timed_send)


@dataclass
class Target:
    label: str
    path: str


def pages(customer_id: int, search: str) -> list[Target]:
    """NAV's pages, every parameterless GET page of the console's analytics router, funnels and paths with a
    question asked, one customer's page and a customer search."""
    targets = [Target(path, path) for path, _label, _permission in NAV]
    found = sorted(
        route.path
        for route in analytics_page.router.routes
        if getattr(route, "path", "").startswith("/analytics/")
        and "GET" in getattr(route, "methods", ())
        and "{" not in route.path
        and not route.path.endswith(".csv")
    )
    at = next(i for i, t in enumerate(targets) if t.path == "/analytics") + 1
    extra = [Target(p, p) for p in found]
    steps = urlencode([("steps", step) for step in FUNNEL])
    if "/analytics/funnels" in found:
        extra.append(Target("/analytics/funnels (3 steps)", f"/analytics/funnels?{steps}"))
    if "/analytics/paths" in found:
        extra.append(
            Target(
                "/analytics/paths (after an event)", "/analytics/paths?" + urlencode({"event": PATH_EVENT})
            )
        )
    targets[at:at] = extra
    targets.append(Target("/customers/{id}", f"/customers/{customer_id}"))
    targets.append(Target("/customers?q=<e-mail>", "/customers?" + urlencode({"q": search})))
    return targets


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def measure(
    client: TestClient, timer: ServerTimer, target: Target, requests: int, warmup: int, analytics: Path
) -> dict:
    """p50 / p95 / max server time of ``target`` and where the time went (means over the timed requests).

    Pages keep what they read from the analytics store until the store is next written, so the first
    request is timed on its own, as the first view after a sync: the store file is touched before it."""
    os.utime(analytics)  # a new state of the store, as a sync leaves it: nothing read before counts
    first = client.get(target.path, follow_redirects=False)
    slowest = timer.last
    for _ in range(warmup - 1 if slowest <= SLOW_S else 0):
        client.get(target.path, follow_redirects=False)
    row: dict[str, Any] = {"page": target.label, "path": target.path, "status": first.status_code}
    if first.status_code == 404:
        return row | {"verdict": "missing"}
    if first.status_code != 200:
        return row | {"verdict": "failed", "body": first.text[:300]}
    n = VERY_SLOW_REQUESTS if slowest > VERY_SLOW_S else SLOW_REQUESTS if slowest > SLOW_S else requests
    server, client_s = [], []
    parts: dict[str, float] = defaultdict(float)
    calls: dict[str, float] = defaultdict(float)
    sql: dict[str, float] = defaultdict(float)
    size = 0
    for _ in range(n):
        gc.collect()
        PROBE.reset()
        started = time.perf_counter()
        answer = client.get(target.path, follow_redirects=False)
        client_s.append(time.perf_counter() - started)
        assert answer.status_code == 200, (target.path, answer.status_code, answer.text[:300])
        server.append(timer.last)
        size = len(answer.content)
        for key, value in PROBE.parts.items():
            parts[key] += value
        for key, value in PROBE.calls.items():
            calls[key] += value
        for key, value in PROBE.sql.items():
            sql[key] += value
    ms = [s * 1000 for s in server]
    mean_ms = sum(ms) / n
    breakdown = {k: parts.get(k, 0.0) * 1000 / n for k in PARTS}
    breakdown["other"] = mean_ms - sum(breakdown.values())
    p95 = percentile(ms, 95)
    return row | {
        "requests": n,
        "first_ms": slowest * 1000,
        "p50_ms": percentile(ms, 50),
        "p95_ms": p95,
        "max_ms": max(ms),
        "mean_ms": mean_ms,
        "client_p50_ms": percentile([s * 1000 for s in client_s], 50),
        "html_bytes": size,
        "verdict": "ok" if p95 <= GOAL_MS else "miss",
        "breakdown_mean_ms": breakdown,
        "calls_mean_ms": {k: v * 1000 / n for k, v in sorted(calls.items(), key=lambda kv: -kv[1])},
        "slowest_sql_mean_ms": {
            k: v * 1000 / n for k, v in sorted(sql.items(), key=lambda kv: -kv[1])[:4] if v * 1000 / n >= 1
        },
    }


def make_admin(engine: sa.Engine, workspace_id: int) -> str:
    email = f"bench-admin-{workspace_id}@example.com"
    with engine.begin() as conn:
        user = create_user(conn, email=email, password=PASSWORD, name="Bench Admin", locale="en")
        add_member(conn, workspace_id, user_id=user.id, role="admin")
    return email


def sign_in(client: TestClient, email: str) -> None:
    """Through the login form, as tests/web/console/conftest.py ``sign_in`` does."""
    form = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert token, form.text[:500]
    answer = client.post("/login", data={"email": email, "password": PASSWORD, "login_token": token[1]})
    assert answer.status_code == 200 and 'name="csrf-token"' in answer.text, answer.text[:500]


def run_pages(
    engine: sa.Engine, analytics_path: Path, workspace_id: int, customer_id: int, search: str, args: Any
) -> list[dict]:
    """Every page, measured on an app serving ``engine`` and ``analytics_path`` (no resolver thread)."""
    settings = Settings(database_url=str(engine.url), resolve_in_server=False)
    app = create_app(settings, engine)
    app.state.analytics_path = analytics_path
    PROBE.watch(engine)
    timer = ServerTimer(app)
    rows = []
    with TestClient(timer, base_url="http://testserver") as client:
        sign_in(client, make_admin(engine, workspace_id))
        for target in pages(customer_id, search):
            row = measure(client, timer, target, args.requests, args.warmup, analytics_path)
            rows.append(row)
            print(_line(row), flush=True)
    return rows


def _line(row: dict) -> str:
    if row["verdict"] in ("missing", "failed"):
        return f"  {row['page']:<36} {row['verdict']} ({row['status']})"
    b = row["breakdown_mean_ms"]
    return (
        f"  {row['page']:<36} first {row['first_ms']:8.1f}  p50 {row['p50_ms']:8.1f}"
        f"  p95 {row['p95_ms']:8.1f}"
        f"  max {row['max_ms']:8.1f} ms"
        f"  n={row['requests']:<2} {row['verdict']:<4}  [metrics {b['metrics']:.0f}, duckdb open/close "
        f"{b['duckdb_open_close']:.0f}, analytics {b['analytics_other']:.0f}, sql {b['oltp_sql']:.0f}, "
        f"template {b['template']:.0f}, other {b['other']:.0f}]"
    )


# ------------------------------------------------------------------------------------- demo scale
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """LIFELOOP_* variables for a run (get_settings is cached: cleared on the way in and out)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()


def add_definitions(engine: sa.Engine, workspace_id: int) -> None:
    """The console's audience and journey definitions: presets, segments, playbooks (drafts)."""
    with engine.begin() as conn:
        for preset in ("line", "wecom"):
            definitions.install_preset(conn, workspace_id, preset)
        for key, (name, condition) in SEGMENTS.items():
            definitions.create_segment(conn, workspace_id, key, name, condition)
        for playbook in PLAYBOOKS:
            install_playbook(conn, workspace_id, playbook, publish=False)


def demo_scale(workdir: Path, args: Any) -> dict:
    from lifeloop.demo.runner import run_demo

    db, copy = workdir / "demo.db", workdir / "demo.duckdb"
    built: dict[str, float] = {}
    with environment(LIFELOOP_DATABASE_URL=f"sqlite:///{db}", LIFELOOP_ANALYTICS_PATH=str(copy)):
        started = time.perf_counter()
        summary = run_demo(
            customers=args.demo_customers,
            days=args.demo_days,
            serve=False,
            port=free_port(),
            console=RichConsole(quiet=True),
        )
        built["run_demo_s"] = time.perf_counter() - started
        engine = create_store_engine(Settings(resolve_in_server=False))
        ws = workspace_id_of(engine, summary.workspace)
        started = time.perf_counter()
        add_definitions(engine, ws)
        recompute_workspace(engine, ws, analytics_path=copy)
        built["definitions_and_recompute_s"] = time.perf_counter() - started
        started = time.perf_counter()
        refresh(engine, copy, settle_seconds=0)
        built["analytics_refresh_s"] = time.perf_counter() - started
        print(f"demo brand built: {summary.events:,} events, {built}", flush=True)
        with engine.connect() as conn:
            counts = {
                t: conn.execute(
                    sa.text(f"SELECT COUNT(*) FROM {t} WHERE workspace_id = :ws"), {"ws": ws}
                ).scalar()
                for t in ("profiles", "events", "profile_stages", "profile_tags", "segment_members")
            }
        customer = summary.showcase_profile_id or 1
        search = summary.showcase_email or "lumi"
        rows = run_pages(engine, copy, ws, customer, search, args)
        engine.dispose()
    return {
        "data": {
            "customers": summary.customers,
            "days": summary.days,
            "events_sent": summary.events,
            **counts,
        },
        "build_s": built,
        "customer_page": customer,
        "search": search,
        "pages": rows,
    }


# ---------------------------------------------------------------------------------------- 1M scale
def _sqlite_times(values: pd.Series | np.ndarray) -> list[str]:
    text = np.datetime_as_string(np.asarray(values).astype("datetime64[us]"), unit="us")
    return np.char.replace(text, "T", " ").tolist()


def synthetic_history(users: int, events_per_user: float, workspace_id: int, now: datetime) -> dict[str, Any]:
    """Shop events ending yesterday, with stage entries, and the per-customer facts the OLTP rows take."""
    events, last_day = shop_events(users, events_per_user=events_per_user, seed=42, workspace_id=workspace_id)
    shift = pd.Timedelta(days=(now.date() - timedelta(days=1) - last_day).days)
    events["ts"] = events["ts"] + shift
    events["day"] = (events["ts"] + TZ_OFFSET).dt.normalize()
    now_ts = pd.Timestamp(now.replace(tzinfo=None))
    ordered = events["event"] == "Order Completed"
    per = events.groupby("profile_id", sort=True)["ts"].agg(["min", "max"])
    first_order = events.loc[ordered].groupby("profile_id")["ts"].min().reindex(per.index)
    silent = (now_ts - per["max"]) >= pd.Timedelta(days=30)
    # The line model: "new" on the first event, "loyal" at the first order, "silent" 30 days after the
    # last interaction (every synthetic customer's first event is an order).
    ids = per.index.to_numpy()
    entries = [
        pd.DataFrame(
            {"profile_id": ids, "ts": per["min"].to_numpy(), "stage": "new", "previous_stage": None}
        ),
        pd.DataFrame(
            {
                "profile_id": ids,
                "ts": (first_order.fillna(per["min"]) + pd.Timedelta(seconds=1)).to_numpy(),
                "stage": "loyal",
                "previous_stage": "new",
            }
        ),
        pd.DataFrame(
            {
                "profile_id": ids[silent.to_numpy()],
                "ts": (per.loc[silent, "max"] + pd.Timedelta(days=30)).to_numpy(),
                "stage": "silent",
                "previous_stage": "loyal",
            }
        ),
    ]
    stages = pd.concat(entries, ignore_index=True)
    stages["id"] = np.arange(len(events) + 1, len(events) + 1 + len(stages), dtype=np.int64)
    stages["workspace_id"] = np.int64(workspace_id)
    stages["type"] = "track"
    stages["event"] = STAGE_EVENT
    stages["day"] = (stages["ts"] + TZ_OFFSET).dt.normalize()
    stages["interactive"] = False
    stages["lifecycle_model"] = "line"
    stages["revenue"] = np.nan
    for column in ("name", "category", "channel", "journey_id", "journey_group", "segment"):
        stages[column] = None
    stages["properties"] = None
    all_events = pd.concat([events, stages[events.columns]], ignore_index=True)
    all_events = all_events.sort_values(["ts", "id"], kind="stable").reset_index(drop=True)
    all_events["id"] = np.arange(1, len(all_events) + 1, dtype=np.int64)
    # Audience facts: the wecom vip rule, the bench segments, the churned playbook segment.
    year = events.loc[ordered & (events["ts"] > now_ts - pd.Timedelta(days=365))]
    spend = year.groupby("profile_id")["revenue"].sum()
    recent = events.loc[events["ts"] > now_ts - pd.Timedelta(days=30)].groupby("profile_id").size()
    vip = set(spend.index[spend >= 2000]) | set(recent.index[recent >= 20])
    buyers_30d = set(events.loc[ordered & (events["ts"] > now_ts - pd.Timedelta(days=30)), "profile_id"])
    churned = set(per.index[(now_ts - per["max"]) >= pd.Timedelta(days=90)])
    return {
        "events": all_events,
        "per": per,
        "stage": np.where(silent.to_numpy(), "silent", "loyal"),
        "stage_entries": stages[["profile_id", "ts", "stage", "previous_stage"]],
        "members": {
            "recent_buyers": buyers_30d,
            "silent_friends": set(ids[silent.to_numpy()]),
            "churned": churned,
        },
        "vip": vip,
        "shop_events": events,
    }


def load_oltp(path: Path, workspace_id: int, history: dict[str, Any], customer: int, now: datetime) -> dict:
    """Profiles, identities, stages, stage history, tags and segment members in bulk; one customer's
    events."""
    engine = create_store_engine(Settings(database_url=f"sqlite:///{path}", resolve_in_server=False))
    with engine.connect() as conn:
        segment_ids = dict(
            conn.execute(
                sa.text("SELECT key, id FROM segments WHERE workspace_id = :ws"), {"ws": workspace_id}
            ).all()
        )
    engine.dispose()
    per = history["per"]
    ids = per.index.to_numpy().tolist()
    first_s, last_s = _sqlite_times(per["min"].to_numpy()), _sqlite_times(per["max"].to_numpy())
    now_s = _sqlite_times(np.array([np.datetime64(now.replace(tzinfo=None))]))[0]
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA journal_mode=OFF")  # a bulk load into a fresh file (as bench/lifecycle.py)
    raw.execute("PRAGMA synchronous=OFF")
    raw.execute("PRAGMA cache_size=-1000000")
    raw.execute("BEGIN")
    ws = workspace_id
    raw.executemany(
        "INSERT INTO profiles (id, workspace_id, user_id, traits, first_seen, last_seen, created_at, "
        f"updated_at) VALUES (?, {ws}, ?, ?, ?, ?, ?, ?)",
        (
            (
                pid,
                f"u{pid}",
                f'{{"name":"Customer {pid}","email":"customer{pid}@example.com"}}',
                first_s[i],
                last_s[i],
                first_s[i],
                last_s[i],
            )
            for i, pid in enumerate(ids)
        ),
    )
    raw.executemany(
        "INSERT INTO identities (workspace_id, kind, value, profile_id, created_at) "
        f"VALUES ({ws}, ?, ?, ?, ?)",
        (
            row
            for i, pid in enumerate(ids)
            for row in (
                ("user_id", f"u{pid}", pid, first_s[i]),
                ("email", f"customer{pid}@example.com", pid, first_s[i]),
            )
        ),
    )
    entries = history["stage_entries"].sort_values(["profile_id", "ts"], kind="stable")
    entered = entries.groupby("profile_id")["ts"].max().reindex(per.index)
    raw.executemany(
        "INSERT INTO profile_stages (workspace_id, profile_id, model, stage, entered_at) "
        f"VALUES ({ws}, ?, 'line', ?, ?)",
        zip(ids, history["stage"].tolist(), _sqlite_times(entered.to_numpy()), strict=True),
    )
    raw.executemany(
        "INSERT INTO stage_history (workspace_id, profile_id, model, from_stage, to_stage, reason, at) "
        f"VALUES ({ws}, ?, 'line', ?, ?, 'event', ?)",
        zip(
            entries["profile_id"].tolist(),
            entries["previous_stage"].tolist(),
            entries["stage"].tolist(),
            _sqlite_times(entries["ts"].to_numpy()),
            strict=True,
        ),
    )
    raw.executemany(
        "INSERT INTO profile_tags (workspace_id, profile_id, tag, kind, added_at) "
        f"VALUES ({ws}, ?, 'vip', 'rule', ?)",
        ((int(pid), now_s) for pid in sorted(history["vip"])),
    )
    for key, members in history["members"].items():
        raw.executemany(
            "INSERT INTO segment_members (workspace_id, segment_id, profile_id, entered_at) "
            f"VALUES ({ws}, ?, ?, ?)",
            ((segment_ids[key], int(pid), now_s) for pid in sorted(members)),
        )
    # The measured customer's own timeline (the rest of the event log lives only in the analytics store).
    mine = history["shop_events"].loc[history["shop_events"]["profile_id"] == customer]
    times = _sqlite_times(mine["ts"].to_numpy())
    raw.executemany(
        "INSERT INTO events (workspace_id, message_id, type, event, user_id, profile_id, timestamp, "
        f"received_at, properties) VALUES ({ws}, ?, 'track', ?, ?, ?, ?, ?, ?)",
        (
            (
                f"bench-{i}",
                name,
                f"u{customer}",
                customer,
                times[i],
                times[i],
                json.dumps({"revenue": revenue}) if revenue == revenue else "{}",
            )
            for i, (name, revenue) in enumerate(zip(mine["event"], mine["revenue"], strict=True))
        ),
    )
    raw.execute("COMMIT")
    raw.execute("ANALYZE")
    raw.execute("PRAGMA journal_mode=WAL")  # back to the store's own mode before lifeloop opens it
    raw.close()
    return {
        "vip": len(history["vip"]),
        **{k: len(v) for k, v in history["members"].items()},
        "customer_events": len(mine),
    }


def million_scale(workdir: Path, args: Any) -> dict:
    db, copy = workdir / "million.db", workdir / "million.duckdb"
    built: dict[str, float] = {}
    now = datetime.now(UTC)
    engine = create_store_engine(Settings(database_url=f"sqlite:///{db}", resolve_in_server=False))
    upgrade(engine)
    with engine.begin() as conn:
        ws = create_workspace(conn, slug="bench", name="Bench shop", timezone=TZ).id
        install_preset(conn, ws, "line")
    add_definitions(engine, ws)
    engine.dispose()

    started = time.perf_counter()
    history = synthetic_history(args.users, args.events_per_user, ws, now)
    built["generate_s"] = time.perf_counter() - started
    events = history["events"]
    print(
        f"generated {len(events):,} events for {args.users:,} customers in {built['generate_s']:.1f} s",
        flush=True,
    )

    started = time.perf_counter()
    con = open_store(copy)
    load_events(con, events)
    built["analytics_load_s"] = time.perf_counter() - started
    started = time.perf_counter()
    rebuild(con, ws)
    built["analytics_rollups_s"] = time.perf_counter() - started
    started = time.perf_counter()
    rfm.score_rfm(con, ws, as_of=now)
    built["rfm_scoring_s"] = time.perf_counter() - started
    con.close()
    print(f"analytics store: {built}", flush=True)

    per = history["per"]
    # The measured customer: a repeat buyer still active (a page with a timeline, several orders).
    orders = history["shop_events"].loc[history["shop_events"]["event"] == "Order Completed"]
    counts = orders.groupby("profile_id").size()
    customer = int(counts[counts.between(3, 8)].index[len(counts[counts.between(3, 8)]) // 2])
    started = time.perf_counter()
    sizes = load_oltp(db, ws, history, customer, now)
    built["oltp_load_s"] = time.perf_counter() - started
    print(f"operational store loaded in {built['oltp_load_s']:.1f} s: {sizes}", flush=True)
    data = {
        "customers": len(per),
        "analytics_events": len(events),
        "stage_events": int((events["event"] == STAGE_EVENT).sum()),
        **sizes,
    }
    del history, events, orders, counts, per
    gc.collect()
    engine = create_store_engine(Settings(database_url=f"sqlite:///{db}", resolve_in_server=False))
    search = f"customer{customer}@example.com"
    with environment(LIFELOOP_DATABASE_URL=f"sqlite:///{db}", LIFELOOP_ANALYTICS_PATH=str(copy)):
        rows = run_pages(engine, copy, ws, customer, search, args)
    engine.dispose()
    return {"data": data, "build_s": built, "customer_page": customer, "search": search, "pages": rows}


# -------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", default="demo,1m", help="comma-separated: demo, 1m")
    parser.add_argument("--demo-customers", type=int, default=3000)
    parser.add_argument("--demo-days", type=int, default=180)
    parser.add_argument("--users", type=int, default=1_000_000, help="customers of the large scale")
    parser.add_argument("--events-per-user", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=20, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests per page first")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    scales = [s.strip() for s in args.scales.split(",") if s.strip()]
    run_started = time.perf_counter()
    out: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "duckdb": duckdb.__version__,
        },
        "method": (
            "in-process Starlette TestClient; server time measured by an ASGI wrapper around the whole app "
            "(request received → last body byte sent); client_p50_ms is the TestClient call as seen by the "
            "caller. p50/p95 by linear interpolation over the timed requests, after warm-up requests."
        ),
        "goal_p95_ms": GOAL_MS,
        "requests": args.requests,
        "warmup": args.warmup,
        "slow_page": {
            "first_request_over_s": {SLOW_S: SLOW_REQUESTS, VERY_SLOW_S: VERY_SLOW_REQUESTS},
            "then": "no further warm-up, that many timed requests",
        },
        "scales": {},
    }
    with tempfile.TemporaryDirectory(prefix="lifeloop-bench-console-") as tmp:
        for scale in scales:
            started = time.perf_counter()
            print(f"== scale {scale}", flush=True)
            if scale == "demo":
                result = demo_scale(Path(tmp), args)
            elif scale == "1m":
                result = million_scale(Path(tmp), args)
            else:
                raise SystemExit(f"unknown scale {scale!r}")
            result["seconds"] = time.perf_counter() - started
            out["scales"][scale] = result
    out["total_run_s"] = time.perf_counter() - run_started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    print(markdown(out))
    print(f"total run time {out['total_run_s']:.0f} s; results written to {args.out}")


def markdown(out: dict) -> str:
    """The results as a Markdown table: one row per page; per scale the first request after the analytics
    store was written, then p50 / p95 of the requests after it (✗: over the goal)."""
    scales = list(out["scales"])
    by_page: dict[str, dict[str, dict]] = defaultdict(dict)
    order: list[str] = []
    for scale in scales:
        for row in out["scales"][scale]["pages"]:
            if row["page"] not in order:
                order.append(row["page"])
            by_page[row["page"]][scale] = row
    head = "| page | " + " | ".join(f"{s} first ms | {s} p50 ms | {s} p95 ms" for s in scales) + " |"
    lines = [head, "|---|" + "---:|---:|---:|" * len(scales)]
    for name in order:
        cells = []
        for scale in scales:
            row = by_page[name].get(scale)
            if row is None or row["verdict"] in ("missing", "failed"):
                cells += [row["verdict"] if row else "–", "", ""]
            else:
                mark = " ✗" if row["verdict"] == "miss" else ""
                first = " ✗" if row["first_ms"] > GOAL_MS else ""
                cells += [f"{row['first_ms']:,.0f}{first}", f"{row['p50_ms']:,.0f}"]
                cells.append(f"{row['p95_ms']:,.0f}{mark}")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
