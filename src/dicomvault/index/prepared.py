"""Hot-path statements executed on the DB-API cursor, compiled once per dialect.

Every ingest runs about ten statements and every audited request three or
four.  Through ``Connection.execute`` each costs about 50 µs of SQLAlchemy
machinery (execution context, parameter processing, result proxy, events)
around 5–10 µs of driver work.  ``Prepared`` compiles a Core statement once
per dialect and parameter shape, converts the values with the statement's
own type processors (so a ``UtcDateTime`` is stored exactly as through the
ORM), and runs it on the connection's DB-API cursor inside the transaction
the ``Connection`` already began.  ``before_cursor_execute`` listeners do not
see these statements.  A statement needing SQLAlchemy at execution time
(Python-side column defaults, ``RETURNING``) runs through
``Connection.execute`` instead.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Delete, Insert, LargeBinary, Select, TextClause, Update
from sqlalchemy.sql.compiler import Compiled
from sqlalchemy.sql.selectable import TextualSelect

#: Core statements, or plain SQL (``text()``; ``text().columns()`` for a SELECT whose
#: values need their types' result processing).
Statement = Select[Any] | Insert | Update | Delete | TextClause | TextualSelect

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Plan:
    sql: str
    #: Parameter names in placeholder order (positional paramstyles), else None.
    order: tuple[str, ...] | None
    binds: dict[str, Processor]
    #: Values fixed in the statement itself (a LIMIT, a literal), by parameter name.
    fixed: dict[str, Any]
    results: tuple[Processor | None, ...]
    #: Row type of a SELECT: fields named by the selected columns' keys.
    row: Callable[..., tuple[Any, ...]]
    #: The compiled form needs SQLAlchemy's execution (defaults, RETURNING).
    via_sqlalchemy: bool


class Prepared:
    """A Core ``statement`` run on the driver cursor of a SQLAlchemy ``Connection``."""

    def __init__(self, statement: Statement) -> None:
        self.statement = statement
        self._plans: dict[tuple[str, frozenset[str]], _Plan] = {}

    def _plan(self, conn: Connection, keys: frozenset[str]) -> _Plan:
        dialect = conn.dialect
        plan = self._plans.get((dialect.name, keys))
        if plan is not None:
            return plan
        compiled: Compiled = self.statement.compile(dialect=dialect, column_keys=sorted(keys))
        binds: dict[str, Processor] = {}
        fixed: dict[str, Any] = {}
        for name, bind in getattr(compiled, "binds", {}).items():
            impl = bind.type.dialect_impl(dialect)
            # sqlite3 and psycopg bind ``bytes`` as BLOB / bytea themselves; the
            # type's processor only wraps each value in the driver's Binary().
            processor = None if isinstance(impl, LargeBinary) else impl.bind_processor(dialect)
            if processor is not None:
                binds[name] = processor
            if not bind.required and name not in keys:
                fixed[name] = bind.effective_value
        columns = getattr(self.statement, "selected_columns", ())
        results = tuple(col.type.dialect_impl(dialect).result_processor(dialect, None) for col in columns)
        row = namedtuple("Row", [col.key for col in columns], rename=True)  # type: ignore[misc]  # noqa: PYI024
        plan = _Plan(
            sql=compiled.string,
            order=tuple(getattr(compiled, "positiontup", None) or ()) if dialect.positional else None,
            binds=binds,
            fixed=fixed,
            results=results,
            row=row,
            via_sqlalchemy=bool(getattr(compiled, "insert_prefetch", None)
                                or getattr(compiled, "update_prefetch", None)
                                or getattr(compiled, "effective_returning", None)),
        )
        self._plans[(dialect.name, keys)] = plan
        return plan

    def _values(self, plan: _Plan, params: Mapping[str, Any]) -> Any:
        if plan.fixed:
            params = {**plan.fixed, **params}
        if plan.binds:
            params = {k: (plan.binds[k](v) if k in plan.binds else v) for k, v in params.items()}
        if plan.order is not None:
            return tuple(params[name] for name in plan.order)
        return params

    def execute(self, conn: Connection, params: Mapping[str, Any] | None = None) -> None:
        """Run the statement once (a write: no rows are read back)."""
        params = params or {}
        plan = self._plan(conn, frozenset(params))
        if plan.via_sqlalchemy:
            conn.execute(self.statement, dict(params))
            return
        cursor = conn.connection.cursor()
        try:
            cursor.execute(plan.sql, self._values(plan, params))
        finally:
            cursor.close()

    def executemany(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement for each of ``rows`` (all with the same keys)."""
        if not rows:
            return
        plan = self._plan(conn, frozenset(rows[0]))
        if plan.via_sqlalchemy:
            conn.execute(self.statement, [dict(r) for r in rows])
            return
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(plan.sql, [self._values(plan, r) for r in rows])
        finally:
            cursor.close()

    def first(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Any:
        """The first row of a SELECT as a named tuple (values converted by the columns'
        types, fields named by the columns' keys), or None."""
        params = params or {}
        plan = self._plan(conn, frozenset(params))
        if plan.via_sqlalchemy:
            found = conn.execute(self.statement, dict(params)).first()
            return None if found is None else plan.row(*found)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(plan.sql, self._values(plan, params))
            raw = cursor.fetchone()
        finally:
            cursor.close()
        if raw is None:
            return None
        values = (v if p is None or v is None else p(v) for p, v in zip(plan.results, raw, strict=True))
        return plan.row(*values)
