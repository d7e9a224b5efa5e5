"""SQL Server statements for the loader: a ``#temp`` staging table and one set-based MERGE.

The loader (:mod:`casemis.loading`) decides in Python, for every database alike, which rows
are new and which changed. Only the *write* differs on SQL Server: instead of one
round trip per row (pymssql has no fast executemany), the rows go into a session-local
staging table in multi-row ``INSERT ... VALUES`` batches, and one ``MERGE`` applies them all:

    MERGE INTO [CSE] WITH (HOLDLOCK) AS [target]
    USING [#casemis_stage_CSE] AS [source] ON [target].[ID] = [source].[ID]
    WHEN MATCHED AND EXISTS (SELECT [source].[SE] ... EXCEPT SELECT [target].[SE] ...)
        THEN UPDATE SET [target].[SE] = [source].[SE], ...
    WHEN NOT MATCHED BY TARGET THEN INSERT (...) VALUES (...)
    OUTPUT $action INTO [#casemis_merge_actions] ([ACTION]);

Why each part:

- ``HOLDLOCK`` (serializable on the target for this statement) closes MERGE's known race
  between its "matched?" check and the insert. No ``ROWLOCK`` hint: one MERGE touches
  thousands of rows, and forcing row locks only makes SQL Server take (and then escalate)
  more locks; the engine picks the granularity.
- ``EXISTS (SELECT source... EXCEPT SELECT target...)`` is true when any column differs,
  NULLs included (set operators treat two NULLs as equal, ``<>`` does not). Text columns are
  compared ``COLLATE Latin1_General_100_BIN2`` so a change of case counts as a change, as it
  does in the loader's Python comparison (Aeries databases use case-insensitive collations).
- ``OUTPUT $action INTO`` a temp table, not a bare ``OUTPUT``: SQL Server refuses a bare
  OUTPUT clause on a table with enabled triggers, and Aeries tables may have some.
- Staging text columns are ``NVARCHAR ... COLLATE DATABASE_DEFAULT``: ``tempdb`` may have a
  different default collation from the Aeries database, and comparing columns of two
  collations fails ("cannot resolve the collation conflict").
- Batches: a request takes at most 2,100 parameters and a ``VALUES`` list at most 1,000
  rows, so each staging INSERT carries ``min(1000, 2000 // columns)`` rows. (pymssql quotes
  parameters into the statement on the client, so the 2,100 limit binds only with the
  optional pyodbc scheme; the batch size keeps both drivers within it.)

Every statement is SQLAlchemy Core compiled by the connection's dialect: identifiers are
quoted by the dialect (``[...]``), values are always bound parameters. The MERGE construct
compiles for SQL Server only; other databases use the generic path in ``casemis.loading``.

Not run against a live SQL Server here (none is available): tests compile every statement
with SQLAlchemy's mssql and pymssql dialects and check the text (``tests/test_mssql_dialect.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mssql as mssql_types
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

log = logging.getLogger(__name__)

MAX_PARAMETERS = 2100  # SQL Server's limit of parameters in one request
PARAMETER_BUDGET = 2000  # what a batch may use, leaving headroom under the limit
MAX_VALUES_ROWS = 1000  # SQL Server's limit of rows in one INSERT ... VALUES list
BINARY_COLLATION = "Latin1_General_100_BIN2"
STAGE_PREFIX = "#casemis_stage_"
ACTIONS_TABLE = "#casemis_merge_actions"


def rows_per_batch(n_columns: int, budget: int = PARAMETER_BUDGET) -> int:
    """Rows per multi-row INSERT so that ``rows * n_columns`` stays within ``budget``.

    ``floor(budget / n_columns)``, capped at SQL Server's 1,000 rows per ``VALUES`` list.
    """
    if n_columns < 1:
        raise ValueError("a staging INSERT needs at least one column")
    if n_columns > budget:
        raise ValueError(f"{n_columns} columns do not fit in one statement of {budget} parameters")
    return min(MAX_VALUES_ROWS, budget // n_columns)


def staging_type(target_type: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """The staging column type for a target column type, spelled explicitly for SQL Server.

    Explicit types keep the DDL independent of the server version SQLAlchemy detects
    (a generic ``Date`` renders ``DATETIME`` for servers before 2008); text becomes
    ``NVARCHAR`` in the database's collation.
    """
    if isinstance(target_type, sa.Boolean):
        return mssql_types.BIT()
    if isinstance(target_type, sa.DateTime):
        return mssql_types.DATETIMEOFFSET() if target_type.timezone else mssql_types.DATETIME2()
    if isinstance(target_type, sa.Date):
        return mssql_types.DATE()
    if isinstance(target_type, sa.SmallInteger):
        return mssql_types.SMALLINT()
    if isinstance(target_type, sa.BigInteger):
        return mssql_types.BIGINT()
    if isinstance(target_type, sa.Integer):
        return mssql_types.INTEGER()
    if isinstance(target_type, sa.String):
        return mssql_types.NVARCHAR(target_type.length, collation="DATABASE_DEFAULT")
    return target_type


def staging_table(target: sa.Table, columns: Sequence[str], key: Sequence[str]) -> sa.Table:
    """A session-local ``#temp`` table shaped like ``columns`` of ``target``, keyed on ``key``.

    The primary key makes SQL Server reject a key staged twice (MERGE would fail on it
    anyway) and gives the MERGE an index to join on.
    """
    missing = [c for c in [*key, *columns] if c not in target.c]
    if missing:
        raise KeyError(f"{target.name} has no column(s) {', '.join(missing)}")
    return sa.Table(
        f"{STAGE_PREFIX}{target.name}",
        sa.MetaData(),
        *[
            sa.Column(
                name,
                staging_type(target.c[name].type),
                primary_key=name in key,
                autoincrement=False,
                nullable=name not in key,
            )
            for name in columns
        ],
    )


def actions_table() -> sa.Table:
    """The ``#temp`` table the MERGE's ``OUTPUT $action`` writes into."""
    return sa.Table(
        ACTIONS_TABLE,
        sa.MetaData(),
        sa.Column("ACTION", mssql_types.NVARCHAR(10, collation="DATABASE_DEFAULT"), nullable=False),
    )


