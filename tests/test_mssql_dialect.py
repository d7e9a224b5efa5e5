"""The SQL Server write path (``casemis.mssql``), checked by compiling its statements.

No SQL Server runs on this machine (and none can: no Docker engine, no Linux package we may
install), so these tests compile every statement with SQLAlchemy's mssql dialect and with
the pymssql dialect the Airflow ``mssql`` connection uses, and assert on the SQL text and its
parameters. What that proves and what it does not is written down in the README (section "Production").
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql as mssql_dialects
from sqlalchemy.dialects import postgresql, sqlite

from casemis import mssql
from casemis.aeries import build_tables, load_mapping
from casemis.loading import load_cse

NASTY = "O'Brien'); DROP TABLE [STU];--"


@pytest.fixture(scope="module")
def tables():  # type: ignore[no-untyped-def]
    """The project's tables in the ``dbo`` schema, as on an Aeries server."""
    return build_tables(schema="dbo")


@pytest.fixture(scope="module", params=["mssql", "mssql+pymssql"])
def dialect(request: pytest.FixtureRequest) -> sa.Dialect:
    """SQLAlchemy's base mssql dialect, and the pymssql one (engine built, never connected)."""
    if request.param == "mssql":
        return mssql_dialects.dialect()
    return sa.create_engine("mssql+pymssql://loader:secret@sql.invalid:1433/aeries").dialect


