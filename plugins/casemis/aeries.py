"""The Aeries tables this project reads and writes, as SQLAlchemy Core, plus its own tables.

Only this module names Aeries tables and columns. ``CSE`` and ``CSV`` carry the columns the
mapping in ``include/mappings/aeries.yaml`` names (a production Aeries table has many more;
the loader never touches them). ``STU`` is read only. The ``CASEMIS_*`` tables belong to this
project: the import history, and the register of the services this pipeline created (so
services entered by hand in Aeries are never touched).

Text columns are ``Unicode`` so SQL Server gets ``NVARCHAR`` for names.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
import yaml

from casemis.paths import include_dir

ColumnType = Literal["code", "date", "int", "text"]


@dataclass(frozen=True)
class ColumnMap:
    """One Aeries column fed by one CASEMIS field."""

    column: str
    field: str
    type: ColumnType
    keep_when_blank: bool


@dataclass(frozen=True)
class TableMap:
    """The mapping of one Aeries table: key columns and mapped columns in order."""

    table: str
    key: tuple[str, ...]
    columns: tuple[ColumnMap, ...]
    identity: tuple[str, ...] = ()

    def by_field(self, present_fields: set[str] | list[str]) -> list[ColumnMap]:
        """Columns whose CASEMIS field is present in the file."""
        present = set(present_fields)
        return [c for c in self.columns if c.field in present]

    def column(self, name: str) -> ColumnMap:
        """The mapping of Aeries column ``name``."""
        for c in self.columns:
            if c.column == name:
                return c
        raise KeyError(name)


@dataclass(frozen=True)
class Mapping:
    """The whole CASEMIS -> Aeries mapping."""

    cse: TableMap
    csv: TableMap


def _table_map(raw: dict) -> TableMap:
    key = raw["key"]
    return TableMap(
        table=raw["table"],
        key=tuple(key if isinstance(key, list) else [key]),
        identity=tuple(raw.get("identity") or ()),
        columns=tuple(
            ColumnMap(
                column=name,
                field=spec["field"],
                type=spec.get("type", "code"),
                keep_when_blank=spec.get("when_blank", "clear") == "keep",
            )
            for name, spec in raw["columns"].items()
        ),
    )


@functools.cache
def load_mapping(path: Path | None = None) -> Mapping:
    """Read ``include/mappings/aeries.yaml`` (cached)."""
    source = path or include_dir() / "mappings" / "aeries.yaml"
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    return Mapping(cse=_table_map(raw["cse"]), csv=_table_map(raw["csv"]))


def _sa_type(kind: ColumnType) -> sa.types.TypeEngine:
    if kind == "date":
        return sa.Date()
    if kind == "int":
        return sa.Integer()
    if kind == "text":
        return sa.Unicode(100)
    return sa.Unicode(16)


@dataclass(frozen=True)
class Tables:
    """Every table the pipeline uses, bound to one MetaData."""

    metadata: sa.MetaData
    stu: sa.Table
    cse: sa.Table
    csv: sa.Table
    runs: sa.Table
    files: sa.Table
    service_links: sa.Table


def build_tables(mapping: Mapping | None = None, schema: str | None = None) -> Tables:
    """Define the tables (Aeries' and this project's) for ``mapping``."""
    mapping = mapping or load_mapping()
    md = sa.MetaData(schema=schema)
    stu = sa.Table(
        "STU",
        md,
        sa.Column("SC", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("SN", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("ID", sa.Integer, nullable=False, index=True),
        sa.Column("CID", sa.Unicode(10), index=True),
        sa.Column("LN", sa.Unicode(50)),
        sa.Column("FN", sa.Unicode(50)),
        sa.Column("BD", sa.Date),
        sa.Column("DEL", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    cse = sa.Table(
        mapping.cse.table,
        md,
        sa.Column("ID", sa.Integer, primary_key=True, autoincrement=False),
        *[sa.Column(c.column, _sa_type(c.type)) for c in mapping.cse.columns],
        sa.Column("DEL", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    csv = sa.Table(
        mapping.csv.table,
        md,
        sa.Column("ID", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("SQ", sa.Integer, primary_key=True, autoincrement=False),
        *[sa.Column(c.column, _sa_type(c.type)) for c in mapping.csv.columns],
        sa.Column("DEL", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    runs = sa.Table(
        "CASEMIS_IMPORT_RUN",
        md,
        sa.Column("RUN_ID", sa.Unicode(250), primary_key=True),
        sa.Column("STARTED_AT", sa.DateTime(timezone=True)),
        sa.Column("FINISHED_AT", sa.DateTime(timezone=True), nullable=False),
        sa.Column("TRIGGER", sa.Unicode(20), nullable=False),
        sa.Column("STATUS", sa.Unicode(20), nullable=False),
        sa.Column("DRY_RUN", sa.Boolean, nullable=False),
        sa.Column("ON_ERROR", sa.Unicode(20), nullable=False),
        sa.Column("MESSAGE", sa.UnicodeText),
        sa.Column("COUNTS", sa.UnicodeText),
    )
    files = sa.Table(
        "CASEMIS_IMPORT_FILE",
        md,
        sa.Column("RUN_ID", sa.Unicode(250), primary_key=True),
        sa.Column("KIND", sa.Unicode(10), primary_key=True),
        sa.Column("NAME", sa.Unicode(255), nullable=False),
        sa.Column("SIZE", sa.BigInteger, nullable=False),
        sa.Column("SHA256", sa.Unicode(64), nullable=False, index=True),
    )
    links = sa.Table(
        "CASEMIS_SERVICE_LINK",
        md,
        sa.Column("ID", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("SQ", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("SERVICE_KEY", sa.Unicode(100), nullable=False),
        sa.Column("RUN_ID", sa.Unicode(250), nullable=False),
    )
    return Tables(md, stu, cse, csv, runs, files, links)


def create_all(engine: sa.Engine, tables: Tables | None = None) -> Tables:
    """Create every table that does not exist yet (safe to run again)."""
    tables = tables or build_tables()
    tables.metadata.create_all(engine, checkfirst=True)
    return tables


def create_history_tables(engine: sa.Engine, tables: Tables | None = None) -> Tables:
    """Create only this project's own tables (for a production Aeries database)."""
    tables = tables or build_tables()
    own = [tables.runs, tables.files, tables.service_links]
    tables.metadata.create_all(engine, tables=own, checkfirst=True)
    return tables
