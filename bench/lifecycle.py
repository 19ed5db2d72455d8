"""Batch recompute of lifecycle stages at scale, next to plain pandas, and real-time evaluation latency.

1. Generates USERS profiles and about EVENTS events (a year of follows, page views, menu clicks, orders,
   identifies and lifeloop's own message receipts) and bulk-loads them straight into a fresh SQLite store
   (the default embedded store) with already-resolved profile ids and user-id identities — HTTP ingest
   has its own benchmark (bench/ingest.py). Loading is not timed.
2. Installs the `mall` preset and times `lifeloop.lifecycle.service.recompute` — rebuild of every
   computed property from the event log, every profile's stage, every recheck time for the sweep, and
   the writes of the changes (history, current stage, stage events) — first on the fresh store (every
   profile enters a stage) and then again (steady state, no change), plus each phase on its own.
   Then tags and segments (`audience.batch.recompute_audience`, with the line/wecom audience presets
   and two segments), when this checkout has them.
3. Computes the same stages, `vip` holders and segment members with plain vectorised pandas from the
   same events, and, separately, including reading them from SQLite first; both must equal what lifeloop
   stored. Then all the recompute computes, in pandas: the values, stages and memberships, every
   profile's recheck times (stages and audience) and the comparison of all of it with the stored state,
   which must find no difference — once with the events and the state in memory (reading not timed), and
   once starting, as lifeloop does, from the store: the events read from the analytics copy, the stored
   state from its copy there. Each ``--repeat`` times, the best run counted.
4. Streams single-event batches (ingest, then `profiles.resolver.resolve_batch` in its own transaction:
   identity resolution, computed properties, stage evaluation, recheck) and reports the latency
   percentiles of the resolve step.

Run:  python bench/lifecycle.py [--users 1000000] [--events 10000000] [--stream 2000]
Writes bench/results/lifecycle.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
try:
    import lifeloop  # noqa: F401
except ImportError:  # a checkout without the package installed
    sys.path.insert(0, str(ROOT / "src"))

from lifeloop.analytics.rollups import fold_activity  # noqa: E402
from lifeloop.analytics.store import store  # noqa: E402
from lifeloop.analytics.sync import sync  # noqa: E402
from lifeloop.config import Settings  # noqa: E402
from lifeloop.events import store as event_store  # noqa: E402
from lifeloop.events.messages import Message  # noqa: E402
from lifeloop.lifecycle import service as lifecycle  # noqa: E402
from lifeloop.profiles import computed  # noqa: E402
from lifeloop.profiles.resolver import resolve_batch  # noqa: E402
from lifeloop.recompute import recompute_workspace  # noqa: E402
from lifeloop.store.engine import connect, create_store_engine, transaction  # noqa: E402
from lifeloop.store.migrate import upgrade  # noqa: E402
from lifeloop.workspaces.models import workspaces  # noqa: E402
from lifeloop.workspaces.service import create_workspace  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "lifecycle.json"
NOW = datetime(2026, 7, 1, tzinfo=UTC)
DAYS = 365
US = 1_000_000
DAY_US = 86_400 * US

# (type, event name, share of the non-follow events, properties JSON choices or None)
KINDS = [
    ("page", None, 0.40, ['{"category":"product"}', '{"category":"booking"}', '{"category":"campaign"}']),
    ("track", "Menu Clicked", 0.15, ['{"menu":"main","item":"offers"}', '{"menu":"main","item":"shop"}']),
    ("track", "Product Viewed", 0.15, None),
    ("track", "Message Received", 0.05, ['{"text":"hi"}', '{"text":"想預約","keyword":"預約"}']),
    ("track", "Order Completed", 0.05, "revenue"),
    ("track", "Message Delivered", 0.15, None),  # lifeloop's own: never the user's interaction
    ("identify", None, 0.05, None),
]
FOLLOW = ("track", "Channel Followed", '{"channel":"line","source":"qr_offline"}')


# ----------------------------------------------------------------------------------------------- data
def generate(users: int, n_events: int, seed: int = 7) -> pd.DataFrame:
    """One row per event: profile (1-based), type, event, properties, ts (µs since epoch, UTC)."""
    rng = np.random.default_rng(seed)
    end = int((NOW - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * US
    start = end - DAYS * DAY_US
    joined = start + (rng.random(users) * DAYS * DAY_US).astype(np.int64)
    # Each user stays active for an exponential span (mean 60 days), so many fall silent.
    active_until = np.minimum(joined + (rng.exponential(60, users) * DAY_US).astype(np.int64), end - 1)
    extra = max(n_events - users, 0)
    who = rng.integers(0, users, size=extra)
    at = joined[who] + (rng.random(extra) * (active_until[who] - joined[who])).astype(np.int64)
    shares = np.array([k[2] for k in KINDS])
    kind = rng.choice(len(KINDS), size=extra, p=shares / shares.sum())
    types = np.array([k[0] for k in KINDS], dtype=object)[kind]
    names = np.array([k[1] for k in KINDS], dtype=object)[kind]
    props = np.full(extra, None, dtype=object)
    for index, (_t, _n, _share, choices) in enumerate(KINDS):
        mask = kind == index
        if choices == "revenue":
            amounts = rng.integers(5, 500, size=int(mask.sum()))
            props[mask] = [f'{{"revenue":{a},"currency":"TWD"}}' for a in amounts.tolist()]
        elif choices:
            props[mask] = np.array(choices, dtype=object)[rng.integers(0, len(choices), int(mask.sum()))]
    frame = pd.DataFrame(
        {
            "profile": np.concatenate([np.arange(1, users + 1), who + 1]),
            "type": np.concatenate([np.full(users, FOLLOW[0], dtype=object), types]),
            "event": np.concatenate([np.full(users, FOLLOW[1], dtype=object), names]),
            "properties": np.concatenate([np.full(users, FOLLOW[2], dtype=object), props]),
            "ts": np.concatenate([joined, at]),
        }
    )
    # Stored in (profile, time) order: every index of the events table is then appended to, not split.
    return frame.sort_values(["profile", "ts"], kind="stable").reset_index(drop=True)


def _sqlite_times(us: np.ndarray) -> list[str]:
    text = np.datetime_as_string(us.astype("datetime64[us]"), unit="us")
    return np.char.replace(text, "T", " ").tolist()


def load(path: Path, frame: pd.DataFrame, users: int) -> tuple[Any, int]:
    """A migrated store at ``path`` with one workspace holding ``frame``; returns (engine, workspace id)."""
    settings = Settings(database_url=f"sqlite:///{path}", resolve_in_server=False)
    engine = create_store_engine(settings)
    upgrade(engine)
    with engine.begin() as conn:
        ws = create_workspace(conn, slug="bench", timezone="Asia/Taipei").id
    engine.dispose()
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA journal_mode=OFF")  # a bulk load into a fresh file: no WAL copy of every page
    raw.execute("PRAGMA synchronous=OFF")
    raw.execute("PRAGMA cache_size=-1000000")
    raw.execute("BEGIN")
    first = frame.groupby("profile")["ts"].min().to_numpy()
    last = frame.groupby("profile")["ts"].max().to_numpy()
    first_s, last_s = _sqlite_times(first), _sqlite_times(last)
    raw.executemany(
        "INSERT INTO profiles (id, workspace_id, user_id, traits, first_seen, last_seen, created_at, "
        "updated_at) VALUES (?, ?, ?, '{}', ?, ?, ?, ?)",
        ((i + 1, ws, f"u{i + 1}", first_s[i], last_s[i], first_s[i], last_s[i]) for i in range(users)),
    )
    raw.executemany(
        "INSERT INTO identities (workspace_id, kind, value, profile_id, created_at) "
        "VALUES (?, 'user_id', ?, ?, ?)",
        ((ws, f"u{i + 1}", i + 1, first_s[i]) for i in range(users)),
    )
    step = 500_000
    for begin in range(0, len(frame), step):
        part = frame.iloc[begin : begin + step]
        times = _sqlite_times(part["ts"].to_numpy())
        profile = part["profile"].tolist()
        rows = zip(
            (f"m{n}" for n in range(begin, begin + len(part))),
            part["type"].tolist(),
            part["event"].tolist(),
            (f"u{p}" for p in profile),
            profile,
            times,
            times,
            part["properties"].tolist(),
            strict=False,
        )
        raw.executemany(
            f"INSERT INTO events (workspace_id, message_id, type, event, user_id, profile_id, timestamp, "
            f"received_at, properties) VALUES ({ws}, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    raw.execute("COMMIT")
    raw.execute("ANALYZE")
    raw.execute("PRAGMA journal_mode=WAL")  # back to the store's own mode before lifeloop opens it
    raw.close()
    return create_store_engine(settings), ws


# --------------------------------------------------------------------------------------------- pandas
NON_INTERACTION = sorted(computed.NON_INTERACTION_EVENTS)


class Pandas:
    """The recompute in plain vectorised pandas over an events frame, in phases that share what they can:
    the per-profile values once, then the `mall` stages (docs/presets.md), the `wecom` vip rule tag and
    the two bench segments (SEGMENTS), then the recheck times (docs/lifecycle.md, docs/audience.md).
    ``seconds`` times each phase."""

    def __init__(self, frame: pd.DataFrame, now: datetime):
        self.frame, self.now_us = frame, int((now - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * US)
        self.seconds: dict[str, float] = {}

    def _timed(self, name: str, fn: Callable[[], Any]) -> Any:
        result, self.seconds[name] = timed(fn)
        return result

    def values(self) -> None:
        """What the conditions read, per profile: first event, last interaction, orders, windows."""
        frame, now_us = self.frame, self.now_us

        def compute() -> None:
            kind, event = frame["type"], frame["event"]
            # Interaction: page/screen calls, and track calls not lifeloop's own or "$…" bookkeeping.
            own = event.str.startswith("$", na=False) | event.isin(NON_INTERACTION)
            interaction = kind.isin(("page", "screen")) | ((kind == "track") & ~own)
            self.first_seen = frame.groupby("profile", sort=False)["ts"].min()
            profiles = self.first_seen.index
            interactions = frame.loc[interaction]
            self.last = interactions.groupby("profile", sort=False)["ts"].max().reindex(profiles)
            self.recent = interactions.loc[interactions["ts"] > now_us - 30 * DAY_US]
            self.orders = frame.loc[(kind == "track") & (event == "Order Completed")]
            self.followers = set(
                frame.loc[(kind == "track") & (event == "Channel Followed"), "profile"].unique()
            )

        self._timed("values", compute)

    def stages(self) -> pd.Series:
        """The `mall` stage per profile, first match wins."""

        def compute() -> pd.Series:
            days_first = (self.now_us - self.first_seen) // DAY_US
            days_last = (self.now_us - self.last) // DAY_US  # NaN: never interacted
            stage = pd.Series(pd.NA, index=days_first.index, dtype="object")
            stage = stage.mask(days_first >= 0, "new")
            stage = stage.mask(days_first >= 8, "growing")
            stage = stage.mask(days_first >= 31, "mature")
            return stage.mask((days_first >= 91) & (days_last >= 30), "declining")

        return self._timed("stages", compute)

    def audience(self) -> dict[str, set[int]]:
        """Holders of the vip rule tag and members of the two segments."""

        def compute() -> dict[str, set[int]]:
            now_us, orders = self.now_us, self.orders
            # sum("Order Completed", "revenue", within="365d") >= 2000
            # or count(interaction, within="30d") >= 20
            yearly = orders.loc[orders["ts"] > now_us - 365 * DAY_US]
            amounts = yearly["properties"].map(
                lambda text: _number(json.loads(text).get("revenue")) if text else 0.0
            )
            spend = amounts.groupby(yearly["profile"]).sum()
            active = self.recent.groupby("profile").size()
            vip = set(spend.index[spend >= 2000]) | set(active.index[active >= 20])
            # recent_buyers: count("Order Completed", within="30d") >= 1
            recent = set(orders.loc[orders["ts"] > now_us - 30 * DAY_US, "profile"].unique())
            # silent_followers: count("Channel Followed") >= 1 and days_since(last_interaction) >= 30
            last = self.last.dropna()
            silent = set(last.index[(now_us - last) // DAY_US >= 30])
            return {"vip": vip, "recent_buyers": recent, "silent_followers": self.followers & silent}

        return self._timed("audience", compute)

    def rechecks(self, stored: dict[str, pd.DataFrame]) -> dict[str, pd.Series]:
        """When each profile must be looked at again with no new event (µs): for the stages, 0 and 1 day
        after each `days_since` threshold is reached; for the audience, also when the oldest event of a
        window leaves it, and when a stored tag expires."""

        def compute() -> dict[str, pd.Series]:
            now_us, first, last, profiles = self.now_us, self.first_seen, self.last, self.first_seen.index

            def earliest_after(*moments: pd.Series) -> pd.Series:
                table = pd.concat(moments, axis=1)
                return table.where(table > now_us).min(axis=1).dropna()

            def window_exit(events: pd.DataFrame, days: int) -> pd.Series:
                inside = events.loc[events["ts"] > now_us - days * DAY_US]
                return (inside.groupby("profile")["ts"].min() + days * DAY_US).reindex(profiles)

            thresholds = [first + n * DAY_US for k in (91, 31, 8, 0) for n in (k, k + 1)]
            tags = stored["tags"]
            expiring = tags.loc[tags["expires_at"] > now_us].groupby("profile")["expires_at"].min()
            return {
                "stages": earliest_after(*thresholds, last + 30 * DAY_US, last + 31 * DAY_US),
                "audience": earliest_after(
                    window_exit(self.orders, 365),  # vip: revenue within 365 days
                    window_exit(self.recent, 30),  # vip: interactions within 30 days
                    window_exit(self.orders, 30),  # recent_buyers
                    last + 30 * DAY_US,  # silent_followers
                    last + 31 * DAY_US,
                    expiring.reindex(profiles),
                ),
            }

        return self._timed("rechecks", compute)

    def compare(
        self,
        stages: pd.Series,
        rechecks: dict[str, pd.Series],
        holders: dict[str, set[int]],
        stored: dict[str, pd.DataFrame],
    ) -> dict[str, int]:
        """``pandas_differences``, timed."""
        result: dict[str, int] = self._timed(
            "compare", lambda: pandas_differences(stages, rechecks, holders, stored)
        )
        return result


def pandas_differences(
    stages: pd.Series,
    rechecks: dict[str, pd.Series],
    holders: dict[str, set[int]],
    stored: dict[str, pd.DataFrame],
) -> dict[str, int]:
    """How many stages, recheck times, tag holders and members differ from the stored ones."""
    found = stages.dropna()
    kept = stored["stages"].set_index("profile")["stage"]
    both = pd.concat([found.rename("new"), kept.rename("old")], axis=1)
    out = {"stages": int((both["new"] != both["old"]).sum())}
    for name in ("stages", "audience"):
        old = stored[f"{name}_rechecks"].set_index("profile")["recheck_at"]
        both = pd.concat([rechecks[name].rename("new"), old.rename("old")], axis=1)
        out[f"{name}_rechecks"] = int((both["new"] != both["old"]).sum())
    tags, members = stored["tags"], stored["members"]
    vip = set(tags.loc[(tags["tag"] == "vip") & (tags["kind"] == "rule"), "profile"])
    out["vip"] = len(holders["vip"] ^ vip)
    for key in SEGMENTS:
        out[key] = len(holders[key] ^ set(members.loc[members["segment"] == key, "profile"]))
    return out


def stored_state(copy: Path, path: Path, ws: int) -> dict[str, pd.DataFrame]:
    """The stages, recheck times, tags and memberships lifeloop stored, as pandas frames (times in µs, NaN
    for none), read where its recompute reads them: the analytics store's copy of the state (the
    segments' keys from SQLite)."""
    queries = {
        "stages": "SELECT profile_id AS profile, stage FROM state_stages WHERE model = 'mall'",
        "stages_rechecks": "SELECT profile_id AS profile, epoch_us(recheck_at) AS recheck_at "
        "FROM state_stage_rechecks WHERE model = 'mall'",
        "audience_rechecks": "SELECT profile_id AS profile, epoch_us(recheck_at) AS recheck_at "
        "FROM state_audience_rechecks",
        "tags": "SELECT profile_id AS profile, tag, kind, epoch_us(expires_at) AS expires_at FROM state_tags",
        "members": "SELECT profile_id AS profile, segment_id FROM state_members",
    }
    with store(copy) as con:
        frames = {
            name: con.execute(f"{sql} {'AND' if 'WHERE' in sql else 'WHERE'} workspace_id = ?", [ws]).df()
            for name, sql in queries.items()
        }
    with sqlite3.connect(path) as raw:
        keys = dict(raw.execute("SELECT id, key FROM segments WHERE workspace_id = ?", [ws]).fetchall())
    members = frames["members"]
    frames["members"] = pd.DataFrame(
        {"profile": members["profile"], "segment": members["segment_id"].map(keys)}
    )
    for frame in frames.values():
        for column in ("recheck_at", "expires_at"):
            if column in frame:
                frame[column] = frame[column].astype("float64")  # NULL → NaN
    return frames