class MergeFromStage(Executable, ClauseElement):
    """``MERGE target USING stage``: update changed rows, insert new ones, count actions.

    ``update_columns`` are set on matched rows that differ; ``insert_columns`` (all staged
    columns) are inserted for keys not in the target. Compiles for SQL Server only.
    """

    inherit_cache = False

    def __init__(
        self,
        target: sa.Table,
        stage: sa.Table,
        key: Sequence[str],
        update_columns: Sequence[str],
        insert_columns: Sequence[str],
        actions: sa.Table | None = None,
    ) -> None:
        if not key:
            raise ValueError("a MERGE needs key columns to match on")
        self.target = target
        self.stage = stage
        self.key = tuple(key)
        self.update_columns = tuple(update_columns)
        self.insert_columns = tuple(insert_columns)
        self.actions = actions


def _qualified(table: sa.Table, quote: Callable[[str], str]) -> str:
    """``[schema].[name]`` (or ``[name]``), every part bracket-quoted.

    A dotted schema (``database.owner``) is quoted part by part, as SQL Server reads it.
    """
    parts = [*(table.schema.split(".") if table.schema else []), table.name]
    return ".".join(quote(part) for part in parts)


@compiles(MergeFromStage, "mssql")
def _compile_merge(element: MergeFromStage, compiler: SQLCompiler, **_kw: Any) -> str:
    """Render the MERGE; every name is bracket-quoted by the dialect's identifier preparer."""
    q = compiler.preparer
    name = q.quote_identifier
    target, source = name("target"), name("source")

    def col(alias: str, column: str) -> str:
        return f"{alias}.{name(column)}"

    def compared(alias: str, column: str) -> str:
        text = col(alias, column)
        if isinstance(element.target.c[column].type, sa.String):
            text += f" COLLATE {BINARY_COLLATION}"
        return text

    on = " AND ".join(f"{col(target, k)} = {col(source, k)}" for k in element.key)
    lines = [
        f"MERGE INTO {_qualified(element.target, name)} WITH (HOLDLOCK) AS {target}",
        f"USING {_qualified(element.stage, name)} AS {source}",
        f"ON {on}",
    ]
    if element.update_columns:
        changed = (
            "EXISTS (SELECT "
            + ", ".join(compared(source, c) for c in element.update_columns)
            + " EXCEPT SELECT "
            + ", ".join(compared(target, c) for c in element.update_columns)
            + ")"
        )
        lines.append(f"WHEN MATCHED AND {changed} THEN")
        lines.append(
            "UPDATE SET " + ", ".join(f"{col(target, c)} = {col(source, c)}" for c in element.update_columns)
        )
    lines.append("WHEN NOT MATCHED BY TARGET THEN")
    lines.append(
        "INSERT ("
        + ", ".join(name(c) for c in element.insert_columns)
        + ") VALUES ("
        + ", ".join(col(source, c) for c in element.insert_columns)
        + ")"
    )
    if element.actions is not None:
        lines.append(f"OUTPUT $action INTO {_qualified(element.actions, name)} ({name('ACTION')})")
    return "\n".join(lines) + ";"


