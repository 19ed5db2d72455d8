"""lifeloop import: CSV and Parquet, rejected rows with reasons, idempotent re-import, through the CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from lifeloop.config import Settings
from lifeloop.events.models import events
from lifeloop.profiles.models import profiles
from tests.cli_helpers import run_cli
from tests.conftest import Brand
from tests.profiles.helpers import owner


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
