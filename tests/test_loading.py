"""Transforming file rows to Aeries rows, and loading them into CSE and CSV.

Every database test runs on SQLite and on a fresh PostgreSQL database (``db_url``). Frames
are built the way :mod:`casemis.transform` builds them (canonical text, blank as NA).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pytest
import sqlalchemy as sa

from casemis.aeries import Mapping, Tables, build_tables, load_mapping
from casemis.db import engine_from_url
from casemis.loading import LoadCounts, load_cse, load_csv
from casemis.seed import init_db
from casemis.transform import canonical_series, to_table_frame
from tests.import_helpers import by_id, count, insert, select_all

# --------------------------------------------------------------------------- transform


def test_int_fields_are_canonicalised_and_codes_kept_as_given():
    values = pd.Series(["045", "0", None, "100"], dtype="str")
    assert canonical_series(values, "int").tolist()[:2] == ["45", "0"]
    assert pd.isna(canonical_series(values, "int").iloc[2])
    assert canonical_series(values, "int").iloc[3] == "100"
    # Codes are compared as text: a leading zero is part of the code.
    assert canonical_series(values, "code").tolist()[:2] == ["045", "0"]


def test_absent_fields_produce_no_column():
    rows = pd.DataFrame(
        {
            "STU_ID": pd.array([7, 8], dtype="Int64"),
            "__line__": [2, 3],
            "PLAN_TYPE": pd.Series(["10", "20"], dtype="str"),
            "IN_REGCLS": pd.Series(["080", None], dtype="str"),
            "EXIT_DATE": pd.Series([None, None], dtype="str"),
        }
    )
    # EXIT_DATE is in the frame but not among the file's headers: no XD column at all.
    frame = to_table_frame(rows, load_mapping().cse, ["PLAN_TYPE", "IN_REGCLS"])
    assert list(frame.columns) == ["ID", "__line__", "PT", "IRC"]
    assert frame["ID"].tolist() == [7, 8]
    assert frame["IRC"].iloc[0] == "80" and pd.isna(frame["IRC"].iloc[1])


# --------------------------------------------------------------------------- fixtures


@dataclass
class Target:
    """A target database with the pipeline's tables, and how to load into it."""

    engine: sa.Engine
    tables: Tables
    mapping: Mapping

    def load_cse(self, rows: list[dict[str, object]]) -> LoadCounts:
        """Load CSE rows in one committed transaction."""
        with self.engine.begin() as conn:
            return load_cse(conn, self.tables, self.mapping, frame(rows))

    def load_csv(self, rows: list[dict[str, object]], reconcile: set[int] | None = None) -> LoadCounts:
        """Load CSV rows in one committed transaction; by default every student is reconciled."""
        data = frame(rows)
        ids = set(data["ID"]) if reconcile is None else reconcile
        with self.engine.begin() as conn:
            return load_csv(conn, self.tables, self.mapping, data, reconcile_ids=ids, run_id="test-run")

    def cse(self) -> dict[int, dict[str, object]]:
        """CSE rows by ID."""
        return by_id(select_all(self.engine, "CSE"))

    def csv(self) -> list[tuple]:
        """CSV rows as (ID, SQ, CD, PR, LO, FQ, DU)."""
        return [
            (r["ID"], r["SQ"], r["CD"], r["PR"], r["LO"], r["FQ"], r["DU"])
            for r in select_all(self.engine, "CSV", ("ID", "SQ"))
        ]

    def links(self) -> list[tuple[int, int, str]]:
        """CASEMIS_SERVICE_LINK rows as (ID, SQ, SERVICE_KEY)."""
        return [
            (r["ID"], r["SQ"], r["SERVICE_KEY"])
            for r in select_all(self.engine, "CASEMIS_SERVICE_LINK", ("ID", "SQ"))
        ]


def frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """A transform-shaped frame: ``ID`` as int64, every other column canonical text or NA."""
    data = pd.DataFrame(rows)
    out = pd.DataFrame({"ID": data["ID"].astype("int64"), "__line__": range(2, len(data) + 2)})
    for c in data.columns:
        if c != "ID":
            out[c] = pd.Series(data[c].tolist(), dtype="str")
    return out


@pytest.fixture
def target(db_url: str) -> Iterator[Target]:
    engine = engine_from_url(db_url)
    init_db(engine)
    yield Target(engine, build_tables(), load_mapping())
    engine.dispose()


# --------------------------------------------------------------------------- CSE


