"""Database engines for the target (Aeries) database.

Inside Airflow the target is an Airflow connection (credentials stay there); outside it a
SQLAlchemy URL is given on the command line. Either way the loader gets a SQLAlchemy Engine,
so one code path serves SQLite, PostgreSQL and SQL Server.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

log = logging.getLogger(__name__)


def engine_from_url(url: str) -> sa.Engine:
    """Create an engine from a SQLAlchemy URL (SQLite gets a busy timeout and FK checks)."""
    engine = sa.create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout = 30000")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.close()

    return engine


def url_from_connection(conn_id: str) -> sa.URL:
    """Build a SQLAlchemy URL from an Airflow connection, without logging its password.

    Supported connection types: ``sqlite`` (host = database file path), ``postgres``,
    ``mssql`` (pymssql, or the ``sqlalchemy_scheme`` extra, e.g. ``mssql+pyodbc``) and
    ``generic`` with an explicit ``sqlalchemy_url`` extra.
    """
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson
    kind = (conn.conn_type or "").lower()
    if extra.get("sqlalchemy_url"):
        return sa.make_url(extra["sqlalchemy_url"])
    if kind == "sqlite":
        path = conn.host or conn.schema or ""
        return sa.URL.create("sqlite", database=path)
    if kind in ("postgres", "postgresql"):
        return sa.URL.create(
            "postgresql+psycopg2",
            username=conn.login,
            password=conn.password,
            host=conn.host,
            port=conn.port,
            database=conn.schema,
        )
    if kind == "mssql":
        return sa.URL.create(
            extra.get("sqlalchemy_scheme", "mssql+pymssql"),
            username=conn.login,
            password=conn.password,
            host=conn.host,
            port=conn.port or 1433,
            database=conn.schema,
        )
    raise ValueError(
        f"connection {conn_id!r} has type {conn.conn_type!r}; the target must be sqlite, postgres or mssql"
    )


def engine_from_connection(conn_id: str) -> sa.Engine:
    """Create an engine for the Airflow connection ``conn_id``."""
    url = url_from_connection(conn_id)
    log.info("target database: %s", url.render_as_string(hide_password=True))
    return engine_from_url(url.render_as_string(hide_password=False))


def describe(engine: sa.Engine) -> str:
    """A loggable description of an engine (password hidden)."""
    return engine.url.render_as_string(hide_password=True)
