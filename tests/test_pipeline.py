"""The whole import through ``casemis.pipeline`` (what the DAG's tasks and the CLI call).

Runs on SQLite and PostgreSQL (``db_url``) with the default district of
``tests/import_helpers.py``: report attachments, re-runs, changed files, ``abort`` mode,
students with rejected service rows, dry runs, and a real database fault in the middle of
``load_table_b`` followed by a retry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from casemis import report as rpt
from casemis.db import engine_from_url
from casemis.pipeline import RunContext, guarded, load_table_b_step, now_iso, report_step, run_all
from casemis.seed import init_db
from tests.import_helpers import (
    MATCHED_IDS,
    TABLE_A_FIELDS,
    by_id,
    count,
    insert,
    select_all,
    table_a_rows,
    write_csv,
    write_stu,
    write_table_a,
    write_table_b,
)


@dataclass
class District:
    """A target database seeded with the default district, and a way to run imports into it."""

    engine: sa.Engine
    root: Path
    runs: list[RunContext] = field(default_factory=list)

    def run(
        self,
        table_a: Path | None = None,
        table_b: Path | None = None,
        *,
        services: bool = True,
        **options: Any,
    ) -> tuple[dict[str, Any], RunContext]:
        """One whole import (default files unless given); returns (summary, context)."""
        n = len(self.runs) + 1
        ctx = RunContext(
            run_id=f"test-run-{n}",
            staging_root=str(self.root / "staging"),
            report_root=str(self.root / "reports"),
            started_at=now_iso(),
            include_services=services,
            **options,
        )
        self.runs.append(ctx)
        a = table_a or write_table_a(self.root / f"in{n}" / "tableA.csv")
        b = table_b or write_table_b(self.root / f"in{n}" / "tableB.csv")
        return run_all(ctx, self.engine, a, b if services else None), ctx

    def cse(self) -> dict[int, dict[str, Any]]:
        """CSE rows by ID."""
        return by_id(select_all(self.engine, "CSE"))

    def csv(self) -> list[tuple[Any, ...]]:
        """CSV rows as (ID, SQ, CD, PR, LO, FQ, DU), in key order."""
        return [
            (r["ID"], r["SQ"], r["CD"], r["PR"], r["LO"], r["FQ"], r["DU"])
            for r in select_all(self.engine, "CSV", ("ID", "SQ"))
        ]

    def links(self) -> list[tuple[Any, ...]]:
        """The service register, (ID, SQ, SERVICE_KEY)."""
        return [
            (r["ID"], r["SQ"], r["SERVICE_KEY"])
            for r in select_all(self.engine, "CASEMIS_SERVICE_LINK", ("ID", "SQ"))
        ]


@pytest.fixture
def district(db_url: str, tmp_path: Path) -> Iterator[District]:
    """STU seeded; student 100009 has a CSE row and 100001 a CSV row entered by hand."""
    engine = engine_from_url(db_url)
    init_db(engine, write_stu(tmp_path / "stu.csv"))
    insert(engine, "CSE", [{"ID": 100009, "PT": "10", "DI": "240"}])
    insert(
        engine, "CSV", [{"ID": 100001, "SQ": 5, "CD": "330", "PR": "100", "LO": "100", "FQ": "1", "DU": 30}]
    )
    yield District(engine, tmp_path)
    engine.dispose()


def attachment(ctx: RunContext, name: str) -> pd.DataFrame:
    """One CSV attachment of the run's report, every cell as text ('' for blank)."""
    return pd.read_csv(ctx.report_dir / name, dtype=str, keep_default_na=False, encoding="utf-8-sig")


def column(frame: pd.DataFrame, name: str) -> list[str]:
    """One column as a list of text."""
    return frame[name].tolist()


FIRST_RUN_COUNTS = {
    "table_a": {
        "read": 9,
        "matched": 4,
        "unmatched": 2,
        "duplicates": 2,
        "errors": 1,
        "added": 4,
        "updated": 0,
        "unchanged": 0,
    },
    "table_b": {
        "read": 6,
        "matched": 4,
        "unmatched": 2,
        "duplicates": 0,
        "errors": 0,
        "added": 4,
        "updated": 0,
        "unchanged": 0,
        "removed": 0,
    },
}


