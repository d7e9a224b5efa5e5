"""Small hand-made districts for the import tests: STU rows, tableA/tableB files, DB readers.

Everything is invented (no real student data). The default district exercises every
matching path once:

====  ==========  ==========  =====================================================
line  STUDENT_ID  SSID        outcome
====  ==========  ==========  =====================================================
2     100001      1000000001  matched by SSID -> STU.CID
3     100002      1000000002  matched; the student has two STU rows (two schools)
4     100003      (blank)     matched by STUDENT_ID -> STU.ID (STU has no CID)
5     100004      1000000004  unmatched: the only STU row is soft-deleted (DEL=1)
6     555555      1000000055  unmatched: that CID belongs to two Aeries students
7     100007      1000000099  matched by STUDENT_ID (the SSID is in no STU row)
8     100008      1000000088  duplicate (same SSID as line 9)
9     100010      1000000088  duplicate (same SSID as line 8)
10    100011      1000000011  error: PLAN_TYPE 12 is not a valid code
====  ==========  ==========  =====================================================

Student 100009 is in STU but not in the file (the tests give it a CSE row by hand, so it
shows in the NotInFile attachment).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from casemis.aeries import build_tables

TABLE_A_FIELDS = (
    "REPT_DATE",
    "SELPA_CODE",
    "STUDENT_ID",
    "SSID",
    "LAST_NAME",
    "FIRST_NAME",
    "BIRTHDATE",
    "GENDER",
    "GRADE",
    "PLAN_TYPE",
    "DISABILIT1",
    "ENTRY_DATE",
    "LAST_IEP",
    "IN_REGCLS",
    "FILLER1",
    "FILLER2",
)
TABLE_B_FIELDS = (
    "REPT_DATE",
    "SELPA_CODE",
    "STUDENT_ID",
    "SSID",
    "SERVICE",
    "SERV_PROV",
    "SERV_LOC",
    "SERV_FREQ",
    "SERV_DUR",
)
STU_FIELDS = ("ID", "CID", "SC", "SN", "LN", "FN", "BD", "DEL")

#: (ID, CID, SC, SN, DEL) of the default district's STU rows.
STU_ROWS: tuple[tuple[int, str, int, int, int], ...] = (
    (100001, "1000000001", 1, 1, 0),
    (100002, "1000000002", 1, 2, 0),
    (100002, "1000000002", 2, 7, 0),  # same student at a second school
    (100003, "", 1, 3, 0),
    (100004, "1000000004", 1, 4, 1),  # soft-deleted
    (100005, "1000000055", 1, 5, 0),  # two different students share a CID
    (100006, "1000000055", 1, 6, 0),
    (100007, "1000000007", 1, 8, 0),
    (100008, "1000000008", 1, 9, 0),
    (100009, "1000000009", 1, 10, 0),  # not in the file
    (100010, "1000000010", 1, 11, 0),
    (100011, "1000000011", 1, 12, 0),
)

#: (STUDENT_ID, SSID, overrides) of the default tableA, in file order (line 2 first).
STUDENTS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("100001", "1000000001", {}),
    ("100002", "1000000002", {}),
    ("100003", "", {}),
    ("100004", "1000000004", {}),
    ("555555", "1000000055", {}),
    ("100007", "1000000099", {}),
    ("100008", "1000000088", {}),
    ("100010", "1000000088", {}),
    ("100011", "1000000011", {"PLAN_TYPE": "12"}),
)
MATCHED_IDS = [100001, 100002, 100003, 100007]

#: (STUDENT_ID, SERVICE, SERV_PROV, SERV_LOC, SERV_FREQ, SERV_DUR) of the default tableB.
SERVICES: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("100001", "330", "100", "400", "2", "60"),
    ("100001", "415", "100", "100", "1", "30"),
    ("100002", "450", "200", "100", "2", "045"),
    ("100003", "330", "100", "400", "1", "30"),
    ("100004", "330", "100", "400", "1", "30"),  # student unmatched -> service unmatched
    ("100008", "330", "100", "400", "1", "30"),  # student duplicate -> service unmatched
)


def student_row(student_id: str, ssid: str, **overrides: str) -> dict[str, str]:
    """One valid tableA row (every TABLE_A_FIELDS field), with ``overrides`` applied."""
    row = {
        "REPT_DATE": "20171201",
        "SELPA_CODE": "3410",
        "STUDENT_ID": student_id,
        "SSID": ssid,
        "LAST_NAME": f"Last{student_id[-3:]}",
        "FIRST_NAME": f"First{student_id[-3:]}",
        "BIRTHDATE": "20100315",
        "GENDER": "F",
        "GRADE": "05",
        "PLAN_TYPE": "10",
        "DISABILIT1": "290",
        "ENTRY_DATE": "20150901",
        "LAST_IEP": "20170420",
        "IN_REGCLS": "80",
        "FILLER1": "",
        "FILLER2": "",
    }
    row.update(overrides)
    return row


def service_row(student_id: str, service: str, prov: str, loc: str, freq: str, dur: str) -> dict[str, str]:
    """One valid tableB row."""
    ssid = next((s for i, s, _ in STUDENTS if i == student_id), "")
    return {
        "REPT_DATE": "20171201",
        "SELPA_CODE": "3410",
        "STUDENT_ID": student_id,
        "SSID": ssid,
        "SERVICE": service,
        "SERV_PROV": prov,
        "SERV_LOC": loc,
        "SERV_FREQ": freq,
        "SERV_DUR": dur,
    }


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]], fields: Iterable[str]) -> Path:
    """Write ``rows`` (dicts) as a CSV file with the header ``fields``; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path


