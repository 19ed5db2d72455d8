"""Typed reads of JSON documents (traits, event properties) in SQL, the same on SQLite and PostgreSQL.

A value is read only when it has the kind a comparison needs (``json_type`` on SQLite,
``jsonb_typeof`` on PostgreSQL, inside ``CASE`` so nothing is cast before it is checked); otherwise
it reads as NULL, which ``truth`` turns into false — the evaluator's "missing" rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, ColumnElement, Float, String, case, cast, exists, false, func, literal, select
from sqlalchemy.dialects.postgresql import JSONB

_SQLITE_KINDS = {"number": ("integer", "real"), "string": ("text",), "bool": ("true", "false")}
_PG_KINDS = {"number": ("number",), "string": ("string",), "bool": ("boolean",)}


def const(value: bool) -> ColumnElement[Any]:
    # A bound constant: SQLAlchemy folds and_(…, false()) into a bare "false", dropping the workspace filter.
    return literal(value, Boolean())


def truth(expr: ColumnElement[Any]) -> ColumnElement[bool]:
    return func.coalesce(expr, false(), type_=Boolean)


@dataclass(frozen=True)
class Json:
    """A trait or property: a JSON document column and a path in it."""

    document: Any
    path: tuple[str, ...]


class JsonSql:
    def __init__(self, workspace_id: int, *, postgresql: bool):
        self.ws, self.pg = workspace_id, postgresql

    def kind(self, ref: Json) -> ColumnElement[Any]:
        if self.pg:
            return func.jsonb_typeof(self._pg_at(ref))
        return func.json_type(ref.document, self._sqlite_path(ref.path))

    def _sqlite_path(self, path: tuple[str, ...]) -> ColumnElement[Any]:
        return literal("$" + "".join(f'."{key}"' for key in path), String())

    def _pg_at(self, ref: Json) -> ColumnElement[Any]:
        # Chained "->" with text keys: unlike "#>", it never indexes into arrays (like SQLite's $."k").
        expr = ref.document
        for key in ref.path:
            expr = expr.op("->", return_type=JSONB)(literal(key, String()))
        return expr

    def json_text(self, ref: Json) -> ColumnElement[Any]:
        """The value as JSON text (``"a"``, ``1.5``, ``[…]``), NULL when missing: for reading in Python."""
        if self.pg:
            return cast(self._pg_at(ref), String)
        return ref.document.op("->", return_type=String)(self._sqlite_path(ref.path))

    def as_kind(self, ref: Json, kind: str) -> ColumnElement[Any]:
        """The value as ``kind`` (number, string, bool) or NULL when it is missing or of another kind."""
        kinds = (_PG_KINDS if self.pg else _SQLITE_KINDS)[kind]
        if kind == "bool":
            if self.pg:
                return case((self.kind(ref) == "boolean", cast(self._pg_at(ref), String) == "true"))
            return case((self.kind(ref).in_(kinds), self.kind(ref) == "true"))
        if self.pg:
            parent = self._pg_at(Json(ref.document, ref.path[:-1]))
            text = parent.op("->>", return_type=String)(literal(ref.path[-1], String()))
            extracted: Any = cast(text, Float) if kind == "number" else text.collate("C")
        else:
            extracted = func.json_extract(ref.document, self._sqlite_path(ref.path))
        return case((self.kind(ref).in_(kinds), extracted))

    # --- conditions -------------------------------------------------------------------------------

    def contains(self, ref: Json, item: Any) -> ColumnElement[Any]:
        kind = "bool" if isinstance(item, bool) else "string" if isinstance(item, str) else "number"
        as_text = self.as_kind(ref, "string")
        if self.pg:
            in_string = func.strpos(as_text, item) > 0 if kind == "string" else const(False)
            item_type = Boolean() if kind == "bool" else String() if kind == "string" else Float()
            element = func.jsonb_build_array(literal(item, item_type))
            in_array: ColumnElement[Any] = self._pg_at(ref).op("@>", return_type=Boolean)(element)
        else:
            in_string = func.instr(as_text, item) > 0 if kind == "string" else const(False)
            each = func.json_each(ref.document, self._sqlite_path(ref.path)).table_valued("value", "type")
            if kind == "bool":
                test = each.c.type == ("true" if item else "false")
            else:
                test = each.c.type.in_(_SQLITE_KINDS[kind]) & (each.c.value == item)
            owner = ref.document.table.c.workspace_id == self.ws  # correlated; for the scoping guard
            in_array = exists(select(literal(1)).select_from(each).where(test, owner))
        return truth(
            case(
                (self.kind(ref) == ("string" if self.pg else "text"), in_string),
                (self.kind(ref) == "array", in_array),
                else_=const(False),
            )
        )
