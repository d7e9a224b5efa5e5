"""Matching tableA rows to Aeries students (``casemis.matching``), like the Aeries import does.

Rules under test: SSID -> ``STU.CID`` first, then STUDENT_ID -> ``STU.ID``; soft-deleted STU
rows never match; several STU rows with one ID are one student; a CID shared by two IDs
identifies nobody; duplicates (same SSID, same STUDENT_ID, two rows on one student) are
reported, not loaded; a row with validation errors is an error whatever else it is.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from casemis.aeries import build_tables
from casemis.db import engine_from_url
from casemis.matching import (
    DUPLICATE,
    ERROR,
    MATCHED,
    UNMATCHED,
    match_services,
    match_students,
    read_students,
)
from casemis.seed import init_db
from tests.import_helpers import write_stu


def a_frame(rows: list[tuple[str | None, str | None]]) -> pd.DataFrame:
    """A validated-looking tableA frame: (STUDENT_ID, SSID) per row, lines from 2."""
    return pd.DataFrame(
        {
            "STUDENT_ID": pd.Series([r[0] for r in rows], dtype="str"),
            "SSID": pd.Series([r[1] for r in rows], dtype="str"),
            "SELPA_CODE": pd.Series(["3410"] * len(rows), dtype="str"),
            "__line__": range(2, len(rows) + 2),
        }
    )


def stu(rows: list[tuple[int, str | None]]) -> pd.DataFrame:
    """Live STU rows as :func:`read_students` returns them: (ID, CID)."""
    frame = pd.DataFrame(rows, columns=["ID", "CID"])
    frame["ID"] = frame["ID"].astype("int64")
    frame["CID"] = frame["CID"].astype("str")
    return frame


def outcomes(frame: pd.DataFrame) -> list[tuple[str, object]]:
    """(OUTCOME, STU_ID or None) per row, for compact assertions."""
    return [
        (o, None if pd.isna(s) else int(s)) for o, s in zip(frame["OUTCOME"], frame["STU_ID"], strict=True)
    ]


def test_ssid_is_tried_before_student_id():
    # The SSID points at 200, the STUDENT_ID at 100: the SSID wins.
    students = stu([(100, "1111111111"), (200, "2222222222")])
    result = match_students(a_frame([("100", "2222222222")]), set(), students)
    assert outcomes(result.frame) == [(MATCHED, 200)]
    assert result.frame.loc[0, "MATCHED_BY"] == "SSID"


def test_student_id_is_used_when_ssid_is_blank_or_unknown():
    students = stu([(100, "1111111111"), (200, None)])
    frame = a_frame([("200", None), ("100", "9999999999")])
    result = match_students(frame, set(), students)
    assert outcomes(result.frame) == [(MATCHED, 200), (MATCHED, 100)]
    assert list(result.frame["MATCHED_BY"]) == ["STUDENT_ID", "STUDENT_ID"]


def test_no_match_is_unmatched_with_a_reason():
    result = match_students(a_frame([("300", "3333333333")]), set(), stu([(100, "1111111111")]))
    assert outcomes(result.frame) == [(UNMATCHED, None)]
    assert "no Aeries student" in result.frame.loc[0, "REASON"]
    assert result.count(UNMATCHED) == 1 and result.count(MATCHED) == 0


def test_student_with_two_stu_rows_is_one_student():
    # Two schools: two STU rows with the same ID and CID. Not ambiguous, not a duplicate.
    students = stu([(100, "1111111111"), (100, "1111111111")])
    result = match_students(a_frame([("100", "1111111111")]), set(), students)
    assert outcomes(result.frame) == [(MATCHED, 100)]


def test_cid_shared_by_two_ids_does_not_match():
    students = stu([(100, "5555555555"), (200, "5555555555")])
    result = match_students(a_frame([("999", "5555555555")]), set(), students)
    assert outcomes(result.frame) == [(UNMATCHED, None)]
    assert result.frame.loc[0, "REASON"] == "the SSID belongs to more than one Aeries student"


def test_ambiguous_cid_falls_back_to_student_id():
    # The ambiguous SSID identifies nobody; the STUDENT_ID still can (Aeries' second key).
    students = stu([(100, "5555555555"), (200, "5555555555")])
    result = match_students(a_frame([("200", "5555555555")]), set(), students)
    assert outcomes(result.frame) == [(MATCHED, 200)]
    assert result.frame.loc[0, "MATCHED_BY"] == "STUDENT_ID"


def test_student_id_that_is_not_a_number_never_matches():
    result = match_students(a_frame([("A100", None), ("100", None)]), set(), stu([(100, None)]))
    assert outcomes(result.frame) == [(UNMATCHED, None), (MATCHED, 100)]


def test_same_ssid_twice_are_both_duplicates():
    students = stu([(100, "1111111111"), (200, "2222222222")])
    frame = a_frame([("100", "1111111111"), ("200", "1111111111"), ("200", "2222222222")])
    result = match_students(frame, set(), students)
    assert list(result.frame["OUTCOME"]) == [DUPLICATE, DUPLICATE, DUPLICATE]
    assert result.frame.loc[0, "REASON"] == "the SSID appears more than once in the file"
    assert result.frame["STU_ID"].isna().all()


def test_same_student_id_twice_are_both_duplicates():
    students = stu([(100, None), (300, "3333333333")])
    frame = a_frame([("100", None), ("100", None), ("300", "3333333333")])
    result = match_students(frame, set(), students)
    assert outcomes(result.frame) == [(DUPLICATE, None), (DUPLICATE, None), (MATCHED, 300)]
    assert result.frame.loc[0, "REASON"] == "the STUDENT_ID appears more than once in the file"


def test_two_rows_landing_on_the_same_student_are_duplicates():
    # Different SSID and STUDENT_ID in the file, but both find Aeries student 100.
    students = stu([(100, "1111111111")])
    frame = a_frame([("555", "1111111111"), ("100", None)])
    result = match_students(frame, set(), students)
    assert list(result.frame["OUTCOME"]) == [DUPLICATE, DUPLICATE]
    assert set(result.frame["REASON"]) == {"two rows match the same Aeries student"}


def test_blank_keys_are_not_duplicates_of_each_other():
    students = stu([(100, None), (200, None)])
    result = match_students(a_frame([("100", None), ("200", None)]), set(), students)
    assert outcomes(result.frame) == [(MATCHED, 100), (MATCHED, 200)]


def test_errors_take_precedence_over_duplicates_and_matches():
    students = stu([(100, "1111111111"), (200, "2222222222")])
    frame = a_frame([("100", "1111111111"), ("101", "1111111111"), ("200", "2222222222")])
    # Line 3 is a duplicate of line 2 and has a validation error; line 4 would match.
    result = match_students(frame, {3, 4}, students)
    assert list(result.frame["OUTCOME"]) == [DUPLICATE, ERROR, ERROR]
    assert list(result.frame["REASON"])[1:] == ["the row has validation errors"] * 2
    assert result.frame["STU_ID"].isna().all()


@pytest.fixture
def engine(db_url: str, tmp_path: Path):
    """A target database with STU seeded (DEL=1 on student 400)."""
    eng = engine_from_url(db_url)
    stu_csv = write_stu(
        tmp_path / "stu.csv",
        [
            (100, "1111111111", 1, 1, 0),
            (100, "1111111111", 2, 1, 0),
            (400, "4444444444", 1, 4, 1),
            (500, "", 1, 5, 0),
        ],
    )
    init_db(eng, stu_csv)
    yield eng
    eng.dispose()


def test_soft_deleted_stu_rows_never_match(engine):
    with engine.connect() as conn:
        students = read_students(conn, build_tables())
    assert sorted(students["ID"].unique()) == [100, 500]
    assert 400 not in set(students["ID"])
    # Student 400's SSID and STUDENT_ID both point only at its deleted STU row.
    frame = a_frame([("400", "4444444444"), ("100", None), ("500", None)])
    result = match_students(frame, set(), students)
    assert outcomes(result.frame) == [(UNMATCHED, None), (MATCHED, 100), (MATCHED, 500)]


def test_read_students_reads_blank_cid_as_missing(engine):
    with engine.connect() as conn:
        students = read_students(conn, build_tables())
    assert students.loc[students["ID"] == 500, "CID"].isna().all()
    # A blank SSID in the file must not match a blank CID in STU.
    result = match_students(a_frame([("999", None)]), set(), students)
    assert outcomes(result.frame) == [(UNMATCHED, None)]


def services_frame(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """A tableB frame: (STUDENT_ID, SERVICE, SERV_PROV, SERV_LOC) per row, lines from 2."""
    return pd.DataFrame(
        {
            "SELPA_CODE": pd.Series(["3410"] * len(rows), dtype="str"),
            "STUDENT_ID": pd.Series([r[0] for r in rows], dtype="str"),
            "SERVICE": pd.Series([r[1] for r in rows], dtype="str"),
            "SERV_PROV": pd.Series([r[2] for r in rows], dtype="str"),
            "SERV_LOC": pd.Series([r[3] for r in rows], dtype="str"),
            "__line__": range(2, len(rows) + 2),
        }
    )


def test_services_follow_their_student_and_report_duplicates_and_errors():
    students = match_students(
        a_frame([("100", None), ("200", None), ("300", None)]), set(), stu([(100, None), (200, None)])
    ).frame
    services = services_frame(
        [
            ("100", "330", "100", "400"),
            ("100", "415", "100", "400"),
            ("200", "330", "100", "400"),  # duplicate of the next row
            ("200", "330", "100", "400"),
            ("300", "330", "100", "400"),  # student 300 is not in STU
            ("100", "450", "100", "400"),  # validation error
        ]
    )
    ident = ["SERVICE", "SERV_PROV", "SERV_LOC"]
    result = match_services(services, {7}, students, ident, ["SELPA_CODE", "STUDENT_ID"])
    assert list(result["OUTCOME"]) == [MATCHED, MATCHED, DUPLICATE, DUPLICATE, UNMATCHED, ERROR]
    assert [None if pd.isna(v) else int(v) for v in result["STU_ID"]] == [100, 100, 200, 200, None, 100]


def test_services_cannot_link_through_a_blank_or_missing_student_id():
    # Student 100 was matched by SSID and its tableA row has no STUDENT_ID.
    students = match_students(a_frame([(None, "1111111111")]), set(), stu([(100, "1111111111")])).frame
    services = services_frame([("", "330", "100", "400")])
    services["STUDENT_ID"] = pd.Series([None], dtype="str")
    ident = ["SERVICE", "SERV_PROV", "SERV_LOC"]
    result = match_services(services, set(), students, ident, ["SELPA_CODE", "STUDENT_ID"])
    assert list(result["OUTCOME"]) == [UNMATCHED] and result["STU_ID"].isna().all()
    # A tableA keyed by SSID only (no STUDENT_ID column at all): unmatched, with the reason.
    no_id = students.drop(columns=["STUDENT_ID"])
    result = match_services(
        services_frame([("100", "330", "100", "400")]), set(), no_id, ident, ["SELPA_CODE", "STUDENT_ID"]
    )
    assert list(result["OUTCOME"]) == [UNMATCHED]
    assert "tableA has no SELPA_CODE + STUDENT_ID column" in result.loc[0, "REASON"]