def table_a_rows(changes: Mapping[str, Mapping[str, str]] | None = None) -> list[dict[str, str]]:
    """The default tableA rows; ``changes`` maps a STUDENT_ID to field overrides."""
    changes = changes or {}
    return [student_row(i, s, **{**o, **changes.get(i, {})}) for i, s, o in STUDENTS]


def write_table_a(path: Path, changes: Mapping[str, Mapping[str, str]] | None = None) -> Path:
    """Write the default tableA (with ``changes``) to ``path``."""
    return write_csv(path, table_a_rows(changes), TABLE_A_FIELDS)


def write_table_b(path: Path, services: Iterable[tuple[str, ...]] = SERVICES) -> Path:
    """Write a tableB with ``services`` (default: the default district's) to ``path``."""
    return write_csv(path, [service_row(*s) for s in services], TABLE_B_FIELDS)


def write_stu(path: Path, rows: Iterable[tuple[int, str, int, int, int]] = STU_ROWS) -> Path:
    """Write STU rows ``(ID, CID, SC, SN, DEL)`` in the CSV form ``casemis.seed`` reads."""
    records = [
        {
            "ID": i,
            "CID": cid,
            "SC": sc,
            "SN": sn,
            "LN": f"Last{i}",
            "FN": f"First{i}",
            "BD": "2010-03-15",
            "DEL": d,
        }
        for i, cid, sc, sn, d in rows
    ]
    return write_csv(path, records, STU_FIELDS)


def select_all(engine: sa.Engine, table: str, order_by: Iterable[str] = ("ID",)) -> list[dict[str, Any]]:
    """Every row of one of the pipeline's tables, as dicts, in ``order_by`` order."""
    tables = build_tables()
    by_name = {t.name: t for t in tables.metadata.sorted_tables}
    t = by_name[table]
    with engine.connect() as conn:
        result = conn.execute(sa.select(t).order_by(*[t.c[c] for c in order_by]))
        return [dict(row._mapping) for row in result]


def count(engine: sa.Engine, table: str) -> int:
    """Row count of one of the pipeline's tables."""
    tables = build_tables()
    t = {t.name: t for t in tables.metadata.sorted_tables}[table]
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())


def by_id(rows: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """CSE rows keyed by ``ID``."""
    return {int(r["ID"]): dict(r) for r in rows}


def insert(engine: sa.Engine, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert rows by hand (as a user would in Aeries), committed."""
    tables = build_tables()
    t = {t.name: t for t in tables.metadata.sorted_tables}[table]
    with engine.begin() as conn:
        conn.execute(t.insert(), rows)
