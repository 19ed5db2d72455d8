"""lifeloop import: CSV and Parquet, rejected rows with reasons, idempotent re-import, through the CLI."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from lifeloop.analytics.clv import GammaGammaModel
from lifeloop.analytics.service import clv_summary
from lifeloop.analytics.store import store
from lifeloop.analytics.sync import sync
from lifeloop.config import Settings
from lifeloop.events.models import events
from lifeloop.profiles.models import profiles
from tests.cli_helpers import run_cli
from tests.conftest import Brand
from tests.profiles.helpers import owner

CDNOW = Path(__file__).resolve().parents[1] / "data" / "cdnow"


@pytest.fixture
def cli(settings: Settings):
    return lambda args: run_cli(args, settings.database_url)


def write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


PROFILES = pd.DataFrame(
    {
        "user_id": ["u1", "u2", "", "u4"],
        "email": ["a@example.com", "b@example.com", "nobody@example.com", "d@example.com"],
        "phone": ["0912345678", "", "", "+886 900 000 000"],
        "name": ["王小明", "Bob", "Ghost", "Dee"],
        "city": ["Taipei", "Taichung", "Tainan", "Kaohsiung"],
    }
)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_import_profiles(cli, engine: sa.Engine, brand: Brand, tmp_path: Path, suffix: str) -> None:
    path = write(PROFILES, tmp_path / f"people{suffix}")
    rejects = tmp_path / "rejects.csv"
    result = cli(["import", "profiles", str(path), "-w", "acme", "--rejects", str(rejects)])
    assert result.exit_code == 0, result.output
    # The row without user_id still has an e-mail trait but no userId/anonymousId: rejected with a reason.
    assert "4 rows: 3 stored, 0 already stored, 1 rejected" in result.output
    assert "userId or anonymousId is required" in result.output
    line = 4 if suffix == ".csv" else 3
    assert rejects.read_text().splitlines()[1].startswith(f"{line},")
    with engine.connect() as conn:
        traits = conn.execute(
            sa.select(profiles.c.traits).where(
                profiles.c.workspace_id == brand.workspace_id, profiles.c.user_id == "u1"
            )
        ).scalar()
    assert traits["name"] == "王小明" and traits["city"] == "Taipei"
    assert traits["phone"] == "0912345678"  # kept as text, leading zero intact
    assert owner(engine, brand.workspace_id, "email", "d@example.com") is not None
    assert owner(engine, brand.workspace_id, "phone", "+886900000000") is not None

    again = cli(["import", "profiles", str(path), "-w", "acme"])
    assert "4 rows: 0 stored, 3 already stored, 1 rejected" in again.output


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_import_events(cli, engine: sa.Engine, brand: Brand, tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame(
        {
            "type": ["track", "track", "page", "track", "track"],
            "event": ["Order Completed", "Product Viewed", None, None, "Order Completed"],
            "user_id": ["u1", "u1", "u2", "u3", None],
            "timestamp": [
                "2025-01-02T03:04:05Z",
                "2025-01-03T00:00:00+08:00",
                "2025-01-04T00:00:00Z",
                "2025-01-05T00:00:00Z",
                "2025-01-06T00:00:00Z",
            ],
            "name": [None, None, "Booking", None, None],
            "properties.revenue": [100.5, None, None, None, 5.0],
            "sku": [None, "TEA-01", None, None, None],
            "properties": ['{"currency": "TWD"}', None, '{"category": "booking"}', None, None],
        }
    )
    path = write(frame, tmp_path / f"events{suffix}")
    result = cli(["import", "events", str(path), "--workspace", "acme"])
    assert result.exit_code == 0, result.output
    assert "5 rows: 3 stored, 0 already stored, 2 rejected" in result.output
    assert "event is required for track calls" in result.output
    with engine.connect() as conn:
        rows = {
            r.event or r.name: r
            for r in conn.execute(sa.select(events).where(events.c.workspace_id == brand.workspace_id))
        }
    order = rows["Order Completed"]
    assert str(order.properties["revenue"]) in ("100.5", "100.5")
    assert order.properties["currency"] == "TWD"
    assert order.timestamp.isoformat() == "2025-01-02T03:04:05+00:00"
    assert rows["Product Viewed"].properties["sku"] == "TEA-01"
    assert rows["Booking"].properties["category"] == "booking"


def test_import_refuses_bad_input_with_a_sentence(
    cli, engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    missing = cli(["import", "events", str(tmp_path / "nope.csv"), "-w", "acme"])
    assert missing.exit_code != 0 and "is not a file" in missing.output
    (tmp_path / "data.json").write_text("{}")
    wrong_kind = cli(["import", "people", str(tmp_path / "data.json"), "-w", "acme"])
    assert wrong_kind.exit_code != 0 and "kind must be" in wrong_kind.output
    wrong_format = cli(["import", "events", str(tmp_path / "data.json"), "-w", "acme"])
    assert wrong_format.exit_code != 0 and "use a .csv or .parquet file" in wrong_format.output
    bad = write(pd.DataFrame({"event": [None, None]}), tmp_path / "bad.csv")
    all_bad = cli(["import", "events", str(bad), "-w", "acme"])
    assert all_bad.exit_code != 0 and "every row was rejected" in all_bad.output
    unknown_ws = cli(["import", "events", str(bad), "-w", "nobody"])
    assert unknown_ws.exit_code != 0 and "no workspace 'nobody'" in unknown_ws.output


def test_reimport_stores_nothing_twice_and_keeps_identical_rows(
    cli, engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    # The same customer buying the same amount twice on one day: two genuine rows, not one repeated.
    frame = pd.DataFrame(
        {
            "event": ["Order Completed"] * 3,
            "user_id": ["u1", "u1", "u2"],
            "timestamp": ["2025-01-02T00:00:00Z"] * 3,
            "properties": ['{"revenue": 12.5}'] * 3,
        }
    )
    path = write(frame, tmp_path / "orders.csv")
    assert (
        "3 rows: 3 stored, 0 already stored, 0 rejected"
        in cli(["import", "events", str(path), "-w", "acme"]).output
    )
    again = cli(["import", "events", str(path), "-w", "acme"])
    assert "3 rows: 0 stored, 3 already stored, 0 rejected" in again.output
    # The file's identity is its content: a copy under another name is the same file.
    copy = tmp_path / "copy-of-orders.csv"
    copy.write_bytes(path.read_bytes())
    assert (
        "3 rows: 0 stored, 3 already stored, 0 rejected"
        in cli(["import", "events", str(copy), "-w", "acme"]).output
    )
    with engine.connect() as conn:
        users = conn.execute(
            sa.select(events.c.user_id).where(events.c.workspace_id == brand.workspace_id)
        ).scalars()
        assert sorted(users) == ["u1", "u1", "u2"]


@pytest.mark.slow  # 6,919 rows imported and synced
def test_cdnow_through_import_reproduces_published_gamma_gamma(
    cli, engine: sa.Engine, brand: Brand, tmp_path: Path
) -> None:
    """CDNOW_sample holds 21 rows that repeat another exactly; imported, each is its own order."""
    raw = pd.read_csv(
        CDNOW / "CDNOW_sample.txt",
        sep=r"\s+",
        header=None,
        names=["orig_id", "customer", "date", "cds", "amount"],
        dtype={"orig_id": str, "customer": str, "date": str},
    )
    assert raw.duplicated().sum() == 21
    orders = pd.DataFrame(
        {
            "event": "Order Completed",
            "user_id": "cdnow-" + raw["orig_id"],
            "timestamp": pd.to_datetime(raw["date"], format="%Y%m%d").dt.strftime("%Y-%m-%dT12:00:00Z"),
            "properties": [json.dumps({"revenue": float(a)}) for a in raw["amount"]],
        }
    )
    path = write(orders, tmp_path / "cdnow.csv")
    result = cli(["import", "events", str(path), "-w", "acme"])
    assert f"{len(raw)} rows: {len(raw)} stored, 0 already stored, 0 rejected" in result.output, result.output
    store_path = tmp_path / "analytics.duckdb"
    sync(engine, store_path, settle_seconds=0)
    with store(store_path) as con:
        # The published fit is on the 39-week calibration period, 1997-01-01 to 1997-09-30.
        summary = clv_summary(con, brand.workspace_id, date(1997, 9, 30))
    repeat = summary[summary["frequency"] > 0]
    gg = GammaGammaModel().fit(repeat["frequency"], repeat["monetary_value"])
    assert gg.params is not None and len(repeat) == 946
    p, q, gamma = gg.params
    # Fader, Hardie & Lee (2005): p 6.25, q 3.74, gamma 15.44, as published (two decimals).
    assert (f"{p:.2f}", f"{q:.2f}", f"{gamma:.2f}") == ("6.25", "3.74", "15.44")