def test_first_import_loads_matched_rows_and_reports_every_row(district: District):
    summary, ctx = district.run()
    assert summary["status"] == "success", summary["message"]
    assert summary["counts"] == FIRST_RUN_COUNTS
    assert sorted(district.cse()) == [*MATCHED_IDS, 100009]
    assert district.cse()[100007]["PT"] == "10" and district.cse()[100009]["DI"] == "240"
    # Student 100001's new services follow the hand-entered SQ 5, which is left alone.
    assert district.csv() == [
        (100001, 5, "330", "100", "100", "1", 30),
        (100001, 6, "330", "100", "400", "2", 60),
        (100001, 7, "415", "100", "100", "1", 30),
        (100002, 1, "450", "200", "100", "2", 45),
        (100003, 1, "330", "100", "400", "1", 30),
    ]
    assert [(i, sq) for i, sq, _ in district.links()] == [(100001, 6), (100001, 7), (100002, 1), (100003, 1)]

    imported = attachment(ctx, rpt.STUDENTS_IMPORTED)
    assert column(imported, "OriginalLineNumber") == ["2", "3", "4", "7"]
    assert column(imported, "StudentID") == [str(i) for i in MATCHED_IDS]
    assert column(imported, "SSID") == ["1000000001", "1000000002", "", "1000000099"]
    unmatched = attachment(ctx, rpt.STUDENTS_UNMATCHED)
    assert column(unmatched, "OriginalLineNumber") == ["5", "6"]
    assert column(unmatched, "StudentID") == ["100004", "555555"]
    assert "more than one Aeries student" in column(unmatched, "Reason")[1]
    duplicates = attachment(ctx, rpt.STUDENTS_DUPLICATES)
    assert column(duplicates, "OriginalLineNumber") == ["8", "9"]
    assert set(column(duplicates, "Reason")) == {"the SSID appears more than once in the file"}
    not_in_file = attachment(ctx, rpt.STUDENTS_NOT_IN_FILE)
    assert column(not_in_file, "StudentID") == ["100009"]
    assert column(not_in_file, "Disability") == ["240"]
    errors = attachment(ctx, rpt.STUDENTS_ERRORS)
    assert errors[["OriginalLineNumber", "Column", "Value"]].values.tolist() == [["10", "PLAN_TYPE", "12"]]

    services = attachment(ctx, rpt.SERVICES_IMPORTED)
    assert column(services, "OriginalLineNumber") == ["2", "3", "4", "5"]
    assert column(services, "AeriesStudentID") == ["100001", "100001", "100002", "100003"]
    assert column(attachment(ctx, rpt.SERVICES_UNMATCHED), "OriginalLineNumber") == ["6", "7"]
    assert attachment(ctx, rpt.SERVICES_DUPLICATES).empty
    assert attachment(ctx, rpt.SERVICES_ERRORS).empty

    saved = json.loads((ctx.report_dir / rpt.SUMMARY_NAME).read_text(encoding="utf-8"))
    listed = {a["name"]: a["rows"] for a in saved["attachments"]}
    assert listed[rpt.STUDENTS_IMPORTED] == 4 and listed[rpt.STUDENTS_NOT_IN_FILE] == 1
    assert saved["counts"] == FIRST_RUN_COUNTS


def test_second_run_of_the_same_files_changes_nothing(district: District):
    district.run()
    cse, csv, links = district.cse(), district.csv(), district.links()
    summary, _ = district.run()
    assert summary["status"] == "success"
    a, b = summary["counts"]["table_a"], summary["counts"]["table_b"]
    assert (a["added"], a["updated"], a["unchanged"]) == (0, 0, 4)
    assert (b["added"], b["updated"], b["unchanged"], b["removed"]) == (0, 0, 4, 0)
    assert (district.cse(), district.csv(), district.links()) == (cse, csv, links)
    assert summary["identical_to_last_import"] is True