@dataclass
class MergePlan:
    """Every statement of one staged MERGE, in execution order (compilable for inspection)."""

    setup: list[sa.schema.ExecutableDDLElement] = field(default_factory=list)
    inserts: list[sa.Insert] = field(default_factory=list)
    merge: MergeFromStage | None = None
    count: sa.Select[Any] | None = None
    teardown: list[sa.schema.ExecutableDDLElement] = field(default_factory=list)


@dataclass(frozen=True)
class MergeCounts:
    """What the MERGE did, from its ``OUTPUT $action`` rows."""

    inserted: int = 0
    updated: int = 0


def _columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The staged columns: the first row's keys; every row must have the same ones."""
    columns = list(rows[0].keys())
    expected = set(columns)
    for row in rows:
        if set(row.keys()) != expected:
            raise ValueError("every staged row needs the same columns")
    return columns


def plan_merge(
    target: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    key: Sequence[str],
    update_columns: Sequence[str],
) -> MergePlan:
    """The statements that stage ``rows`` and MERGE them into ``target``.

    ``rows`` are dicts of database values with the same keys (the insert columns, key
    included). Columns not in ``update_columns`` are written only when a row is inserted.
    """
    if not rows:
        return MergePlan()
    columns = _columns_of(rows)
    missing_keys = [k for k in key if k not in columns]
    if missing_keys:
        raise ValueError(f"staged rows lack key column(s) {', '.join(missing_keys)}")
    updates = [c for c in update_columns if c not in key]
    unknown = [c for c in updates if c not in columns]
    if unknown:
        raise ValueError(f"update column(s) {', '.join(unknown)} are not staged")
    stage = staging_table(target, columns, key)
    actions = actions_table()
    size = rows_per_batch(len(columns))
    return MergePlan(
        setup=[
            sa.schema.DropTable(stage, if_exists=True),
            sa.schema.DropTable(actions, if_exists=True),
            sa.schema.CreateTable(stage),
            sa.schema.CreateTable(actions),
        ],
        inserts=[
            stage.insert().values([dict(r) for r in rows[start : start + size]])
            for start in range(0, len(rows), size)
        ],
        merge=MergeFromStage(target, stage, key, updates, columns, actions),
        count=sa.select(actions.c.ACTION, sa.func.count()).group_by(actions.c.ACTION),
        teardown=[sa.schema.DropTable(stage, if_exists=True), sa.schema.DropTable(actions, if_exists=True)],
    )


