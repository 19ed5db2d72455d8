"""`lifeloop analytics …` in a subprocess, as an operator runs it."""

from __future__ import annotations

import io
import json
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from lifeloop.config import Settings
from lifeloop.events.messages import parse_message
from lifeloop.events.service import ingest
from lifeloop.profiles.models import profiles
from lifeloop.profiles.resolver import resolve_pending
from lifeloop.workspaces.models import SourceKey
from tests.cli_helpers import run_cli
from tests.conftest import Brand

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def shop_history(engine: sa.Engine, brand: Brand) -> int:
    """40 customers over 120 days: views, and orders at a customer-specific rate."""
    rng = random.Random(3)
    # Spend differs between customers, so the Gamma-Gamma likelihood has a maximum (with i.i.d. order
    # values across customers it has none, and whether the optimiser stops cleanly depends on rounding).
    spend = random.Random(5)
    raw = []
    for c in range(40):
        rate = rng.choice([0.0, 0.02, 0.05, 0.1])
        channel = rng.choice(["line", "ads"])
        scale = spend.choice([15.0, 40.0, 120.0])
        for d in range(rng.randrange(0, 30), 120, rng.randrange(1, 6)):
            ts = (T0 + timedelta(days=d, hours=rng.randrange(0, 24))).isoformat()
            ctx = {"channel": channel}
            raw.append(
                {
                    "type": "track",
                    "userId": f"c{c}",
                    "event": "Product Viewed",
                    "timestamp": ts,
                    "context": ctx,
                }
            )
            if rng.random() < rate * 5:
                rng.random()  # keeps the draws of the rest of the history as they were
                props = {"revenue": round(spend.gammavariate(6.0, scale / 6.0), 2)}
                raw.append({"type": "track", "userId": f"c{c}", "event": "Order Completed", "timestamp": ts,
                            "properties": props})  # fmt: skip
    now = datetime.now(UTC)
    key = SourceKey(workspace_id=brand.workspace_id, source_id=brand.source_id)
    ingest(engine, key, [parse_message(m, received_at=now) for m in raw])
    resolve_pending(engine)
    return len(raw)


