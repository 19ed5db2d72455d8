"""A guard proving that no statement reads or writes across workspaces.

Every workspace-scoped table has a ``workspace_id`` column. With the guard installed (tests always
install it), a SELECT, UPDATE or DELETE that touches such a table without a condition on that
table's ``workspace_id`` raises ``CrossWorkspaceQuery``. The few statements that legitimately span
workspaces (authenticating a key, a worker's sweep) say so with
``.execution_options(cross_workspace=True)``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Delete, Engine, Select, Table, TextClause, Update, event
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.sql.selectable import Alias, FromClause, Join


class CrossWorkspaceQuery(AssertionError):
    pass


def _is_scoped(table: Any) -> bool:
    return isinstance(table, Table) and "workspace_id" in table.c


def _base_table(from_: Any) -> Any:
    return from_.element if isinstance(from_, Alias) else from_


def _tables_in(from_: FromClause) -> list[Any]:
    if isinstance(from_, Join):
        return _tables_in(from_.left) + _tables_in(from_.right)
    return [from_]


def _covered(*clauses: Any) -> set[Any]:
    """Tables (or aliases) whose workspace_id column appears in the given clauses."""
    covered: set[Any] = set()
    for clause in clauses:
        if clause is None:
            continue
        for element in visitors.iterate(clause):
            if (
                isinstance(element, ColumnClause)
                and element.name == "workspace_id"
                and element.table is not None
            ):
                covered.add(element.table)
                covered.add(_base_table(element.table))
    return covered


def _join_conditions(from_: Any) -> list[Any]:
    if isinstance(from_, Join):
        return [from_.onclause, *_join_conditions(from_.left), *_join_conditions(from_.right)]
    return []


def check_statement(statement: Any) -> None:
    """Raise CrossWorkspaceQuery when a statement touches a scoped table without filtering by workspace."""
    if isinstance(statement, TextClause):
        return  # raw SQL is reviewed by hand; it is used only for DDL and benchmarks
    for element in visitors.iterate(statement):
        if isinstance(element, Select):
            froms = element.get_final_froms()
            tables = [t for f in froms for t in _tables_in(f)]
            joins = [c for f in froms for c in _join_conditions(f)]
            covered = _covered(element.whereclause, *joins)
        elif isinstance(element, Update | Delete):
            tables = [element.table]
            covered = _covered(element.whereclause)
        else:
            continue
        for table in tables:
            if _is_scoped(_base_table(table)) and table not in covered and _base_table(table) not in covered:
                name = getattr(_base_table(table), "name", table)
                raise CrossWorkspaceQuery(f"statement on {name} does not filter by workspace_id: {statement}")


def install_scoping_guard(engine: Engine) -> None:
    @event.listens_for(engine, "before_execute")
    def _guard(conn: Any, clauseelement: Any, multiparams: Any, params: Any, execution_options: Any) -> None:
        options = {**getattr(clauseelement, "_execution_options", {}), **(execution_options or {})}
        if not options.get("cross_workspace"):
            check_statement(clauseelement)