def merge_rows(
    conn: sa.Connection,
    target: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    key: Sequence[str],
    update_columns: Sequence[str],
    label: str,
) -> MergeCounts:
    """Stage ``rows`` in a ``#temp`` table and apply them to ``target`` with one MERGE.

    Runs on the caller's connection and inside its transaction, so the write commits or
    rolls back with the rest of the load. The temp tables are dropped afterwards (and are
    private to this database session in any case).
    """
    if conn.dialect.name != "mssql":
        raise ValueError(f"merge_rows is for SQL Server, not {conn.dialect.name}")
    plan = plan_merge(target, rows, key=key, update_columns=update_columns)
    if plan.merge is None or plan.count is None:
        return MergeCounts()
    for ddl in plan.setup:
        conn.execute(ddl)
    for number, insert in enumerate(plan.inserts, start=1):
        conn.execute(insert)
        if len(plan.inserts) > 1 and number % 20 == 0:
            log.info("%s: staged %d / %d batches", label, number, len(plan.inserts))
    conn.execute(plan.merge)
    actions = {str(action).upper(): int(n) for action, n in conn.execute(plan.count)}
    for ddl in plan.teardown:
        conn.execute(ddl)
    counts = MergeCounts(inserted=actions.get("INSERT", 0), updated=actions.get("UPDATE", 0))
    log.info(
        "%s: MERGE of %d staged rows: %d inserted, %d updated",
        label,
        len(rows),
        counts.inserted,
        counts.updated,
    )
    return counts


class MergeConflict(RuntimeError):
    """The MERGE did not do what the loader planned: the target changed during the load.

    Raised inside the caller's transaction, which then rolls back, so nothing is half
    written; the task's retry reads the table again and plans afresh.
    """


def merge_planned(
    conn: sa.Connection,
    target: sa.Table,
    inserts: Sequence[Mapping[str, Any]],
    updates: Sequence[Mapping[str, Any]],
    *,
    key: Sequence[str],
    update_columns: Sequence[str],
    label: str,
) -> MergeCounts:
    """Write the loader's planned inserts and updates with one MERGE.

    Takes the shapes :mod:`casemis.loading` builds for its generic statements: ``inserts``
    are full rows, ``updates`` carry ``b_<column>`` values for the key and the updated
    columns. Both are staged as full rows (insert-only columns of an update left NULL; the
    MERGE never writes them to a matched row).

    A planned insert whose key now exists, or a planned update whose row is gone, means
    someone changed the table since the loader read it: :class:`MergeConflict` is raised so
    the transaction rolls back (no hand-entered row is overwritten). Fewer updates than
    planned (another session made the same change) is only logged.
    """
    columns = list(inserts[0].keys()) if inserts else [*key, *update_columns]
    rows = [dict(r) for r in inserts]
    rows += [{c: u.get(f"b_{c}") for c in columns} for u in updates]
    counts = merge_rows(conn, target, rows, key=key, update_columns=update_columns, label=label)
    if counts.inserted != len(inserts) or counts.updated > len(updates):
        raise MergeConflict(
            f"{label}: planned {len(inserts)} inserts and {len(updates)} updates, the MERGE did "
            f"{counts.inserted} and {counts.updated}; the table changed during the load, rolled back"
        )
    if counts.updated < len(updates):
        log.warning(
            "%s: %d planned updates found the row already up to date", label, len(updates) - counts.updated
        )
    return counts


def sql_server_dialect(version: tuple[int, ...] = (13, 0)) -> sa.Dialect:
    """A pymssql dialect set up as for a connected SQL Server ``version`` (2016 = 13.0).

    For rendering DDL offline: a dialect that never connected assumes a pre-2008 server
    (``DATE`` as ``DATETIME``, ``NTEXT`` for long text).
    """
    from sqlalchemy.dialects.mssql.pymssql import MSDialect_pymssql

    dialect = MSDialect_pymssql(deprecate_large_types=version >= (11,))
    dialect.server_version_info = version
    return dialect


def history_tables_ddl(schema: str | None = None) -> str:
    """``CREATE TABLE`` statements for this project's own tables, for a DBA to run.

    The import creates ``CASEMIS_IMPORT_RUN``, ``CASEMIS_IMPORT_FILE`` and
    ``CASEMIS_SERVICE_LINK`` itself when its login may; where it may not, a DBA runs this
    once (SQL Server 2016 or newer).
    """
    from casemis.aeries import build_tables

    tables = build_tables(schema=schema)
    dialect = sql_server_dialect()
    own = [tables.runs, tables.files, tables.service_links]
    statements = [str(sa.schema.CreateTable(t).compile(dialect=dialect)).strip() for t in own]
    statements += [
        str(sa.schema.CreateIndex(index).compile(dialect=dialect)).strip() for t in own for index in t.indexes
    ]
    return "\n".join(f"{s};" for s in statements) + "\n"
