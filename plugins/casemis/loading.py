"""Load CSE and CSV rows into the target database: bulk read, compare in memory, batch write.

Each load runs inside one transaction that the caller owns (``with engine.begin()``), so it
commits whole or changes nothing, and running it again with the same rows changes nothing
(0 added, 0 updated). No row-by-row round trips: existing rows are read in one query per
table and changes are written with executemany in batches.

Rules:
- ``CSE``: one row per student (``ID``). New students are added; for existing ones the mapped
  columns are updated when they differ. A column mapped ``when_blank: keep`` (the A-57..A-62
  fillers) keeps its value when the file's field is blank.
- ``CSV``: for each student being reconciled, the file is authoritative for the services this
  pipeline created (registered in ``CASEMIS_SERVICE_LINK``): new services are added with the
  next free ``SQ``, changed ones updated, those no longer in the file removed. Services
  entered by hand in Aeries are never read for change, updated or removed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import sqlalchemy as sa

from casemis.aeries import Mapping, Tables

log = logging.getLogger(__name__)

BATCH_ROWS = 2000
_BLANK = "\x00"


@dataclass
class LoadCounts:
    """What one load did (or, in a dry run, would do)."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    added_ids: list[int] = field(default_factory=list, repr=False)
    updated_ids: list[int] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, int]:
        """The counts only (no IDs), for XCom, logs and reports."""
        data = asdict(self)
        return {k: v for k, v in data.items() if not k.endswith("_ids")}


def canonical_db_value(value: Any) -> str | None:
    """Text form of a database value, comparable with :mod:`casemis.transform` output."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def db_value(text: Any, kind: str) -> Any:
    """Convert canonical text to the value the database column takes."""
    if text is None or (not isinstance(text, str) and pd.isna(text)):
        return None
    if kind == "date":
        return dt.date.fromisoformat(str(text))
    if kind == "int":
        return int(text)
    return str(text)


def batched(items: Sequence[Any], size: int = BATCH_ROWS) -> Iterable[Sequence[Any]]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _execute_batches(conn: sa.Connection, statement: Any, rows: list[dict[str, Any]], label: str) -> None:
    """executemany in batches, with about ten progress lines for long writes."""
    total = len(rows)
    done = 0
    step = max(BATCH_ROWS, total // 10)
    next_report = step
    for chunk in batched(rows):
        conn.execute(statement, list(chunk))
        done += len(chunk)
        if total > BATCH_ROWS and (done >= next_report or done == total):
            log.info("%s: %d / %d rows written", label, done, total)
            next_report = done + step


def _existing_frame(conn: sa.Connection, table: sa.Table, columns: list[str]) -> pd.DataFrame:
    """Read ``columns`` of every row of ``table`` in one query, as canonical text."""
    result = conn.execute(sa.select(*[table.c[c] for c in columns]))
    rows = [[canonical_db_value(v) for v in row] for row in result]
    return pd.DataFrame(rows, columns=columns, dtype=object)


def _differs(left: pd.DataFrame, right: pd.DataFrame) -> pd.Series:
    """Row-wise: does any column differ (blank equals blank)?"""
    if left.empty or not len(left.columns):
        return pd.Series(False, index=left.index)
    a = left.astype(object).where(left.notna(), _BLANK)
    b = right.astype(object).where(right.notna(), _BLANK)
    return (a != b).any(axis=1)


def _records(
    frame: pd.DataFrame,
    kinds: dict[str, str],
    *,
    key: str,
    prefix: str = "",
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``frame`` (indexed by ``key``) as executemany parameter dicts of database values.

    Converted column by column: building a pandas Series per row (``iterrows``) cost most
    of a 100k-student load.
    """
    names = [f"{prefix}{key}", *(f"{prefix}{c}" for c in frame.columns)]
    columns = [[int(i) for i in frame.index]]
    columns += [[db_value(v, kinds[c]) for v in frame[c].tolist()] for c in frame.columns]
    fixed = extra or {}
    return [{**dict(zip(names, values, strict=True)), **fixed} for values in zip(*columns, strict=True)]