def test_cse_add_update_unchanged(target: Target):
    first = target.load_cse(
        [
            {"ID": 1, "PT": "10", "DI": "290", "ED": "2015-09-01", "IRC": "80"},
            {"ID": 2, "PT": "10", "DI": "240", "ED": "2016-09-01", "IRC": "75"},
        ]
    )
    assert (first.added, first.updated, first.unchanged) == (2, 0, 0)
    assert first.added_ids == [1, 2]
    rows = target.cse()
    assert rows[1]["ED"] == dt.date(2015, 9, 1) and rows[1]["IRC"] == 80 and rows[1]["DEL"] is False

    second = target.load_cse(
        [
            {"ID": 1, "PT": "10", "DI": "290", "ED": "2015-09-01", "IRC": "80"},  # same
            {"ID": 2, "PT": "10", "DI": "280", "ED": "2016-09-01", "IRC": "75"},  # DI changed
            {"ID": 3, "PT": "20", "DI": "210", "ED": "2017-01-09", "IRC": None},  # new
        ]
    )
    assert (second.added, second.updated, second.unchanged) == (1, 1, 1)
    assert second.updated_ids == [2] and second.added_ids == [3]
    rows = target.cse()
    assert rows[2]["DI"] == "280" and rows[3]["IRC"] is None and rows[3]["PT"] == "20"

    again = target.load_cse(
        [
            {"ID": 1, "PT": "10", "DI": "290", "ED": "2015-09-01", "IRC": "80"},
            {"ID": 2, "PT": "10", "DI": "280", "ED": "2016-09-01", "IRC": "75"},
            {"ID": 3, "PT": "20", "DI": "210", "ED": "2017-01-09", "IRC": None},
        ]
    )
    assert (again.added, again.updated, again.unchanged) == (0, 0, 3)


def test_a_blank_field_clears_its_column(target: Target):
    target.load_cse([{"ID": 1, "PT": "10", "DI2": "240"}])
    counts = target.load_cse([{"ID": 1, "PT": "10", "DI2": None}])
    assert counts.updated == 1
    assert target.cse()[1]["DI2"] is None


def test_filler_columns_keep_their_value_when_the_file_is_blank(target: Target):
    target.load_cse([{"ID": 1, "PT": "10", "PA1": "20", "PA2": "30"}])
    # Blank fillers: PA1/PA2 keep their values, and the row is not even counted as updated.
    kept = target.load_cse([{"ID": 1, "PT": "10", "PA1": None, "PA2": None}])
    assert (kept.updated, kept.unchanged) == (0, 1)
    assert (target.cse()[1]["PA1"], target.cse()[1]["PA2"]) == ("20", "30")
    # A non-blank filler updates its column; the blank one still keeps its value.
    changed = target.load_cse([{"ID": 1, "PT": "10", "PA1": "10", "PA2": None}])
    assert changed.updated == 1
    assert (target.cse()[1]["PA1"], target.cse()[1]["PA2"]) == ("10", "30")


def test_fields_missing_from_the_file_leave_cse_columns_untouched(target: Target):
    target.load_cse([{"ID": 1, "PT": "10", "DI": "290", "XD": "2017-06-30", "XR": "71"}])
    # This file has no EXIT_DATE/EXIT_RESON headers: the frame has no XD/XR columns.
    counts = target.load_cse([{"ID": 1, "PT": "20", "DI": "290"}])
    assert counts.updated == 1
    row = target.cse()[1]
    assert row["PT"] == "20"
    assert row["XD"] == dt.date(2017, 6, 30) and row["XR"] == "71"


def test_a_failing_cse_load_changes_nothing(target: Target):
    target.load_cse([{"ID": 1, "PT": "10"}])
    # Student 2 is inserted first; then the update of student 1 fails (a number too big for
    # an integer column): the insert must be rolled back with it.
    with pytest.raises(Exception), target.engine.begin() as conn:  # noqa: B017, PT011 - dialects differ
        load_cse(
            conn,
            target.tables,
            target.mapping,
            frame([{"ID": 1, "PT": "20", "IRC": "99999999999999999999"}, {"ID": 2, "PT": "10", "IRC": "1"}]),
        )
    assert target.cse()[1]["PT"] == "10"
    assert count(target.engine, "CSE") == 1


# --------------------------------------------------------------------------- CSV


def svc(
    sid: int, cd: str, pr: str = "100", lo: str = "400", fq: str = "2", du: str = "60"
) -> dict[str, object]:
    """One CSV row as the transform produces it."""
    return {"ID": sid, "CD": cd, "PR": pr, "LO": lo, "FQ": fq, "DU": du}