@pytest.mark.slow  # a dozen CLI processes
def test_sync_metrics_exports_rfm_clv_and_costs(
    settings: Settings, engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    total = shop_history(engine, brand)
    store = tmp_path / "analytics.duckdb"

    def cli(*args: str):
        return run_cli(["analytics", *args], settings.database_url, LIFELOOP_ANALYTICS_PATH=str(store))

    synced = cli("sync", "--chunk-size", "100", "--settle-seconds", "0")
    assert synced.exit_code == 0, synced.output
    assert f"{total} events" in synced.output
    again = cli("sync")
    assert again.exit_code == 0 and "0 events" in again.output

    csv_out = tmp_path / "dau.csv"
    run = cli("metric", "active_users", "-w", "acme", "-p", "start=2024-02-01", "-p", "end=2024-02-29",
              "-f", "csv", "-o", str(csv_out))  # fmt: skip
    assert run.exit_code == 0, run.output
    dau = pd.read_csv(csv_out)
    assert list(dau.columns) == ["day", "dau", "wau", "mau", "stickiness"] and len(dau) == 29
    assert dau["mau"].max() > 0

    parquet_out = tmp_path / "funnel.parquet"
    run = cli("metric", "funnel", "-w", "acme", "-p", "start=2024-01-01", "-p", "end=2024-04-30",
              "-p", "steps=Product Viewed,Order Completed", "-f", "parquet",
              "-o", str(parquet_out))  # fmt: skip
    assert run.exit_code == 0, run.output
    funnel = pd.read_parquet(parquet_out)
    assert funnel["users"].tolist()[0] == 40

    run = cli("metric", "retention", "-w", "acme", "-p", "start=2024-01-01", "-p", "end=2024-01-31",
              "-f", "json")  # fmt: skip
    assert run.exit_code == 0, run.output
    chart = json.loads(run.stdout)
    assert chart["metric"] == "retention" and chart["columns"][:2] == ["cohort", "users"]

    table = cli("metric", "repeat_purchase", "-w", "acme", "-p", "start=2024-01-01", "-p", "end=2024-04-30")
    assert table.exit_code == 0 and "repeat rate" in table.output

    costs = tmp_path / "costs.csv"
    costs.write_text("channel,day,cost\nLINE,2024-01-05,100\nads,2024-01-05,250.5\n", encoding="utf-8")
    assert cli("costs", str(costs), "-w", "acme").exit_code == 0
    run = cli(
        "metric", "channel_roi", "-w", "acme", "-p", "start=2024-01-01", "-p", "end=2024-04-30", "-f", "json"
    )
    rows = {r[0]: r for r in json.loads(run.stdout)["data"]}
    assert rows["line"][4] == 100 and rows["ads"][4] == 250.5

    scores = tmp_path / "rfm.csv"
    rfm = cli("rfm", "-w", "acme", "--as-of", "2024-05-01", "-o", str(scores))
    assert rfm.exit_code == 0, rfm.output
    assert "high_value" in rfm.output or "sleeping" in rfm.output
    assert len(pd.read_csv(scores)) == 40

    clv = cli("clv", "-w", "acme", "--months", "6", "-f", "csv", "-o", str(tmp_path / "clv.csv"))
    assert clv.exit_code == 0, clv.output
    assert "fitted: r=" in clv.output
    value = pd.read_csv(tmp_path / "clv.csv")
    assert {"user_id", "p_alive", "clv", "at_risk"} <= set(value.columns) and (value["clv"] >= 0).all()


def test_bad_input_exits_with_a_sentence(settings: Settings, brand: Brand, tmp_path: Path) -> None:
    env = {"LIFELOOP_ANALYTICS_PATH": str(tmp_path / "a.duckdb")}
    cases = [
        (["metric", "nope", "-w", "acme", "-p", "start=2024-01-01", "-p", "end=2024-01-02"],
         "no metric 'nope'"),
        (["metric", "new_users", "-w", "acme", "-p", "end=2024-02-30"], "end"),
        (["metric", "new_users", "-w", "acme", "-p", "oops"], "key=value"),
        (["metric", "new_users", "-w", "acme", "-p", "start=2024-01-01", "-p", "end=2024-01-02",
          "-f", "parquet"], "--out"),
        (["clv", "-w", "acme"], "no orders"),
    ]  # fmt: skip
    for args, message in cases:
        done = run_cli(["analytics", *args], settings.database_url, **env)
        assert done.exit_code != 0, args
        assert message in done.output, (args, done.output)


def test_clv_shows_user_ids_and_plain_amounts(
    settings: Settings, engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    shop_history(engine, brand)
    env = {"LIFELOOP_ANALYTICS_PATH": str(tmp_path / "analytics.duckdb")}
    assert (
        run_cli(["analytics", "sync", "--settle-seconds", "0"], settings.database_url, **env).exit_code == 0
    )
    out = tmp_path / "clv.csv"
    export = run_cli(
        ["analytics", "clv", "-w", "acme", "--as-of", "2024-04-30", "-f", "csv", "-o", str(out)],
        settings.database_url,
        **env,
    )
    assert export.exit_code == 0, export.output
    value = pd.read_csv(out)
    assert list(value.columns[:2]) == ["user_id", "profile_id"]
    with engine.connect() as conn:
        owners = dict(
            conn.execute(
                sa.select(profiles.c.id, profiles.c.user_id).where(
                    profiles.c.workspace_id == brand.workspace_id
                )
            ).all()
        )
    assert all(owners[p] == u for p, u in zip(value["profile_id"], value["user_id"], strict=True))
    assert value["user_id"].str.fullmatch(r"c\d+").all()

    shown = run_cli(
        ["analytics", "clv", "-w", "acme", "--as-of", "2024-04-30", "--top", "5"],
        settings.database_url,
        **{**env, "COLUMNS": "80"},
    )
    assert shown.exit_code == 0, shown.output
    assert max(len(line) for line in shown.stdout.splitlines()) <= 80 and "…" not in shown.stdout
    assert "user id" in shown.stdout and "profile id" in shown.stdout
    rows = [line for line in shown.stdout.splitlines() if re.search(r"│ c\d+ ", line)]
    assert [line.split("│")[1].strip() for line in rows] == value["user_id"].head(5).tolist()
    assert "e+" not in shown.stdout and "e-" not in shown.stdout
    best = value["clv"].iloc[0]
    assert best >= 1 and f"{best:,.2f}" in rows[0]  # an amount with cents, as in 162,345.12


@pytest.mark.parametrize(
    ("value", "shown"),
    [(162345.123, "162,345.12"), (12.3456, "12.35"), (0.82314, "0.8231"), (0.0, "0"), (3e-7, "0.0000")],
)
def test_numbers_on_screen_have_no_exponent(value: float, shown: str) -> None:
    from lifeloop.analytics.cli import _number

    assert _number(value) == shown


def test_tables_fit_80_columns_and_show_the_newest_rows(
    settings: Settings, engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    shop_history(engine, brand)
    env = {"LIFELOOP_ANALYTICS_PATH": str(tmp_path / "analytics.duckdb"), "COLUMNS": "80"}
    assert (
        run_cli(["analytics", "sync", "--settle-seconds", "0"], settings.database_url, **env).exit_code == 0
    )
    args = [
        "analytics",
        "metric",
        "retention",
        "-w",
        "acme",
        "-p",
        "start=2024-01-01",
        "-p",
        "end=2024-04-30",
    ]
    full = run_cli([*args, "-f", "csv"], settings.database_url, **env)
    cohorts = pd.read_csv(io.StringIO(full.stdout))["cohort"].tolist()
    assert len(cohorts) > 12  # a daily cohort per first day

    shown = run_cli(args, settings.database_url, **env)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in shown.output
    days = [m.group(0) for line in lines if (m := re.search(r"\d{4}-\d{2}-\d{2}", line))]
    assert days == cohorts[-12:]  # the newest 12 cohorts, each date whole
    header = " ".join(line for line in lines if "┃" in line)
    assert all(word in header for word in ("cohort", "users", "d1", "d7", "d30"))
    assert f"12 of {len(cohorts)} rows shown" in " ".join(shown.output.split())

    every = run_cli([*args, "--rows", "0"], settings.database_url, **env)
    assert sum(bool(re.search(r"\d{4}-\d{2}-\d{2}", line)) for line in every.stdout.splitlines()) == len(
        cohorts
    )
