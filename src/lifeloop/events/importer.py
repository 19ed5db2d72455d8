"""Bulk import of profiles and events from CSV or Parquet, through the same validation and identity
resolution as the HTTP API, in chunks, reporting rejected rows with their reasons.

Columns
- events: ``event`` (required for track), ``type`` (default track), ``user_id``/``userId``,
  ``anonymous_id``/``anonymousId``, ``message_id``/``messageId``, ``timestamp``, ``name``,
  ``properties``/``context``/``traits`` as JSON text, and dotted columns ``properties.x``,
  ``context.x``; any other column becomes a property.
- profiles: ``user_id`` (or ``anonymous_id``), any other column becomes a trait; ``email``,
  ``phone``, ``line_user_id``, ``wecom_external_userid``, ``wechat_openid`` and ``wechat_unionid``
  also link those channel identities. A ``type`` column is an ordinary trait here.
A row without a message id gets one derived from the file's content digest, the row's number and
the row's content (``file_digest``, ``row_to_message``): importing the same file again — or a copy of
it under another name — stores each row once, and two identical rows of one file (the same customer
buying the same amount twice on one day) are both stored. A file whose content changed (rows added
or edited) is another file: give its rows a ``message_id`` column to import it over an earlier one.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sqlalchemy import Engine

from lifeloop.errors import InvalidInput, LifeloopError
from lifeloop.events.messages import Message, check_event_size, parse_message
from lifeloop.events.service import ingest
from lifeloop.store.schema import utcnow
from lifeloop.workspaces.models import SourceKey

Kind = Literal["events", "profiles"]
_ALIASES = {
    "userId": "user_id",
    "anonymousId": "anonymous_id",
    "messageId": "message_id",
    "previousId": "previous_id",
    "groupId": "group_id",
}
_TOP_LEVEL = {
    "type": "type",
    "event": "event",
    "name": "name",
    "category": "category",
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "message_id": "messageId",
    "timestamp": "timestamp",
    "previous_id": "previousId",
    "group_id": "groupId",
}
_JSON_COLUMNS = ("properties", "context", "traits", "integrations")
_EVENT_ONLY = ("type", "name", "category", "event")  # in a profiles file these are ordinary traits


@dataclass
class ImportReport:
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def reasons(self, top: int = 5) -> list[tuple[str, int]]:
        return Counter(reason for _, reason in self.rejected).most_common(top)


def count_rows(path: Path) -> int | None:
    """Rows in the file, for a progress bar (cheap for Parquet, one pass over lines for CSV)."""
    if path.suffix.lower() == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    with path.open("rb") as handle:
        return max(sum(1 for _ in handle) - 1, 0)


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes: its identity for derived message ids, whatever its name or place."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_batches(path: Path, batch_rows: int = 5000) -> Iterator[list[dict[str, Any]]]:
    """Rows of a CSV or Parquet file as dicts, a batch at a time (the file is never loaded whole)."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise InvalidInput(f"{path} does not exist", field="path")
    if suffix == ".parquet":
        reader: Iterator[pa.RecordBatch] = pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
    elif suffix in (".csv", ".txt"):
        # Every column as text: ids like 007 or phone numbers must not become numbers.
        with path.open(newline="", encoding="utf-8") as handle:
            names = next(csv.reader(handle), [])
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 20),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}),
        )
    else:
        raise InvalidInput(f"{path.name}: use a .csv or .parquet file", field="path")
    for batch in reader:
        yield batch.to_pylist()


def _clean(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def row_to_message(row: dict[str, Any], kind: Kind, *, file: str = "", row_number: int = 0) -> dict[str, Any]:
    """A Segment message from one file row: row ``row_number`` (from 1) of the file whose digest is
    ``file``; without a message id column its id is derived from both and the row's content."""
    message: dict[str, Any] = {"type": "identify" if kind == "profiles" else "track"}
    bag_name = "traits" if kind == "profiles" else "properties"
    bags: dict[str, dict[str, Any]] = {}
    for column, raw in row.items():
        value = _clean(raw)
        if value is None:
            continue
        column = _ALIASES.get(column, column)
        if column in _JSON_COLUMNS:
            parsed = orjson.loads(value) if isinstance(value, str) else value
            if not isinstance(parsed, dict):
                raise InvalidInput(f"column {column} must hold a JSON object", field=column)
            bags.setdefault(column, {}).update(parsed)
        elif "." in column and column.split(".", 1)[0] in _JSON_COLUMNS:
            bag, key = column.split(".", 1)
            bags.setdefault(bag, {})[key] = value
        elif column in _TOP_LEVEL and not (kind == "profiles" and column in _EVENT_ONLY):
            message[_TOP_LEVEL[column]] = value
        else:
            bags.setdefault(bag_name, {})[column] = value
    message.update(bags)
    if "messageId" not in message:
        content = orjson.dumps(message, option=orjson.OPT_SORT_KEYS)
        seed = f"{file}:{row_number}:".encode() + content
        message["messageId"] = "import-" + hashlib.sha1(seed).hexdigest()
    return message


def import_file(
    engine: Engine,
    key: SourceKey,
    path: Path,
    kind: Kind,
    *,
    chunk_size: int = 500,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import ``path`` into the key's workspace. Valid rows are stored even when others are rejected."""
    report = ImportReport()
    pending: list[Message] = []
    digest = ""

    def flush() -> None:
        if pending:
            result = ingest(engine, key, pending)
            report.accepted += result.accepted
            report.duplicates += result.duplicates
            pending.clear()

    for batch in read_batches(path):  # which refuses a missing file or an unknown format first
        digest = digest or file_digest(path)
        for row in batch:
            report.rows += 1
            line = (
                report.rows + 1 if path.suffix.lower() != ".parquet" else report.rows
            )  # CSV: header is line 1
            try:
                raw = row_to_message(row, kind, file=digest, row_number=report.rows)
                check_event_size(raw, "row")
                pending.append(parse_message(raw, received_at=utcnow()))
            except (LifeloopError, orjson.JSONDecodeError) as error:
                report.rejected.append((line, getattr(error, "message", None) or str(error)))
            if len(pending) >= chunk_size:
                flush()
        if on_progress is not None:
            on_progress(len(batch))
    flush()
    return report