def _logged(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Everything logged: once Airflow is imported its structlog setup writes to stdout."""
    captured = capsys.readouterr()
    return caplog.text + captured.out + captured.err


def _sql(statement: Any, dialect: sa.Dialect) -> str:
    return str(statement.compile(dialect=dialect))


def _cse_rows(tables, n: int) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """``n`` full CSE rows (every column of the table), as the loader stages them."""
    names = [c.name for c in tables.cse.columns]
    return [
        {c: (i if c == "ID" else (False if c == "DEL" else None)) for c in names} for i in range(1, n + 1)
    ]


def _csv_rows(tables, n: int) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    names = [c.name for c in tables.csv.columns]
    return [
        {c: (i if c in ("ID", "SQ") else (False if c == "DEL" else None)) for c in names}
        for i in range(1, n + 1)
    ]


# --------------------------------------------------------------------------- batch sizes


def test_rows_per_batch_is_floor_of_2000_over_columns() -> None:
    assert mssql.rows_per_batch(38) == 2000 // 38 == 52
    assert mssql.rows_per_batch(8) == 250
    assert mssql.rows_per_batch(1) == 1000  # SQL Server's cap on rows in one VALUES list
    with pytest.raises(ValueError, match="at least one column"):
        mssql.rows_per_batch(0)


@pytest.mark.parametrize(("table_name", "make_rows"), [("cse", _cse_rows), ("csv", _csv_rows)])
def test_staging_batches_stay_under_2100_parameters(tables, dialect, table_name, make_rows) -> None:  # type: ignore[no-untyped-def]
    """Every staging INSERT, compiled, binds fewer than 2,100 parameters; no row is lost."""
    target = getattr(tables, table_name)
    rows = make_rows(tables, 1000)
    key = [c.name for c in target.primary_key]
    plan = mssql.plan_merge(target, rows, key=key, update_columns=[])
    n_columns = len(target.columns)
    per_batch = mssql.rows_per_batch(n_columns)
    assert len(plan.inserts) == -(-1000 // per_batch) > 1
    staged = 0
    for insert in plan.inserts:
        compiled = insert.compile(dialect=dialect)
        assert len(compiled.params) <= mssql.PARAMETER_BUDGET < mssql.MAX_PARAMETERS
        staged += len(compiled.params) // n_columns
    assert staged == 1000
    # the full batch really is as large as the budget allows (not needlessly small)
    assert len(plan.inserts[0].compile(dialect=dialect).params) == per_batch * n_columns
    assert per_batch * n_columns > mssql.PARAMETER_BUDGET - n_columns


# --------------------------------------------------------------------------- staging DDL


def test_staging_table_ddl_uses_nvarchar_and_explicit_types(tables, dialect) -> None:  # type: ignore[no-untyped-def]
    stage = mssql.staging_table(tables.cse, [c.name for c in tables.cse.columns], ["ID"])
    ddl = _sql(sa.schema.CreateTable(stage), dialect)
    assert ddl.strip().startswith("CREATE TABLE [#casemis_stage_CSE] (")
    assert "[ID] INTEGER NOT NULL" in ddl
    assert "PRIMARY KEY ([ID])" in ddl
    assert "[SE] NVARCHAR(16) COLLATE DATABASE_DEFAULT NULL" in ddl  # a code
    assert "[ED] DATE NULL" in ddl  # a date: DATE, not the pre-2008 DATETIME fallback
    assert "[IRC] INTEGER NULL" in ddl  # an int
    assert "[DEL] BIT NULL" in ddl
    assert "VARCHAR(" not in ddl.replace("NVARCHAR(", "")  # every text column is Unicode
    assert "dbo" not in ddl  # a #temp table has no schema


def test_csv_staging_table_has_composite_key(tables, dialect) -> None:  # type: ignore[no-untyped-def]
    stage = mssql.staging_table(tables.csv, [c.name for c in tables.csv.columns], ["ID", "SQ"])
    ddl = _sql(sa.schema.CreateTable(stage), dialect)
    assert "CREATE TABLE [#casemis_stage_CSV]" in ddl
    assert "PRIMARY KEY ([ID], [SQ])" in ddl
    assert "[DU] INTEGER NULL" in ddl
    assert "[CD] NVARCHAR(16) COLLATE DATABASE_DEFAULT NULL" in ddl


def test_staging_type_covers_history_table_types() -> None:
    """Types beyond CSE/CSV map to explicit SQL Server types too (names as NVARCHAR)."""
    d = mssql_dialects.dialect()
    assert mssql.staging_type(sa.Unicode(50)).compile(dialect=d) == "NVARCHAR(50) COLLATE DATABASE_DEFAULT"
    assert mssql.staging_type(sa.String(5)).compile(dialect=d).startswith("NVARCHAR(5)")
    assert mssql.staging_type(sa.SmallInteger()).compile(dialect=d) == "SMALLINT"
    assert mssql.staging_type(sa.BigInteger()).compile(dialect=d) == "BIGINT"
    assert mssql.staging_type(sa.DateTime(timezone=True)).compile(dialect=d) == "DATETIMEOFFSET"
    assert mssql.staging_type(sa.DateTime()).compile(dialect=d) == "DATETIME2"


def test_staging_table_rejects_unknown_columns(tables) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KeyError, match="NOPE"):
        mssql.staging_table(tables.cse, ["ID", "NOPE"], ["ID"])


# --------------------------------------------------------------------------- the MERGE


def test_cse_merge_statement(tables, dialect) -> None:  # type: ignore[no-untyped-def]
    rows = [{"ID": 1, "SE": "0100", "ED": dt.date(2024, 9, 1), "PA1": None, "DEL": False}]
    plan = mssql.plan_merge(tables.cse, rows, key=["ID"], update_columns=["SE", "ED", "PA1"])
    sql = _sql(plan.merge, dialect)
    lines = sql.splitlines()
    assert lines[0] == "MERGE INTO [dbo].[CSE] WITH (HOLDLOCK) AS [target]"
    assert lines[1] == "USING [#casemis_stage_CSE] AS [source]"
    assert lines[2] == "ON [target].[ID] = [source].[ID]"
    # changed rows only; EXCEPT treats NULL = NULL, so NULL -> value and value -> NULL count
    assert lines[3] == (
        "WHEN MATCHED AND EXISTS (SELECT [source].[SE] COLLATE Latin1_General_100_BIN2, [source].[ED], "
        "[source].[PA1] COLLATE Latin1_General_100_BIN2 EXCEPT SELECT [target].[SE] COLLATE "
        "Latin1_General_100_BIN2, [target].[ED], [target].[PA1] COLLATE Latin1_General_100_BIN2) THEN"
    )
    assert lines[4] == (
        "UPDATE SET [target].[SE] = [source].[SE], [target].[ED] = [source].[ED], [target].[PA1] = [source].[PA1]"
    )
    assert lines[5] == "WHEN NOT MATCHED BY TARGET THEN"
    assert lines[6] == (
        "INSERT ([ID], [SE], [ED], [PA1], [DEL]) VALUES "
        "([source].[ID], [source].[SE], [source].[ED], [source].[PA1], [source].[DEL])"
    )
    assert lines[7] == "OUTPUT $action INTO [#casemis_merge_actions] ([ACTION]);"
    assert "[target].[ID] =" not in lines[4]  # the key is never updated
    assert "ROWLOCK" not in sql
    assert "WHEN NOT MATCHED BY SOURCE" not in sql  # rows absent from the file are never deleted
    assert plan.merge.compile(dialect=dialect).params == {}  # the MERGE reads the stage; no values


def test_csv_merge_matches_on_id_and_sq_and_updates_attributes_only(tables, dialect) -> None:  # type: ignore[no-untyped-def]
    rows = _csv_rows(tables, 3)
    plan = mssql.plan_merge(tables.csv, rows, key=["ID", "SQ"], update_columns=["FQ", "DU"])
    sql = _sql(plan.merge, dialect)
    assert "MERGE INTO [dbo].[CSV] WITH (HOLDLOCK) AS [target]" in sql
    assert "ON [target].[ID] = [source].[ID] AND [target].[SQ] = [source].[SQ]" in sql
    assert "UPDATE SET [target].[FQ] = [source].[FQ], [target].[DU] = [source].[DU]\n" in sql
    assert "[target].[CD] =" not in sql  # identity columns are never updated
    assert "INSERT ([ID], [SQ], [CD], [PR], [LO], [FQ], [DU], [DEL])" in sql


def test_merge_without_update_columns_only_inserts(tables, dialect) -> None:  # type: ignore[no-untyped-def]
    plan = mssql.plan_merge(tables.cse, [{"ID": 1, "DEL": False}], key=["ID"], update_columns=[])
    sql = _sql(plan.merge, dialect)
    assert "WHEN MATCHED" not in sql
    assert "WHEN NOT MATCHED BY TARGET THEN\nINSERT ([ID], [DEL])" in sql


def test_merge_compiles_for_sql_server_only(tables) -> None:  # type: ignore[no-untyped-def]
    """On SQLite/PostgreSQL the generic path is used; the MERGE construct refuses to compile."""
    plan = mssql.plan_merge(tables.cse, [{"ID": 1, "DEL": False}], key=["ID"], update_columns=[])
    for other in (sqlite.dialect(), postgresql.dialect()):
        with pytest.raises(sa.exc.CompileError):
            plan.merge.compile(dialect=other)


def test_identifiers_are_bracket_quoted_and_escaped(dialect) -> None:
    """Names are quoted by the dialect: a ``]`` in a name is doubled, never ends the quote."""
    md = sa.MetaData(schema="aeries.dbo")
    odd = sa.Table("T]x", md, sa.Column("K", sa.Integer, primary_key=True), sa.Column("a b", sa.Unicode(5)))
    plan = mssql.plan_merge(odd, [{"K": 1, "a b": "v"}], key=["K"], update_columns=["a b"])
    sql = _sql(plan.merge, dialect)
    assert sql.startswith("MERGE INTO [aeries].[dbo].[T]]x] WITH (HOLDLOCK) AS [target]")
    assert "[target].[a b] = [source].[a b]" in sql
    assert (
        _sql(sa.schema.CreateTable(mssql.staging_table(odd, ["K", "a b"], ["K"])), dialect)
        .strip()
        .startswith("CREATE TABLE [#casemis_stage_T]]x]")
    )


def test_values_are_bound_parameters_never_inlined(tables, dialect) -> None:  # type: ignore[no-untyped-def]
    rows = [{"ID": 7, "SE": NASTY, "ED": dt.date(2024, 9, 1), "DEL": False}]
    plan = mssql.plan_merge(tables.cse, rows, key=["ID"], update_columns=["SE", "ED"])
    compiled = plan.inserts[0].compile(dialect=dialect)
    text = str(compiled)
    assert NASTY not in text and "O'Brien" not in text and "2024" not in text
    assert NASTY in compiled.params.values()
    placeholders = re.findall(r"%\(\w+\)s|:\w+|\?", text.split("VALUES", 1)[1])
    assert len(placeholders) == 4  # one placeholder per staged value
    if dialect.driver == "pymssql":
        assert "%(SE_m0)s" in text  # pymssql's pyformat placeholders
    for statement in (*plan.setup, plan.merge, plan.count, *plan.teardown):
        assert "O'Brien" not in _sql(statement, dialect)


def test_pymssql_sends_staged_text_as_unicode_literals(tables) -> None:  # type: ignore[no-untyped-def]
    """pymssql quotes parameters on the client: run its real quoting on a compiled batch.

    Text arrives as ``N'...'`` (Unicode, so names with accents survive into NVARCHAR), quotes
    are doubled, dates are ISO strings, NULL and booleans are literals.
    """
    from pymssql import _mssql

    dialect = sa.create_engine("mssql+pymssql://loader:secret@sql.invalid/aeries").dialect
    rows = [{"ID": 7, "SE": NASTY, "ED": dt.date(2024, 9, 1), "PA1": "Muñoz", "DEL": False}]
    plan = mssql.plan_merge(tables.cse, rows, key=["ID"], update_columns=["SE", "ED", "PA1"])
    compiled = plan.inserts[0].compile(dialect=dialect)
    sent = _mssql.substitute_params(str(compiled), compiled.params).decode("utf-8")
    assert sent.endswith("VALUES (7, N'O''Brien''); DROP TABLE [STU];--', '2024-09-01', N'Muñoz', 0)")


def test_plan_statement_order_and_cleanup(tables, dialect) -> None:  # type: ignore[no-untyped-def]
    plan = mssql.plan_merge(tables.cse, _cse_rows(tables, 3), key=["ID"], update_columns=["SE"])
    setup = [_sql(s, dialect).strip() for s in plan.setup]
    assert setup[0] == "DROP TABLE IF EXISTS [#casemis_stage_CSE]"  # a leftover of a failed try
    assert setup[1] == "DROP TABLE IF EXISTS [#casemis_merge_actions]"
    assert setup[2].startswith("CREATE TABLE [#casemis_stage_CSE]")
    assert setup[3].startswith("CREATE TABLE [#casemis_merge_actions]")
    assert "[ACTION] NVARCHAR(10) COLLATE DATABASE_DEFAULT NOT NULL" in setup[3]
    count = _sql(plan.count, dialect)
    assert "FROM [#casemis_merge_actions] GROUP BY [#casemis_merge_actions].[ACTION]" in count
    assert [_sql(s, dialect).strip() for s in plan.teardown] == setup[:2]


def test_plan_rejects_ragged_rows_and_missing_keys(tables) -> None:  # type: ignore[no-untyped-def]
    assert mssql.plan_merge(tables.cse, [], key=["ID"], update_columns=["SE"]).merge is None
    with pytest.raises(ValueError, match="same columns"):
        mssql.plan_merge(tables.cse, [{"ID": 1, "SE": "a"}, {"ID": 2}], key=["ID"], update_columns=["SE"])
    with pytest.raises(ValueError, match="key column"):
        mssql.plan_merge(tables.cse, [{"SE": "a"}], key=["ID"], update_columns=["SE"])


# --------------------------------------------------------------------------- the loader's dispatch


class RecordingConnection:
    """Stands in for a pymssql connection, which cannot exist here (no SQL Server available).

    It compiles every statement with the real pymssql dialect, records the SQL, returns no
    rows for reads of CSE (an empty table) and the given ``$action`` counts for the MERGE's
    count query. It fakes only the server's answers; the statements are the real ones.
    """

    def __init__(self, actions: list[tuple[str, int]]) -> None:
        self.dialect = sa.create_engine("mssql+pymssql://loader:secret@sql.invalid/aeries").dialect
        self.actions = actions
        self.sql: list[str] = []
        self.params: list[dict[str, Any]] = []

    def execute(self, statement: Any, parameters: Any = None) -> list[tuple[Any, ...]]:
        """Compile and record ``statement``; answer the action count query."""
        assert parameters is None, "the SQL Server path must not use executemany"
        compiled = statement.compile(dialect=self.dialect)
        self.sql.append(str(compiled).strip())
        self.params.append(dict(getattr(compiled, "params", None) or {}))
        if "FROM [#casemis_merge_actions]" in self.sql[-1]:
            return list(self.actions)
        return []


def _cse_frame(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ID": list(range(1, n + 1)),
            "SE": ["0100"] * n,
            "ED": ["2024-09-01"] * n,
            "PA1": [None] * n,
            "__line__": list(range(2, n + 2)),
        }
    )


def test_load_cse_on_sql_server_stages_and_merges(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """``load_cse`` on an mssql connection writes through staging + one MERGE, not executemany."""
    tables = build_tables()
    conn = RecordingConnection(actions=[("INSERT", 120)])
    with caplog.at_level(logging.INFO, logger="casemis"):
        counts = load_cse(conn, tables, load_mapping(), _cse_frame(120))  # type: ignore[arg-type]
    assert (counts.added, counts.updated, counts.unchanged) == (120, 0, 0)
    merges = [s for s in conn.sql if s.startswith("MERGE INTO [CSE] WITH (HOLDLOCK)")]
    assert len(merges) == 1
    staged = [i for i, s in enumerate(conn.sql) if s.startswith("INSERT INTO [#casemis_stage_CSE]")]
    assert len(staged) == -(-120 // mssql.rows_per_batch(5))  # ID, SE, ED, PA1, DEL
    assert sum(len(conn.params[i]) for i in staged) == 120 * 5
    assert conn.sql.index(merges[0]) > max(staged)
    assert not any(s.startswith(("INSERT INTO [CSE]", "UPDATE [CSE]")) for s in conn.sql)
    assert conn.sql[-2:] == [
        "DROP TABLE IF EXISTS [#casemis_stage_CSE]",
        "DROP TABLE IF EXISTS [#casemis_merge_actions]",
    ]
    staged_values = {v for i in staged for v in conn.params[i].values()}
    assert dt.date(2024, 9, 1) in staged_values  # dates are bound as dates
    assert "MERGE of 120 staged rows: 120 inserted, 0 updated" in _logged(caplog, capsys)


def test_merge_that_disagrees_with_the_plan_raises(tables) -> None:  # type: ignore[no-untyped-def]
    """A planned insert that the MERGE turned into an update means the table changed under
    the load: raise, so the caller's transaction rolls back."""
    conn = RecordingConnection(actions=[("INSERT", 1), ("UPDATE", 1)])
    inserts = [{"ID": 1, "SE": "a", "DEL": False}, {"ID": 2, "SE": "b", "DEL": False}]
    with pytest.raises(mssql.MergeConflict, match="planned 2 inserts and 0 updates"):
        mssql.merge_planned(conn, tables.cse, inserts, [], key=["ID"], update_columns=["SE"], label="CSE")  # type: ignore[arg-type]


