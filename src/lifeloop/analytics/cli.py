"""``lifeloop analytics …``: sync the analytical store, run metrics, RFM and CLV, export results."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lifeloop.cli_support import console, err, explains_errors, fail, open_engine

if TYPE_CHECKING:  # pandas is imported only by the commands that need it (CLI start-up time)
    import pandas as pd

analytics_app = typer.Typer(
    help="Analytics: the DuckDB store, metrics, RFM value layers and CLV.", no_args_is_help=True
)
StorePath = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="DuckDB file (default LIFELOOP_ANALYTICS_PATH or ./var/analytics.duckdb).",
        show_default=False,
    ),
]
WorkspaceOpt = Annotated[str, typer.Option("--workspace", "-w", help="Workspace slug or id.")]


class Format(StrEnum):
    table = "table"
    csv = "csv"
    parquet = "parquet"
    json = "json"


def _path(store: Path | None) -> Path:
    from lifeloop.analytics.store import default_path

    return store or default_path()


def _workspace_id(workspace: str) -> int:
    from lifeloop.workspaces.service import workspace_id_of

    return workspace_id_of(open_engine(), workspace)


def _parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--param takes key=value, got {item!r}")
        params[key.strip()] = value.strip()
    return params


def _number(value: float) -> str:
    """A float as a person reads it: amounts with cents (162,345.12), shares and probabilities below 1
    with four significant digits (0.8231), never an exponent (1.623e+05)."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1:
        return f"{value:,.2f}"
    if value == 0 or abs(value) >= 1e-4:
        return f"{value:.4g}"  # from 0.0001 to 1, .4g writes no exponent
    return f"{value:.4f}"


def _is_time(value: Any) -> bool:
    return isinstance(value, date | datetime)  # pandas' Timestamp is a datetime