def test_csv_add_update_remove_for_pipeline_services(target: Target):
    first = target.load_csv([svc(1, "330"), svc(1, "415"), svc(2, "450")])
    assert (first.added, first.updated, first.unchanged, first.removed) == (3, 0, 0, 0)
    assert target.csv() == [
        (1, 1, "330", "100", "400", "2", 60),
        (1, 2, "415", "100", "400", "2", 60),
        (2, 1, "450", "100", "400", "2", 60),
    ]
    assert target.links() == [(1, 1, "330|100|400"), (1, 2, "415|100|400"), (2, 1, "450|100|400")]

    # 330 changes frequency (update), 415 is gone (remove), 510 is new (add after SQ 2).
    second = target.load_csv([svc(1, "330", fq="3"), svc(1, "510"), svc(2, "450")])
    assert (second.added, second.updated, second.unchanged, second.removed) == (1, 1, 1, 1)
    assert second.updated_ids == [1] and second.added_ids == [1]
    assert target.csv() == [
        (1, 1, "330", "100", "400", "3", 60),
        (1, 3, "510", "100", "400", "2", 60),
        (2, 1, "450", "100", "400", "2", 60),
    ]
    assert [(i, sq) for i, sq, _ in target.links()] == [(1, 1), (1, 3), (2, 1)]

    again = target.load_csv([svc(1, "330", fq="3"), svc(1, "510"), svc(2, "450")])
    assert (again.added, again.updated, again.unchanged, again.removed) == (0, 0, 3, 0)


def test_hand_entered_services_are_never_touched_and_new_sq_follows_them(target: Target):
    # Entered in Aeries by hand: no CASEMIS_SERVICE_LINK row.
    insert(
        target.engine, "CSV", [{"ID": 1, "SQ": 7, "CD": "330", "PR": "100", "LO": "400", "FQ": "9", "DU": 5}]
    )
    counts = target.load_csv([svc(1, "415"), svc(1, "510")])
    assert (counts.added, counts.removed) == (2, 0)
    assert target.csv() == [
        (1, 7, "330", "100", "400", "9", 5),
        (1, 8, "415", "100", "400", "2", 60),
        (1, 9, "510", "100", "400", "2", 60),
    ]
    # The student is reconciled and the file no longer lists 415 or 510: only the
    # pipeline's rows go; the hand-entered one stays as it was.
    target.load_csv([svc(1, "860")])
    assert target.csv() == [(1, 7, "330", "100", "400", "9", 5), (1, 10, "860", "100", "400", "2", 60)]
    assert target.links() == [(1, 10, "860|100|400")]


def test_students_not_reconciled_keep_their_services(target: Target):
    target.load_csv([svc(1, "330"), svc(1, "415"), svc(2, "450"), svc(2, "510")])
    # Student 1 is not reconciled (e.g. one of its rows was rejected): 415 stays.
    counts = target.load_csv([svc(1, "330"), svc(2, "450")], reconcile={2})
    assert counts.removed == 1
    assert [(i, cd) for i, _, cd, *_ in target.csv()] == [(1, "330"), (1, "415"), (2, "450")]


def test_a_link_whose_csv_row_was_deleted_by_hand_is_cleaned_up(target: Target):
    target.load_csv([svc(1, "330"), svc(1, "415")])
    with target.engine.begin() as conn:
        conn.execute(target.tables.csv.delete().where(target.tables.csv.c.SQ == 1))
    assert [(i, sq) for i, sq, _ in target.links()] == [(1, 1), (1, 2)]
    # The file still lists 330: the stale link goes and 330 comes back as a new row.
    counts = target.load_csv([svc(1, "330"), svc(1, "415")])
    assert (counts.added, counts.unchanged, counts.removed) == (1, 1, 0)
    assert [(i, sq, cd) for i, sq, cd, *_ in target.csv()] == [(1, 2, "415"), (1, 3, "330")]
    assert target.links() == [(1, 2, "415|100|400"), (1, 3, "330|100|400")]


def test_a_stale_link_for_a_student_not_in_the_file_is_cleaned_up(target: Target):
    target.load_csv([svc(1, "330"), svc(2, "450")])
    with target.engine.begin() as conn:
        conn.execute(target.tables.csv.delete().where(target.tables.csv.c.ID == 2))
    target.load_csv([svc(1, "330")])
    assert target.links() == [(1, 1, "330|100|400")]