def _number(value: Any) -> float:
    """A top-level number that sum() adds up (booleans are not numbers)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def read_events_from_store(path: Path) -> pd.DataFrame:
    with sqlite3.connect(path) as raw:
        frame = pd.read_sql_query(
            "SELECT profile_id AS profile, type, event, timestamp, properties FROM events "
            "WHERE profile_id IS NOT NULL",
            raw,
        )
    frame["ts"] = pd.to_datetime(frame.pop("timestamp")).dt.as_unit("us").astype("int64")
    return frame


def read_events_from_copy(copy: Path, ws: int, loaded: int) -> pd.DataFrame:
    """The ``loaded`` events the bench generated (ids 1…loaded), from the analytics copy; the properties of
    orders only, the only ones pandas reads (so it is not charged for reading the others)."""
    with store(copy) as con:
        frame = con.execute(
            "SELECT profile_id AS profile, type, CASE WHEN type = 'track' THEN event END AS event, "
            "epoch_us(ts) AS ts, CASE WHEN event = 'Order Completed' THEN properties END AS properties "
            "FROM events WHERE workspace_id = ? AND id <= ?",
            [ws, loaded],
        ).df()
    return frame


def lifeloop_audience(engine: Any, ws: int) -> dict[str, set[int]]:
    """The holders of the vip tag and the members of the two segments, as the store holds them."""
    from lifeloop.audience.models import profile_tags, segment_members, segments

    t, m, g = profile_tags.c, segment_members.c, segments.c
    with connect(engine) as conn:
        found = {
            "vip": set(
                conn.execute(select(t.profile_id).where(t.workspace_id == ws, t.tag == "vip")).scalars()
            )
        }
        for key in SEGMENTS:
            members = select(m.profile_id).join_from(segment_members, segments, g.id == m.segment_id)
            found[key] = set(conn.execute(members.where(m.workspace_id == ws, g.key == key)).scalars())
    return found


def activity_costs(copy: Path) -> dict[str, float]:
    """What keeping ``profile_activity`` costs the sync: building it from every copied event, and folding
    one 10,000-event chunk into it (the sync's default chunk; its profiles already have rows), both
    rolled back."""
    with store(copy) as con:
        con.begin()
        _, rebuild_s = timed(
            lambda: (con.execute("DELETE FROM profile_activity"), fold_activity(con, "events"))
        )
        con.rollback()
        con.execute("CREATE TEMP TABLE last_chunk AS SELECT * FROM events ORDER BY id DESC LIMIT 10000")
        con.begin()
        _, chunk_s = timed(lambda: fold_activity(con, "last_chunk"))
        con.rollback()
    return {"activity_build_s": rebuild_s, "activity_fold_10k_s": chunk_s}


# ---------------------------------------------------------------------------------------------- runs
def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


SEGMENTS = {
    "recent_buyers": 'count("Order Completed", within="30d") >= 1',
    "silent_followers": 'count("Channel Followed") >= 1 and days_since(last_interaction) >= 30',
}


def install_audience(engine: Any, ws: int) -> list[str]:
    """The seed presets' event tags (line) and VIP rule tag (wecom), and two segments."""
    from lifeloop.audience import definitions

    with engine.begin() as conn:
        for key in definitions.PRESET_KEYS:
            definitions.install_preset(conn, ws, key)
        for key, condition in SEGMENTS.items():
            definitions.create_segment(conn, ws, key, key.replace("_", " "), condition)
    return [*definitions.PRESET_KEYS, *SEGMENTS]


def stream(engine: Any, ws: int, users: int, count: int, seed: int = 11) -> dict[str, float]:
    """Ingest single events for random existing users and time resolving each one on its own."""
    rng = np.random.default_rng(seed)
    names = ["Menu Clicked", "Product Viewed", "Order Completed", "Message Received"]
    latencies = []
    for n in range(count):
        at = datetime.now(UTC)
        message = Message(
            type="track",
            message_id=f"stream-{n}",
            timestamp=at,
            received_at=at,
            user_id=f"u{int(rng.integers(1, users + 1))}",
            event=names[n % len(names)],
            properties={"revenue": 100} if n % len(names) == 2 else {},
        )
        transaction(engine, lambda conn, m=message: event_store.append_events(conn, ws, None, [m]))
        started = time.perf_counter()
        placed = transaction(engine, lambda conn: resolve_batch(conn, ws, batch_size=1))
        latencies.append(time.perf_counter() - started)
        assert placed == 1
    ms = np.array(latencies) * 1000
    return {
        "events": count,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def recompute_once(engine: Any, ws: int, name: str, **options: Any) -> dict[str, Any]:
    """``lifeloop recompute`` (stages, then tags and segments) at NOW, timed."""
    done, seconds = timed(lambda: recompute_workspace(engine, ws, now=NOW, **options))
    result = {
        "seconds": seconds,
        "phases_s": done.seconds,
        "stage_changes": len(done.stage_changes),
        "audience_changes": len(done.audience_changes),
    }
    print(f"{name}: {seconds:.2f}s", {k: v for k, v in result.items() if k != "seconds"}, flush=True)
    return result


def steady_recomputes(path: Path, ws: int, runs: int, engine_name: str) -> list[dict[str, Any]]:
    """``runs`` recomputes with nothing to change (stages, rule tags and segments re-evaluated for every
    profile, on the computed properties and event tags ingest maintains; nothing written)."""
    engine = create_store_engine(Settings(database_url=f"sqlite:///{path}", resolve_in_server=False))
    copy = path.with_suffix(".duckdb") if engine_name == "columnar" else None
    name = f"recompute ({engine_name}, no change)"
    try:
        return [recompute_once(engine, ws, name, from_log=False, analytics_path=copy) for _ in range(runs)]
    finally:
        engine.dispose()


def in_own_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a fresh Python process."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--stream", type=int, default=2000, help="single-event batches for the p99")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    parser.add_argument("--keep", type=Path, help="keep the store in this file (default: a temp dir)")
    parser.add_argument("--skip-store-read", action="store_true", help="skip pandas reading from the store")
    parser.add_argument("--sql", action="store_true", help="also time the SQL engine's re-evaluation")
    parser.add_argument("--repeat", type=int, default=3, help="runs of pandas and of lifeloop (best counts)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse the --keep store of an earlier run (no load, no first recompute)",
    )
    args = parser.parse_args()

    out: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "duckdb": duckdb.__version__,
        },
        "preset": "mall",
        "audience": ["line event tags", "wecom vip rule tag", *SEGMENTS],
        "now": NOW.isoformat(),
    }
    tmp = tempfile.TemporaryDirectory(prefix="lifeloop-bench-")
    path = args.keep or Path(tmp.name) / "lifeloop.db"
    copy = path.with_suffix(".duckdb")
    frame, gen_s = timed(lambda: generate(args.users, args.events))
    if args.reuse:  # a store kept by an earlier run with the same --users/--events: its first recompute done
        settings = Settings(database_url=f"sqlite:///{path}", resolve_in_server=False)
        engine = create_store_engine(settings)
        with connect(engine) as conn:
            ws = int(conn.execute(select(workspaces.c.id).where(workspaces.c.slug == "bench")).scalar_one())
        out["data"] = {"profiles": args.users, "events": len(frame), "reused_store": True}
    else:
        copy.unlink(missing_ok=True)
        (engine, ws), load_s = timed(lambda: load(path, frame, args.users))
        out["data"] = {"profiles": args.users, "events": len(frame), "generate_s": gen_s, "load_s": load_s}
        print(
            f"generated {len(frame):,} events, {args.users:,} profiles ({gen_s:.1f}s); loaded: {load_s:.1f}s"
        )
        report, copy_s = timed(lambda: sync(engine, copy, workspace_id=ws, chunk_size=100_000))
        out["analytics_copy"] = {"events": report.events, "seconds": copy_s, **activity_costs(copy)}
        print(
            f"analytics copy of {report.events:,} events (the worker keeps it current as events arrive): "
            f"{copy_s:.1f}s",
            {k: round(v, 3) for k, v in out["analytics_copy"].items() if k.startswith("activity")},
        )

    # pandas first, on the same events the store holds (the recompute adds lifeloop's own events).
    def pandas_run(events: pd.DataFrame) -> tuple[Pandas, pd.Series, dict[str, set[int]]]:
        run = Pandas(events, NOW)
        run.values()
        return run, run.stages(), run.audience()

    first_pandas, expected, expected_audience = pandas_run(frame)
    expected_counts = {k: int(v) for k, v in expected.value_counts().items()}
    out["pandas"] = {"first_in_memory_s": sum(first_pandas.seconds.values())}
    if not args.skip_store_read and not args.reuse:
        # pandas reading the events from the operational store (SQLite), then computing on what it read.
        from_store, read_s = timed(lambda: read_events_from_store(path))
        again, stages_again, audience_again = pandas_run(from_store)
        assert {k: int(v) for k, v in stages_again.value_counts().items()} == expected_counts
        assert audience_again == expected_audience
        out["pandas"] |= {
            "read_from_sqlite_s": read_s,
            "computed_on_sqlite_read_s": sum(again.seconds.values()),
        }
        del from_store, again, stages_again, audience_again
    print("pandas:", {k: round(v, 2) for k, v in out["pandas"].items()})

    if not args.reuse:
        with engine.begin() as conn:
            lifecycle.install_preset(conn, ws, "mall")
        out["audience_definitions"] = install_audience(engine, ws)
        # First time: every profile enters a stage; event tags are built from the log, every tag and
        # membership is written and announced.
        out["columnar_first"] = recompute_once(
            engine,
            ws,
            "first recompute (columnar, event tags from the log)",
            from_log=True,
            analytics_path=copy,
        )
    with connect(engine) as conn:
        counts = {k: v for k, v in lifecycle.stage_distribution(conn, ws).items() if v}
    assert counts == expected_counts, (counts, expected_counts)
    assert lifeloop_audience(engine, ws) == expected_audience
    out["stages"] = counts
    out["audience_sizes"] = {k: len(v) for k, v in expected_audience.items()}

    # The first recompute's writes (state, events) reach the analytics store, as the worker copies them.
    _, out["copy_of_first_writes_s"] = timed(lambda: sync(engine, copy, workspace_id=ws, chunk_size=100_000))

    # pandas doing all the recompute does, ``--repeat`` times: the values, stages and memberships, then
    # the recheck times and the comparison of everything with the stored state. lifeloop stored the same,
    # so nothing differs. First with the events and the state in memory (reading them not timed), then
    # starting, as lifeloop does, from the store: the events read from the analytics copy lifeloop reads
    # (only those generated: not the stage, tag and segment events lifeloop has written since, which its
    # recompute reads too), the stored state from its copy there.
    def pandas_all(events: pd.DataFrame, stored: dict[str, pd.DataFrame]) -> dict[str, float]:
        pandas, stages_found, holders = pandas_run(events)
        rechecks = pandas.rechecks(stored)
        differences = pandas.compare(stages_found, rechecks, holders, stored)
        assert not any(differences.values()), differences
        return {f"{k}_s": v for k, v in pandas.seconds.items()}

    stored = stored_state(copy, path, ws)
    in_memory = [pandas_all(frame, stored) for _ in range(args.repeat)]
    best = min(in_memory, key=lambda t: sum(t.values()))
    membership = best["values_s"] + best["stages_s"] + best["audience_s"]
    out["pandas"] |= {
        "runs": in_memory,
        **best,
        "membership_only_s": membership,
        "equivalent_s": sum(best.values()),
    }
    print("pandas, all of it, in memory (best run):", {k: round(v, 2) for k, v in best.items()})
    from_store = []
    for _ in range(args.repeat):
        events, read_events_s = timed(lambda: read_events_from_copy(copy, ws, len(frame)))
        assert len(events) == len(frame)
        state, read_state_s = timed(lambda: stored_state(copy, path, ws))
        seconds = {"read_events_s": read_events_s, "read_state_s": read_state_s, **pandas_all(events, state)}
        from_store.append(seconds | {"total_s": sum(seconds.values())})
        del events, state
    out["pandas_from_the_store"] = min(from_store, key=lambda t: t["total_s"]) | {
        "runs_s": [t["total_s"] for t in from_store]
    }
    print("pandas, all of it, from the store (best run):", out["pandas_from_the_store"])
    # Steady state: the headline. Stages, rule tags and segments re-evaluated for every profile, on the
    # computed properties and event tags that ingest maintains; nothing to change, nothing written.
    # Timed in a process of its own, as `lifeloop recompute` runs: not next to this one's pandas frames.
    engine.dispose()
    runs = in_own_process(steady_recomputes, path, ws, args.repeat, "columnar")
    assert all(r["stage_changes"] == r["audience_changes"] == 0 for r in runs)
    out["columnar"] = min(runs, key=lambda r: r["seconds"]) | {"runs_s": [r["seconds"] for r in runs]}
    if args.sql:
        out["sql"] = in_own_process(steady_recomputes, path, ws, 1, "sql")[0]
    total = out["columnar"]["seconds"]
    out["speedup_vs_pandas_from_the_store"] = out["pandas_from_the_store"]["total_s"] / total
    out["speedup_vs_pandas_in_memory"] = out["pandas"]["equivalent_s"] / total
    out["speedup_vs_pandas_membership_only_in_memory"] = membership / total
    if "read_from_sqlite_s" in out["pandas"]:
        with_sqlite = out["pandas"]["read_from_sqlite_s"] + out["pandas"]["equivalent_s"]
        out["speedup_vs_pandas_reading_the_events_from_sqlite"] = with_sqlite / total
    print({k: round(v, 2) for k, v in out.items() if k.startswith("speedup_")})
    if args.stream:
        out["realtime"] = stream(engine, ws, args.users, args.stream)
        print("real-time resolve per single event:", {k: round(v, 2) for k, v in out["realtime"].items()})
    engine.dispose()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