def load_cse(conn: sa.Connection, tables: Tables, mapping: Mapping, frame: pd.DataFrame) -> LoadCounts:
    """Add or update the CSE rows in ``frame`` (``ID`` + mapped columns present in the file)."""
    table = tables.cse
    columns = [c for c in frame.columns if c not in ("ID", "__line__")]
    kinds = {c: mapping.cse.column(c).type for c in columns}
    keep = [c for c in columns if mapping.cse.column(c).keep_when_blank]
    incoming = frame.drop_duplicates("ID").set_index("ID")[columns].astype(object)
    incoming = incoming.where(incoming.notna(), None)

    existing = _existing_frame(conn, table, ["ID", *columns])
    existing["ID"] = existing["ID"].astype("int64")
    existing = existing.set_index("ID")

    new_ids = incoming.index.difference(existing.index)
    common = incoming.index.intersection(existing.index)
    proposed = incoming.loc[common].copy()
    current = existing.loc[common, columns]
    for c in keep:
        proposed[c] = proposed[c].where(proposed[c].notna(), current[c])
    changed = _differs(proposed, current)
    updated_ids = list(proposed.index[changed])

    inserts = _records(incoming.loc[new_ids], kinds, key="ID", extra={"DEL": False})
    updates = _records(proposed.loc[updated_ids], kinds, key="ID", prefix="b_")
    if conn.dialect.name == "mssql":  # SQL Server: #temp staging table + one MERGE
        from casemis.mssql import merge_planned

        merge_planned(conn, table, inserts, updates, key=["ID"], update_columns=columns, label="CSE")
    else:
        if inserts:
            _execute_batches(conn, table.insert(), inserts, "CSE insert")
        if updates and columns:
            statement = (
                table.update()
                .where(table.c.ID == sa.bindparam("b_ID"))
                .values({c: sa.bindparam(f"b_{c}") for c in columns})
            )
            _execute_batches(conn, statement, updates, "CSE update")
    counts = LoadCounts(
        added=len(inserts),
        updated=len(updates),
        unchanged=len(common) - len(updates),
        added_ids=[int(i) for i in new_ids],
        updated_ids=[int(i) for i in updated_ids],
    )
    log.info("CSE: %d added, %d updated, %d unchanged", counts.added, counts.updated, counts.unchanged)
    return counts


def service_key(values: Iterable[Any]) -> str:
    """The identity of a service as stored in ``CASEMIS_SERVICE_LINK.SERVICE_KEY``."""
    return "|".join("" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v) for v in values)


def load_csv(
    conn: sa.Connection,
    tables: Tables,
    mapping: Mapping,
    frame: pd.DataFrame,
    *,
    reconcile_ids: set[int],
    run_id: str,
) -> LoadCounts:
    """Reconcile the pipeline's services for the students in ``frame`` with the file.

    ``frame`` holds one row per service (``ID`` + mapped columns). Removal applies only to
    students in ``reconcile_ids`` (those whose services rows were all imported cleanly), so a
    student with a rejected services row never loses a service because of it.
    """
    csv, links = tables.csv, tables.service_links
    identity = list(mapping.csv.identity)
    columns = [c for c in frame.columns if c not in ("ID", "__line__")]
    kinds = {c: mapping.csv.column(c).type for c in columns}
    attributes = [c for c in columns if c not in identity]

    incoming = frame[["ID", *columns]].astype(object)
    incoming = incoming.where(incoming.notna(), None)
    incoming["KEY"] = [service_key(v) for v in incoming[identity].itertuples(index=False, name=None)]

    owned = _owned_services(conn, tables, attributes)
    students = {int(i) for i in incoming["ID"].unique()}
    owned = owned[owned["ID"].isin(students)]
    owned_by_key = {(int(r.ID), r.KEY): r for r in owned.itertuples(index=False)}

    inserts: list[dict[str, Any]] = []
    link_inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    unchanged = 0
    updated_ids: set[int] = set()
    added_ids: set[int] = set()
    seen: set[tuple[int, str]] = set()
    next_sq = _next_sequence(conn, csv, students)
    for row in incoming.itertuples(index=False):
        values = row._asdict()
        sid, key = int(values["ID"]), values["KEY"]
        seen.add((sid, key))
        current = owned_by_key.get((sid, key))
        if current is None:
            sq = next_sq[sid]
            next_sq[sid] = sq + 1
            inserts.append(
                {"ID": sid, "SQ": sq, **{c: db_value(values[c], kinds[c]) for c in columns}, "DEL": False}
            )
            link_inserts.append({"ID": sid, "SQ": sq, "SERVICE_KEY": key, "RUN_ID": run_id})
            added_ids.add(sid)
            continue
        now = {c: canonical_db_value(db_value(values[c], kinds[c])) for c in attributes}
        before = {c: getattr(current, c) for c in attributes}
        if now == before:
            unchanged += 1
            continue
        updates.append(
            {
                "b_ID": sid,
                "b_SQ": int(current.SQ),
                **{f"b_{c}": db_value(values[c], kinds[c]) for c in attributes},
            }
        )
        updated_ids.add(sid)

    removals = [
        {"b_ID": int(r.ID), "b_SQ": int(r.SQ)}
        for r in owned.itertuples(index=False)
        if int(r.ID) in reconcile_ids and (int(r.ID), r.KEY) not in seen
    ]
    if removals:
        where = sa.and_(csv.c.ID == sa.bindparam("b_ID"), csv.c.SQ == sa.bindparam("b_SQ"))
        _execute_batches(conn, csv.delete().where(where), removals, "CSV delete")
        link_where = sa.and_(links.c.ID == sa.bindparam("b_ID"), links.c.SQ == sa.bindparam("b_SQ"))
        _execute_batches(conn, links.delete().where(link_where), removals, "service link delete")
    if conn.dialect.name == "mssql":  # SQL Server: #temp staging table + one MERGE
        from casemis.mssql import merge_planned

        merge_planned(conn, csv, inserts, updates, key=["ID", "SQ"], update_columns=attributes, label="CSV")
    else:
        if updates and attributes:
            where = sa.and_(csv.c.ID == sa.bindparam("b_ID"), csv.c.SQ == sa.bindparam("b_SQ"))
            statement = csv.update().where(where).values({c: sa.bindparam(f"b_{c}") for c in attributes})
            _execute_batches(conn, statement, updates, "CSV update")
        if inserts:
            _execute_batches(conn, csv.insert(), inserts, "CSV insert")
    if link_inserts:
        _execute_batches(conn, links.insert(), link_inserts, "service link insert")
    counts = LoadCounts(
        added=len(inserts),
        updated=len(updates),
        unchanged=unchanged,
        removed=len(removals),
        added_ids=sorted(added_ids),
        updated_ids=sorted(updated_ids),
    )
    log.info(
        "CSV: %d added, %d updated, %d unchanged, %d removed",
        counts.added,
        counts.updated,
        counts.unchanged,
        counts.removed,
    )
    return counts