def _newest(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The last ``rows`` rows of a frame ordered by time (its first column a day), else the first ones."""
    first = frame.iloc[:, 0].dropna() if len(frame.columns) else frame
    return frame.tail(rows) if len(first) and all(_is_time(v) for v in first) else frame.head(rows)


def _screen_table(frame: pd.DataFrame, title: str, width: int) -> Table:
    """``frame`` as a table that fits ``width`` columns where it can: headers read ``d1 users`` for
    ``d1_users`` and, when the table is too wide, wrap at their words; days, times and numbers are never
    wrapped (text columns give way first, and fold rather than end in …)."""
    import pandas as pd

    cells = [
        ["" if pd.isna(v) else _number(v) if isinstance(v, float) else str(v) for v in row]
        for row in frame.itertuples(index=False, name=None)
    ]
    headers = [str(col).replace("_", " ") for col in frame.columns]
    longest = [max((len(row[i]) for row in cells), default=0) for i in range(len(headers))]
    borders = 3 * len(headers) + 1
    if sum(max(len(h), n) for h, n in zip(headers, longest, strict=True)) + borders > width:
        headers = ["\n".join(h.split()) for h in headers]
    table = Table(title=title)
    for i, col in enumerate(frame.columns):
        values = frame.iloc[:, i].dropna()
        numeric = pd.api.types.is_numeric_dtype(frame[col])
        whole = numeric or bool(len(values) and all(_is_time(v) for v in values))
        table.add_column(headers[i], justify="right" if numeric else "left", overflow="fold", no_wrap=whole)
    for row in cells:
        table.add_row(*row)
    return table


def _emit(
    frame: pd.DataFrame,
    fmt: Format,
    out: Path | None,
    *,
    title: str,
    chart: dict[str, Any] | None,
    rows: int | None = None,
) -> None:
    """Write ``frame`` as a table on screen (its newest or first ``rows`` rows), CSV, Parquet or
    chart-ready JSON (to ``out`` or stdout); files and the other formats hold every row."""
    if fmt is Format.parquet and out is None:
        fail("--format parquet needs --out FILE")
    if fmt is Format.table and out is None:
        shown = frame if rows is None or rows <= 0 or len(frame) <= rows else _newest(frame, rows)
        console.print(_screen_table(shown, title, console.width))
        if len(shown) < len(frame):
            err.print(
                f"{len(shown)} of {len(frame)} rows shown; --rows 0 shows all, -f csv or -f json gives "
                "the data"
            )
        return
    if fmt is Format.parquet:
        assert out is not None
        frame.to_parquet(out, index=False)
    elif fmt is Format.json:
        text = json.dumps(
            chart if chart is not None else frame.to_dict(orient="records"), ensure_ascii=False, default=str
        )
        if out is None:
            print(text)
        else:
            out.write_text(text + "\n", encoding="utf-8")
    else:  # csv, and table written to a file
        if out is None:
            print(frame.to_csv(index=False), end="")
        else:
            frame.to_csv(out, index=False)
    if out is not None:
        err.print(f"{len(frame)} rows written to {out}")


@analytics_app.command()
@explains_errors
def sync(
    store: StorePath = None,
    workspace: Annotated[str | None, typer.Option("--workspace", "-w", help="Only this workspace.")] = None,
    chunk_size: Annotated[int, typer.Option(min=1, help="Events per DuckDB transaction.")] = 10_000,
    settle_seconds: Annotated[
        float | None,
        typer.Option(
            min=0, help="Leave events younger than this for the next sync (default 10 on PostgreSQL)."
        ),
    ] = None,
) -> None:
    """Copy new resolved events and changed profiles into the analytical store (incremental, resumable)."""
    from lifeloop.analytics.sync import pending_events
    from lifeloop.analytics.sync import sync as run_sync

    engine = open_engine()
    path = _path(store)
    ws = _workspace_id(workspace) if workspace else None
    total = pending_events(engine, path, workspace_id=ws)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err) as progress:
        task = progress.add_task("syncing events", total=total)
        report = run_sync(
            engine,
            path,
            workspace_id=ws,
            chunk_size=chunk_size,
            settle_seconds=settle_seconds,
            progress=lambda copied, _remaining: progress.advance(task, copied),
        )
    console.print(f"{report.events} events and {report.profiles} profiles synced to {path}")
    for wid, event_id in report.waiting_at.items():
        console.print(f"  workspace {wid}: waiting for identity resolution from event {event_id}")


@analytics_app.command("metrics")
def list_metrics() -> None:
    """List the metrics and their parameters."""
    from lifeloop.analytics.metrics import METRICS

    table = Table(title="metrics")
    table.add_column("name")
    table.add_column("parameters (besides start, end, segment, stage, stage_model, channel)")
    common = {"workspace_id", "start", "end", "segment", "stage", "stage_model", "channel"}
    for name, cls in METRICS.items():
        table.add_row(name, ", ".join(k for k in cls.model_fields if k not in common))
    console.print(table)


@analytics_app.command()
@explains_errors
def metric(
    name: Annotated[str, typer.Argument(help="Metric name; see `lifeloop analytics metrics`.")],
    workspace: WorkspaceOpt,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="key=value, repeatable; lists comma-separated.")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file.")] = None,
    rows: Annotated[
        int,
        typer.Option(
            min=0, help="Rows shown in the table: the newest of a series by day, else the first; 0: all."
        ),
    ] = 12,
    store: StorePath = None,
) -> None:
    """Run one metric, e.g. `lifeloop analytics metric new_users -w tea -p start=2024-01-01 -p end=2024-01-07`

    Lists are comma-separated (`-p steps="Product Viewed,Order Completed"`). Without start, a range is the
    90 days up to end (default today). The table shows the newest 12 rows (so `retention` shows its 12
    newest daily cohorts; `cohort_retention` gives weekly or monthly ones); `--rows 0` shows all, and
    `-f csv` / `-f json` always give every row.
    """
    from lifeloop.analytics.service import run_metric

    result = run_metric(_path(store), _workspace_id(workspace), name, _parse_params(param or []))
    _emit(result.frame, fmt, out, title=result.metric.title, chart=result.to_json(), rows=rows)


@analytics_app.command()
@explains_errors
def rfm(
    workspace: WorkspaceOpt,
    as_of: Annotated[
        datetime | None, typer.Option(help="Score as of this time (UTC); default now.", show_default=False)
    ] = None,
    method: Annotated[str, typer.Option(help="quantile or thresholds.")] = "quantile",
    fmt: Annotated[
        Format, typer.Option("--format", "-f", help="Format of the per-user scores with --out.")
    ] = Format.csv,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write every user's scores here.")] = None,
    store: StorePath = None,
    write_back: Annotated[
        bool, typer.Option(help="Also write each customer's layer to the value_tier trait (contact policy).")
    ] = False,
) -> None:
    """Score RFM, assign value layers and segments (stored in the analytics store), show users per layer."""
    from pydantic import ValidationError

    from lifeloop.analytics.rfm import RfmConfig, layer_counts, score_rfm
    from lifeloop.analytics.store import store as open_store_ctx

    try:
        config = RfmConfig(method=method)  # type: ignore[arg-type]
    except ValidationError:
        fail("--method must be quantile or thresholds")
    ws = _workspace_id(workspace)
    at = (as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of) if as_of else datetime.now(UTC)
    with open_store_ctx(_path(store)) as con:
        scores = score_rfm(con, ws, as_of=at, config=config)
        counts = layer_counts(con, ws)
    _emit(counts, Format.table, None, title=f"value layers as of {at:%Y-%m-%d %H:%M} UTC", chart=None)
    if out is not None:
        _emit(scores, fmt, out, title="RFM scores", chart=None)
    if write_back:
        from lifeloop.analytics.rfm import write_value_tiers

        changed = write_value_tiers(open_engine(), _path(store), ws, now=at)
        console.print(f"value_tier written: {changed:,} profiles changed tier")


@analytics_app.command()
@explains_errors
def clv(
    workspace: WorkspaceOpt,
    months: Annotated[int, typer.Option(min=1, max=120, help="Horizon of the predicted value.")] = 12,
    as_of: Annotated[
        datetime | None, typer.Option(help="Last observed day; default today (UTC).", show_default=False)
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Rows to show on screen.")] = 20,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    out: Annotated[Path | None, typer.Option("--out", "-o")] = None,
    store: StorePath = None,
) -> None:
    """Fit BG/NBD + Gamma-Gamma on the workspace's orders: predicted CLV, P(alive) and churn risk per user.

    The table shows the top customers' user id, profile id, orders, P(alive), CLV and churn-risk reason;
    `-f csv` / `-f json` / `-o FILE` give every customer with expected orders and order value as well.
    """
    from lifeloop.analytics.service import customer_value
    from lifeloop.analytics.store import store as open_store_ctx

    ws = _workspace_id(workspace)
    with open_store_ctx(_path(store)) as con:
        frame, params = customer_value(con, ws, months=months, as_of=as_of.date() if as_of else None)
    err.print("fitted: " + ", ".join(f"{k}={v:.4g}" for k, v in params.items()))
    shown = _with_user_ids(ws, frame if out is not None else frame.head(top))
    if fmt is Format.table and out is None:  # what fits 80 columns; the formats and files hold every column
        shown = shown[["user_id", "profile_id", "orders", "p_alive", "clv", "risk_reason"]]
    _emit(shown, fmt, out, title=f"predicted {months}-month CLV (top {len(shown)})", chart=None)


def _with_user_ids(workspace_id: int, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` keyed by profile id (its ``user_id`` column, as the analytics store names it) with the
    customers' own user ids first and the profile ids in a ``profile_id`` column; anonymous ones empty."""
    from lifeloop.profiles.service import get_profile, list_profiles

    profile_ids = [int(v) for v in frame["user_id"]]
    user_ids: dict[int, str | None] = {}
    with open_engine().connect() as conn:
        if len(profile_ids) <= 100:  # the rows on screen: one look-up each
            user_ids = {pid: get_profile(conn, workspace_id, pid).user_id for pid in profile_ids}
        else:  # an export: every profile, a page at a time
            after: int | None = None
            while page := list_profiles(conn, workspace_id, limit=10_000, after_id=after):
                user_ids.update((row["id"], row["user_id"]) for row in page)
                after = page[-1]["id"]
    out = frame.rename(columns={"user_id": "profile_id"})
    out.insert(0, "user_id", [user_ids.get(pid) for pid in profile_ids])
    return out


@analytics_app.command()
@explains_errors
def costs(
    file: Annotated[Path, typer.Argument(help="CSV with columns channel, day, cost.")],
    workspace: WorkspaceOpt,
    store: StorePath = None,
) -> None:
    """Load per-channel daily acquisition costs (for channel ROI); a channel's day is replaced, not added."""
    from lifeloop.analytics.service import set_channel_costs
    from lifeloop.analytics.store import store as open_store_ctx

    if not file.is_file():
        fail(f"{file} is not a file")
    import pandas as pd

    frame = pd.read_csv(file)
    ws = _workspace_id(workspace)
    with open_store_ctx(_path(store)) as con:
        written = set_channel_costs(con, ws, frame)
    console.print(f"{written} cost rows loaded")