def test_changed_students_are_updated_and_no_others(district: District):
    district.run()
    before = district.cse()
    changes = {"100002": {"DISABILIT1": "240"}, "100007": {"PLAN_TYPE": "20", "IN_REGCLS": "040"}}
    summary, _ = district.run(write_table_a(district.root / "changed" / "tableA.csv", changes))
    assert summary["counts"]["table_a"]["updated"] == 2
    assert summary["counts"]["table_a"]["unchanged"] == 2
    after = district.cse()
    assert sorted(i for i in after if after[i] != before[i]) == [100002, 100007]
    assert after[100002]["DI"] == "240"
    assert (after[100007]["PT"], after[100007]["IRC"]) == ("20", 40)


def test_abort_mode_with_one_bad_row_loads_nothing(district: District):
    cse_before, csv_before = district.cse(), district.csv()
    summary, ctx = district.run(on_error="abort")
    assert summary["status"] == "rejected"
    assert "on_error is abort" in summary["message"]
    assert (district.cse(), district.csv()) == (cse_before, csv_before)
    # The report still says which row failed, and lists nothing as imported.
    errors = attachment(ctx, rpt.STUDENTS_ERRORS)
    assert column(errors, "OriginalLineNumber") == ["10"]
    assert not (ctx.report_dir / rpt.STUDENTS_IMPORTED).exists()


def test_a_rejected_file_loads_nothing(district: District):
    bad = district.root / "bad" / "tableA.csv"
    bad.parent.mkdir()
    bad.write_text("LAST_NAME,FIRST_NAME\nGarcia,Sofia\n", encoding="utf-8")
    summary, _ = district.run(bad)
    assert summary["status"] == "rejected"
    assert "Import rejected" in summary["message"]
    assert count(district.engine, "CSE") == 1 and count(district.engine, "CSV") == 1


def test_student_with_a_rejected_services_row_is_not_reconciled(district: District):
    district.run()
    before = district.csv()
    services = [
        ("100001", "330", "100", "400", "abc", "60"),  # invalid SERV_FREQ; 415 left out
        ("100002", "450", "200", "100", "2", "045"),
        ("100003", "510", "100", "400", "1", "30"),  # 330 replaced by 510
    ]
    summary, _ = district.run(table_b=write_table_b(district.root / "b2" / "tableB.csv", services))
    b = summary["counts"]["table_b"]
    assert (b["errors"], b["added"], b["removed"], b["unchanged"]) == (1, 1, 1, 1)
    after = district.csv()
    # Student 100001 keeps both pipeline services (330 unchanged, 415 not removed).
    assert [r for r in after if r[0] == 100001] == [r for r in before if r[0] == 100001]
    assert [r[2] for r in after if r[0] == 100003] == ["510"]


def test_dry_run_commits_nothing_but_reports_the_counts(district: District):
    cse_before, csv_before = district.cse(), district.csv()
    summary, ctx = district.run(dry_run=True)
    assert summary["status"] == "success" and summary["dry_run"] is True
    assert summary["counts"] == FIRST_RUN_COUNTS
    assert (district.cse(), district.csv(), district.links()) == (cse_before, csv_before, [])
    assert "dry run" in summary["message"]
    # A dry run is not the "last import": the next real run is not called identical.
    summary, _ = district.run()
    assert summary["identical_to_last_import"] is None


def test_table_a_keyed_by_ssid_only_imports_students_and_reports_services_unmatched(district: District):
    fields = [f for f in TABLE_A_FIELDS if f != "STUDENT_ID"]
    table_a = write_csv(district.root / "ssid" / "tableA.csv", table_a_rows(), fields)
    summary, ctx = district.run(table_a)
    assert summary["status"] == "success", summary["message"]
    # Without STUDENT_ID only the SSID can match: 100001, 100002 (and 100007's SSID is unknown).
    assert summary["counts"]["table_a"]["added"] == 2
    assert sorted(district.cse()) == [100001, 100002, 100009]
    b = summary["counts"]["table_b"]
    assert (b["read"], b["unmatched"], b["added"]) == (6, 6, 0)
    assert count(district.engine, "CSV") == 1
    reasons = set(column(attachment(ctx, rpt.SERVICES_UNMATCHED), "Reason"))
    assert reasons == {"tableA has no SELPA_CODE + STUDENT_ID column to link services to its students"}