def _owned_services(conn: sa.Connection, tables: Tables, attributes: list[str]) -> pd.DataFrame:
    """The services this pipeline created (``ID``, ``SQ``, ``KEY`` + attributes), as text.

    A link whose CSV row was deleted by hand in Aeries is dropped from the register here (the
    file may then add the service again as a new row).
    """
    csv, links = tables.csv, tables.service_links
    query = sa.select(
        links.c.ID, links.c.SQ, links.c.SERVICE_KEY, csv.c.ID.label("CSV_ID"), *[csv.c[c] for c in attributes]
    ).select_from(links.outerjoin(csv, sa.and_(csv.c.ID == links.c.ID, csv.c.SQ == links.c.SQ)))
    live, orphans = [], []
    for row in conn.execute(query):
        if row[3] is None:
            orphans.append({"b_ID": int(row[0]), "b_SQ": int(row[1])})
        else:
            live.append([int(row[0]), int(row[1]), row[2], *[canonical_db_value(v) for v in row[4:]]])
    if orphans:
        where = sa.and_(links.c.ID == sa.bindparam("b_ID"), links.c.SQ == sa.bindparam("b_SQ"))
        _execute_batches(conn, links.delete().where(where), orphans, "service link cleanup")
    return pd.DataFrame(live, columns=["ID", "SQ", "KEY", *attributes], dtype=object)


def _next_sequence(conn: sa.Connection, csv: sa.Table, students: set[int]) -> dict[int, int]:
    """Next free ``SQ`` per student, counting services entered by hand too."""
    query = sa.select(csv.c.ID, sa.func.max(csv.c.SQ)).group_by(csv.c.ID)
    highest = {int(i): int(m) for i, m in conn.execute(query) if m is not None}
    return {sid: highest.get(sid, 0) + 1 for sid in students}


def students_not_in_file(conn: sa.Connection, tables: Tables, ids_in_file: set[int]) -> pd.DataFrame:
    """CSE students (not deleted) that the file did not mention, for the NotInFile attachment."""
    cse = tables.cse
    cols = [cse.c.ID, *[cse.c[c] for c in ("DI", "PT", "XD") if c in cse.c]]
    rows = conn.execute(sa.select(*cols).where(cse.c.DEL == sa.false())).all()
    frame = pd.DataFrame(rows, columns=[c.name for c in cols])
    return frame[~frame["ID"].isin(ids_in_file)].reset_index(drop=True)
