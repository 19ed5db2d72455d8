"""A seeded random event history in the analytics store's flattened form, for the reference tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from lifeloop.analytics.rollups import rebuild
from lifeloop.analytics.store import open_store

TZ = "Asia/Taipei"
START = datetime(2024, 1, 1)  # naive UTC, as the store keeps it
DAYS = 150
EVENTS = [
    "Page Viewed",
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
    "Menu Clicked",
    "Message Received",
]
SYSTEM = ["Message Delivered", "Message Opened"]
STAGES = ["new", "engaged", "converting", "loyal", "silent"]
CHANNELS = ["line", "wecom", "ads", None]


@dataclass
class History:
    events: pd.DataFrame  # the store's ``events`` columns
    profile_map: pd.DataFrame
    costs: pd.DataFrame
    workspace_id: int


def generate(seed: int = 7, users: int = 300, workspace_id: int = 1) -> History:
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    for user in range(1, users + 1):
        first = rng.integers(0, DAYS - 10)
        life = int(rng.integers(1, DAYS - first))
        n = int(rng.integers(1, 40))
        offsets = np.sort(first * 86400 + rng.integers(0, life * 86400, size=n))
        channel = CHANNELS[int(rng.integers(0, len(CHANNELS)))]
        stage_i = -1
        for i, off in enumerate(offsets):
            ts = START + timedelta(seconds=int(off))
            kind = rng.random()
            row = {"profile_id": user, "ts": ts, "type": "track", "channel": None}
            if kind < 0.55:
                row["event"] = EVENTS[int(rng.integers(0, len(EVENTS) - 1))]
                if row["event"] == "Page Viewed":
                    row["type"] = "page"
            elif kind < 0.72:
                row["event"] = "Order Completed"
                row["revenue"] = float(np.round(rng.gamma(2.0, 40.0), 2)) if rng.random() < 0.95 else None
            elif kind < 0.8:
                row["event"] = SYSTEM[int(rng.integers(0, 2))]
            elif kind < 0.88:
                row["event"] = "Lifecycle Stage Entered"
                prev = STAGES[stage_i] if stage_i >= 0 else None
                stage_i = int(rng.integers(0, len(STAGES)))
                model = "line" if rng.random() < 0.8 else "mall"
                row.update(stage=STAGES[stage_i], previous_stage=prev, lifecycle_model=model)
            elif kind < 0.93:
                row["event"] = "Journey Entered"
                row.update(
                    journey_id=str(int(rng.integers(1, 3))),
                    journey_group=("control" if rng.random() < 0.3 else "treatment"),
                )
            elif kind < 0.97:
                row["event"] = "Segment Entered" if rng.random() < 0.6 else "Segment Exited"
                row["segment"] = "vip" if rng.random() < 0.7 else "newsletter"
            else:
                row["event"] = "identify"
                row["type"] = "identify"
            if i == 0 or rng.random() < 0.1:
                row["channel"] = channel
            rows.append(row)
        # a burst of same-second events exercises the (ts, id) tie-breaks
        if rng.random() < 0.1:
            ts = START + timedelta(seconds=int(offsets[0]))
            rows.extend(
                {"profile_id": user, "ts": ts, "type": "track", "event": "Product Viewed"} for _ in range(2)
            )
    frame = pd.DataFrame(rows)
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # ids not in time order
    frame["id"] = np.arange(1, len(frame) + 1, dtype=np.int64) * 3  # gaps, like a shared sequence
    frame["workspace_id"] = workspace_id
    frame["ts"] = pd.to_datetime(frame["ts"])
    frame["day"] = (
        frame["ts"].dt.tz_localize("UTC").dt.tz_convert(TZ).dt.tz_localize(None).dt.normalize().dt.date
    )
    frame["interactive"] = frame["type"].isin(["track", "page", "screen"]) & ~frame["event"].isin(
        [*SYSTEM, "Lifecycle Stage Entered", "Journey Entered", "Segment Entered", "Segment Exited"]
    )
    for col in ("name", "category", "revenue", "stage", "previous_stage", "lifecycle_model", "journey_id"):
        if col not in frame:
            frame[col] = None
    for col in ("journey_group", "segment", "properties"):
        if col not in frame:
            frame[col] = None
    frame["revenue"] = frame["revenue"].astype("float64")
    # Merges: every 10th profile was merged into the one before it (some after their events were synced).
    pm = pd.DataFrame({"profile_id": np.arange(1, users + 1)})
    pm["canonical_id"] = np.where(pm["profile_id"] % 10 == 0, pm["profile_id"] - 1, pm["profile_id"])
    pm["workspace_id"] = workspace_id
    pm["updated_at"] = START
    cost_days = pd.date_range(START, periods=DAYS, freq="D").date
    costs = pd.DataFrame(
        [
            {"workspace_id": workspace_id, "channel": ch, "day": d, "cost": float(rng.integers(0, 50))}
            for ch in ("line", "ads", "tiktok")
            for d in cost_days
        ]
    )
    return History(events=frame, profile_map=pm, costs=costs, workspace_id=workspace_id)


EVENT_COLUMNS = [
    "id", "workspace_id", "profile_id", "type", "event", "name", "category", "ts", "day", "interactive",
    "revenue", "channel", "stage", "previous_stage", "lifecycle_model", "journey_id", "journey_group",
    "segment", "properties",
]  # fmt: skip


def load(history: History, path, *, rollups: bool = True) -> None:
    """Write the history into a fresh store as a completed sync would leave it: with the workspace's rollups
    (``rollups=False``: events only, so queries fall back to them)."""
    con = open_store(path)
    try:
        con.register("h_events", history.events[EVENT_COLUMNS])
        con.execute("INSERT INTO events SELECT * FROM h_events")
        con.register(
            "h_map", history.profile_map[["workspace_id", "profile_id", "canonical_id", "updated_at"]]
        )
        con.execute("INSERT INTO profile_map SELECT * FROM h_map")
        con.register("h_costs", history.costs)
        con.execute("INSERT INTO channel_costs SELECT workspace_id, channel, day, cost FROM h_costs")
        if rollups:
            rebuild(con, history.workspace_id)
    finally:
        con.close()


def day(offset: int) -> date:
    return (START + timedelta(days=offset)).date()