def test_without_services_file_csv_is_left_alone(district: District):
    summary, _ = district.run(services=False)
    assert summary["status"] == "success"
    assert summary["counts"]["table_b"] is None
    assert count(district.engine, "CSV") == 1


# --------------------------------------------------------------------------- fault injection

SQLITE_FAULT = (
    "CREATE TRIGGER casemis_test_fail BEFORE INSERT ON CSV WHEN NEW.CD = '415' "
    "BEGIN SELECT RAISE(ABORT, 'injected fault'); END;"
)
POSTGRES_FAULT = (
    """CREATE FUNCTION casemis_test_fail() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN IF NEW."CD" = '415' THEN RAISE EXCEPTION 'injected fault'; END IF; RETURN NEW; END $$""",
    'CREATE TRIGGER casemis_test_fail BEFORE INSERT ON "CSV" FOR EACH ROW EXECUTE FUNCTION casemis_test_fail()',
)


def inject_fault(engine: sa.Engine) -> None:
    """A real database fault: inserting a CSV row with service 415 fails (a trigger)."""
    statements = (SQLITE_FAULT,) if engine.dialect.name == "sqlite" else POSTGRES_FAULT
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


def remove_fault(engine: sa.Engine) -> None:
    """Drop the trigger again (the "fix" before the retry)."""
    statement = "DROP TRIGGER casemis_test_fail"
    if engine.dialect.name != "sqlite":
        statement += ' ON "CSV"'
    with engine.begin() as conn:
        conn.execute(sa.text(statement))


def test_fault_in_load_table_b_leaves_csv_unchanged_and_retry_succeeds(district: District):
    district.run()
    before_csv, before_links = district.csv(), district.links()
    services = [
        ("100001", "330", "100", "400", "3", "60"),  # update (frequency); 415 removed
        ("100002", "450", "200", "100", "2", "045"),  # unchanged
        ("100002", "510", "100", "400", "1", "30"),  # insert: succeeds first
        ("100003", "330", "100", "400", "1", "30"),  # unchanged
        ("100003", "415", "100", "400", "1", "30"),  # insert: the trigger refuses it
    ]
    table_b = write_table_b(district.root / "b2" / "tableB.csv", services)
    changes = {"100002": {"DISABILIT1": "240"}}
    inject_fault(district.engine)
    summary, ctx = district.run(write_table_a(district.root / "a2" / "tableA.csv", changes), table_b)

    assert summary["status"] == "failed"
    assert "load_table_b" in summary["message"] and "CSV was not changed" in summary["message"]
    # Everything load_table_b did before the fault (delete, update, first insert) rolled back.
    assert (district.csv(), district.links()) == (before_csv, before_links)
    assert district.cse()[100002]["DI"] == "240"  # CSE was loaded by its own transaction

    remove_fault(district.engine)
    counts = guarded(ctx, "load_table_b", lambda: load_table_b_step(ctx, district.engine))
    assert counts == {"added": 2, "updated": 1, "unchanged": 2, "removed": 1}
    assert [(r[0], r[2], r[5]) for r in district.csv()] == [
        (100001, "330", "1"),  # the hand-entered service, untouched
        (100001, "330", "3"),
        (100002, "450", "2"),
        (100002, "510", "1"),
        (100003, "330", "1"),
        (100003, "415", "1"),
    ]
    final = report_step(ctx, district.engine)
    assert final["status"] == "success"
    assert final["counts"]["table_b"]["added"] == 2 and final["counts"]["table_b"]["removed"] == 1
    assert not list(ctx.work.glob("*.failed.json"))