def test_merge_planned_stages_updates_as_full_rows(
    tables, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    inserts = [{"ID": 1, "SQ": 1, "CD": "330", "FQ": "W", "DEL": False}]
    updates = [{"b_ID": 2, "b_SQ": 4, "b_FQ": "D"}]
    conn = RecordingConnection(actions=[("INSERT", 1), ("UPDATE", 1)])
    with caplog.at_level(logging.INFO, logger="casemis"):
        counts = mssql.merge_planned(
            conn,
            tables.csv,
            inserts,
            updates,
            key=["ID", "SQ"],
            update_columns=["FQ"],
            label="CSV",  # type: ignore[arg-type]
        )
        assert counts == mssql.MergeCounts(inserted=1, updated=1)
        assert "already up to date" not in _logged(caplog, capsys)
        staged = next(
            p
            for s, p in zip(conn.sql, conn.params, strict=True)
            if s.startswith("INSERT INTO [#casemis_stage_CSV]")
        )
        assert staged == {
            "ID_m0": 1, "SQ_m0": 1, "CD_m0": "330", "FQ_m0": "W", "DEL_m0": False,
            "ID_m1": 2, "SQ_m1": 4, "CD_m1": None, "FQ_m1": "D", "DEL_m1": None,
        }  # fmt: skip
        assert "UPDATE SET [target].[FQ] = [source].[FQ]\n" in next(
            s for s in conn.sql if s.startswith("MERGE")
        )

        # another session already made the same change: fewer updates, logged, not an error
        conn = RecordingConnection(actions=[("INSERT", 1)])
        counts = mssql.merge_planned(
            conn,
            tables.csv,
            inserts,
            updates,
            key=["ID", "SQ"],
            update_columns=["FQ"],
            label="CSV",  # type: ignore[arg-type]
        )
        assert counts == mssql.MergeCounts(inserted=1, updated=0)
        assert "CSV: 1 planned updates found the row already up to date" in _logged(caplog, capsys)


def test_merge_rows_refuses_other_databases(tables) -> None:  # type: ignore[no-untyped-def]
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn, pytest.raises(ValueError, match="for SQL Server, not sqlite"):
        mssql.merge_rows(conn, tables.cse, [{"ID": 1}], key=["ID"], update_columns=[], label="CSE")


# --------------------------------------------------------------------------- the connection


def test_url_from_airflow_mssql_connection(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """AIRFLOW_CONN_CASEMIS_TARGET (JSON, conn_type mssql) -> mssql+pymssql URL, password hidden."""
    from casemis.db import describe, engine_from_connection, url_from_connection

    password = "p@ss:w/rd#1"  # characters that must be URL-encoded
    monkeypatch.setenv(
        "AIRFLOW_CONN_CASEMIS_TARGET",
        json.dumps(
            {
                "conn_type": "mssql",
                "host": "aeries-sql.district.invalid",
                "port": 1433,
                "login": "casemis_loader",
                "password": password,
                "schema": "DST24000AeriesDemo",
            }
        ),
    )
    url = url_from_connection("casemis_target")
    assert url.drivername == "mssql+pymssql"
    assert (url.host, url.port, url.database, url.username) == (
        "aeries-sql.district.invalid",
        1433,
        "DST24000AeriesDemo",
        "casemis_loader",
    )
    assert url.password == password
    shown = url.render_as_string(hide_password=True)
    assert shown == "mssql+pymssql://casemis_loader:***@aeries-sql.district.invalid:1433/DST24000AeriesDemo"
    assert sa.make_url(url.render_as_string(hide_password=False)).password == password  # round-trips

    with caplog.at_level(logging.INFO, logger="casemis"):
        engine = engine_from_connection("casemis_target")  # builds the engine; connects lazily
    assert engine.dialect.name == "mssql" and engine.dialect.driver == "pymssql"
    logged = _logged(caplog, capsys)
    assert password not in logged and "p%40ss" not in logged
    assert "casemis_loader:***@aeries-sql.district.invalid" in logged
    assert password not in describe(engine)


def test_url_from_mssql_connection_with_odbc_scheme_and_default_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from casemis.db import url_from_connection

    monkeypatch.setenv(
        "AIRFLOW_CONN_CASEMIS_TARGET",
        json.dumps(
            {
                "conn_type": "mssql",
                "host": "sql.invalid",
                "login": "u",
                "password": "pw",
                "schema": "aeries",
                "extra": {"sqlalchemy_scheme": "mssql+pyodbc"},
            }
        ),
    )
    url = url_from_connection("casemis_target")
    assert url.drivername == "mssql+pyodbc"
    assert url.port == 1433
    assert url.render_as_string(hide_password=True) == "mssql+pyodbc://u:***@sql.invalid:1433/aeries"


def test_history_tables_ddl_for_a_dba() -> None:
    """The project's own tables as SQL Server DDL: NVARCHAR text, DATETIMEOFFSET times, BIT flags."""
    ddl = mssql.history_tables_ddl("dbo")
    for table in ("CASEMIS_IMPORT_RUN", "CASEMIS_IMPORT_FILE", "CASEMIS_SERVICE_LINK"):
        assert f"CREATE TABLE dbo.[{table}] (" in ddl
    assert "[RUN_ID] NVARCHAR(250) NOT NULL" in ddl
    assert "[FINISHED_AT] DATETIMEOFFSET NOT NULL" in ddl
    assert "[MESSAGE] NVARCHAR(max) NULL" in ddl  # not the deprecated NTEXT
    assert "[DRY_RUN] BIT NOT NULL" in ddl
    assert "PRIMARY KEY ([ID], [SQ])" in ddl
    assert "ON dbo.[CASEMIS_IMPORT_FILE] ([SHA256]);" in ddl
    assert "CREATE TABLE dbo.[CSE]" not in ddl and "[STU]" not in ddl  # never Aeries' own tables
    assert ddl.count(";") == 4
