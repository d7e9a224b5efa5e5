"""Tests for casemis.report: the report folder, CSV safety, text/HTML rendering, subjects."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from casemis import report
from casemis.report import (
    SERVICES_ERRORS,
    SERVICES_IMPORTED,
    STUDENTS_DUPLICATES,
    STUDENTS_ERRORS,
    STUDENTS_IMPORTED,
    STUDENTS_NOT_IN_FILE,
    STUDENTS_UNMATCHED,
    neutralise_cell,
    render_html,
    render_text,
    subject,
    write_report,
)

SHA_A = "a1" * 32
SHA_B = "b2" * 32
COUNTS_A = {
    "read": 1300,
    "matched": 1251,
    "unmatched": 31,
    "duplicates": 4,
    "errors": 14,
    "added": 17,
    "updated": 203,
    "unchanged": 1014,
}
COUNTS_B = {
    "read": 4412,
    "matched": 4333,
    "unmatched": 52,
    "duplicates": 9,
    "errors": 18,
    "added": 11,
    "updated": 12,
    "unchanged": 4298,
    "removed": 7,
}


def make_summary(**changes: Any) -> dict[str, Any]:
    """A complete success summary in the shape the pipeline builds; changes override keys."""
    summary: dict[str, Any] = {
        "run_id": "scheduled__2026-12-05T02:30:00+00:00",
        "status": "success",
        "trigger": "scheduled",
        "dry_run": False,
        "on_error": "skip_rows",
        "completed_at": "2026-12-05T02:31:00+00:00",
        "timezone": "America/Los_Angeles",
        "message": "Imported tableA and tableB",
        "not_refreshed_since": None,
        "identical_to_last_import": False,
        "files": [
            {
                "kind": "table_a",
                "label": "Student Data (tableA)",
                "name": "tableA.csv",
                "size": 123456,
                "sha256": SHA_A,
            },
            {
                "kind": "table_b",
                "label": "Student Services Data (tableB)",
                "name": "tableB.csv",
                "size": 98765,
                "sha256": SHA_B,
            },
        ],
        "counts": {"table_a": dict(COUNTS_A), "table_b": dict(COUNTS_B)},
        "warnings": {"table_a": ["Unrecognised header EXTRA_COL ignored"], "table_b": []},
        "fatal": {"table_a": [], "table_b": []},
    }
    summary.update(changes)
    return summary


def make_attachments() -> dict[str, pd.DataFrame]:
    """Attachments as the pipeline hands them over, including empty ones."""
    imported = pd.DataFrame(
        {
            "OriginalLineNumber": [2, 3],
            "SSID": ["1234567890", "2345678901"],
            "FirstName": ["José", "Ana"],
            "LastName": ["Núñez", "Lee"],
            "Birthdate": ["2012-03-04", "2011-05-06"],
            "Grade": ["05", "06"],
            "StudentID": [1001, 1002],
        }
    )
    errors = pd.DataFrame(
        {
            "OriginalLineNumber": [7],
            "Column": ["BIRTHDATE"],
            "Value": ["=1+1"],
            "Message": ["expected a real date"],
        }
    )
    return {
        STUDENTS_IMPORTED: imported,
        STUDENTS_UNMATCHED: pd.DataFrame(columns=list(report.ATTACHMENT_COLUMNS[STUDENTS_UNMATCHED])),
        STUDENTS_DUPLICATES: pd.DataFrame(columns=list(report.ATTACHMENT_COLUMNS[STUDENTS_DUPLICATES])),
        STUDENTS_NOT_IN_FILE: pd.DataFrame({"StudentID": [55], "LastName": ["Smith"]}),
        STUDENTS_ERRORS: errors,
        SERVICES_IMPORTED: pd.DataFrame({"OriginalLineNumber": [2], "SERVICE": ["330"]}),
        SERVICES_ERRORS: pd.DataFrame(columns=list(report.ERROR_COLUMNS)),
    }


def read_csv_text(path: Path) -> str:
    """An attachment's text without the UTF-8 byte-order mark."""
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf"), "attachments carry a BOM so Excel reads UTF-8"
    return data[3:].decode("utf-8")


def test_write_report_writes_every_file(tmp_path: Path) -> None:
    """All report files and CSVs exist where ReportFiles says, and summary.json lists them."""
    report_dir = tmp_path / "reports" / "run-1"  # does not exist yet
    attachments = make_attachments()
    summary = make_summary()
    original = copy.deepcopy(summary)

    files = write_report(report_dir, summary, attachments)

    assert files.summary_path == report_dir / "summary.json"
    assert files.text_path == report_dir / "report.txt"
    assert files.html_path == report_dir / "report.html"
    assert files.attachment_paths == [report_dir / name for name in attachments]
    for path in [files.summary_path, files.text_path, files.html_path, *files.attachment_paths]:
        assert path.is_file(), path
        assert path.stat().st_size > 0, path
    saved = json.loads(files.summary_path.read_text(encoding="utf-8"))
    assert saved["run_id"] == summary["run_id"]
    assert saved["counts"]["table_b"]["removed"] == 7
    assert saved["attachments"] == [{"name": name, "rows": len(frame)} for name, frame in attachments.items()]
    assert summary == original, "write_report must not modify the caller's summary"
    assert files.text_path.read_text(encoding="utf-8") == render_text(saved)
    imported = read_csv_text(report_dir / STUDENTS_IMPORTED)
    assert imported.splitlines()[0] == "OriginalLineNumber,SSID,FirstName,LastName,Birthdate,Grade,StudentID"
    assert "2,1234567890,José,Núñez,2012-03-04,05,1001" in imported


@pytest.mark.parametrize("render", [render_text, render_html])
def test_report_shows_every_count_and_file_fingerprint(render: Any) -> None:
    """Each count of both files, both SHA-256 values, sizes and names appear in the report."""
    body = render({**make_summary(), "attachments": [{"name": STUDENTS_ERRORS, "rows": 1}]})
    for counts in (COUNTS_A, COUNTS_B):
        for value in counts.values():
            assert f"{value:,}" in body
    for label in ("Read", "Matched", "Unmatched", "Duplicates", "Errors", "Added", "Updated", "Unchanged"):
        assert label in body
    assert "Removed" in body
    assert SHA_A in body
    assert SHA_B in body
    assert "tableA.csv" in body
    assert "tableB.csv" in body
    assert "123,456 bytes" in body
    assert "98,765 bytes" in body
    assert "Friday, December 4, 2026 6:31 PM PST" in body
    assert "Scheduled run" in body
    assert "Unrecognised header EXTRA_COL ignored" in body
    assert "Special_Ed_Students_Errors.csv (1 row)" in body
    assert "DRY RUN" not in body


def test_text_counts_table_lines_up_per_file() -> None:
    """The text table puts tableA's and tableB's numbers on the same labelled line."""
    text = render_text(make_summary())
    read_line = next(line for line in text.splitlines() if line.strip().startswith("Read "))
    assert read_line.split() == ["Read", "1,300", "4,412"]
    removed_line = next(line for line in text.splitlines() if line.strip().startswith("Removed "))
    assert removed_line.split() == ["Removed", "-", "7"]


def test_services_column_absent_when_table_b_not_processed() -> None:
    """With counts.table_b None the report and subject only speak about students."""
    summary = make_summary(
        counts={"table_a": dict(COUNTS_A), "table_b": None}, files=make_summary()["files"][:1]
    )
    text = render_text(summary)
    assert "Services (tableB)" not in text
    assert "Removed" not in text
    assert subject(summary) == "CASEMIS import succeeded: 1,234 students; 49 rows need review"


@pytest.mark.parametrize("render", [render_text, render_html])
def test_dry_run_banner_and_freshness_lines(render: Any) -> None:
    """Dry runs get a banner; identical / not refreshed files get their notices."""
    body = render(
        make_summary(
            dry_run=True,
            identical_to_last_import=True,
            not_refreshed_since="2026-11-30T12:05:00+00:00",
            trigger="manual",
            on_error="abort",
        )
    )
    assert "DRY RUN: nothing was written to Aeries" in body
    assert "identical to the last successful import" in body
    assert "not been refreshed since Monday, November 30, 2026 4:05 AM PST" in body
    assert "Manual run" in body
    assert "any row error aborts the whole import" in body


def test_html_escapes_every_value() -> None:
    """Script tags and quotes from files, messages and warnings are escaped, never live."""
    evil = '<script>alert("x")</script>'
    summary = make_summary(
        status="rejected",
        message=f"Import rejected: header {evil}",
        run_id=f"manual__{evil}",
        files=[{"kind": "table_a", "label": evil, "name": f"{evil}.csv", "size": 1, "sha256": SHA_A}],
        warnings={"table_a": [evil], "table_b": []},
        fatal={"table_a": [f"Missing key header {evil}"], "table_b": []},
        attachments=[{"name": "x.csv", "rows": 0}],
    )
    page = render_html(summary)
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert page.count("&lt;script&gt;") >= 5  # subject, title, message, run id, file, warnings, fatal


def test_dates_use_configured_timezone_and_daylight_time() -> None:
    """Completion time is shown in the configured zone, with DST, not in UTC."""
    summer = make_summary(completed_at="2026-07-03T01:31:00+00:00")
    assert "Thursday, July 2, 2026 6:31 PM PDT" in render_text(summer)
    berlin = make_summary(timezone="Europe/Berlin")
    assert "Saturday, December 5, 2026 3:31 AM CET" in render_text(berlin)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("-", "'-"),
        ("-12", "-12"),
        ("+3.5", "+3.5"),
        ("-0.25", "-0.25"),
        ("-1e5", "-1e5"),
        ("Smith-Jones", "Smith-Jones"),
        ("", ""),
        (-12, -12),
        (None, None),
    ],
)
def test_neutralise_cell(value: Any, expected: Any) -> None:
    """Formula starters get a quote; plain numbers, other text and non-strings do not."""
    assert neutralise_cell(value) == expected


def test_csv_neutralises_cells_and_headers_but_keeps_numbers(tmp_path: Path) -> None:
    """Written CSVs carry neutralised cells and header names; -12 and +3.5 stay numbers."""
    frame = pd.DataFrame(
        {
            "=cmd|' /C calc'!A0": ["=1+1", "-12", "+3.5"],
            "@Name": ["@evil", "Ana", "\tTab"],
            "Number": [-12, 5, 7],
        }
    )
    files = write_report(tmp_path, make_summary(), {"Special_Ed_Students_Errors.csv": frame})
    back = pd.read_csv(files.attachment_paths[0], dtype=str, encoding="utf-8-sig", keep_default_na=False)
    assert list(back.columns) == ["'=cmd|' /C calc'!A0", "'@Name", "Number"]
    assert back.iloc[:, 0].tolist() == ["'=1+1", "-12", "+3.5"]
    assert back.iloc[:, 1].tolist() == ["'@evil", "Ana", "'\tTab"]
    assert back["Number"].tolist() == ["-12", "5", "7"]
    assert frame.iloc[0, 0] == "=1+1", "the caller's frame is not modified"


def test_empty_frames_give_header_only_csv(tmp_path: Path) -> None:
    """An empty attachment is still written, with just its header line."""
    columns = list(report.ATTACHMENT_COLUMNS[STUDENTS_DUPLICATES])
    files = write_report(tmp_path, make_summary(), {STUDENTS_DUPLICATES: pd.DataFrame(columns=columns)})
    text = read_csv_text(files.attachment_paths[0])
    assert text == ",".join(columns) + "\r\n"
    assert f"{STUDENTS_DUPLICATES} (0 rows)" in files.text_path.read_text(encoding="utf-8")


def test_subject_variants() -> None:
    """Success, rejected, failed and not-refreshed subjects, with the dry-run prefix."""
    assert subject(make_summary()) == (
        "CASEMIS import succeeded: 1,234 students, 4,321 services; 128 rows need review"
    )
    clean = make_summary(
        counts={
            "table_a": {**COUNTS_A, "unmatched": 0, "duplicates": 0, "errors": 0},
            "table_b": {**COUNTS_B, "unmatched": 0, "duplicates": 0, "errors": 0},
        }
    )
    assert subject(clean) == "CASEMIS import succeeded: 1,234 students, 4,321 services"
    assert subject({**clean, "dry_run": True}).startswith(
        "[DRY RUN] CASEMIS import succeeded: 1,234 students"
    )
    rejected = make_summary(
        status="rejected", message="Import rejected: tableA lacks the key headers\nSTUDENT_ID/SSID"
    )
    assert subject(rejected) == (
        "CASEMIS import REJECTED: Import rejected: tableA lacks the key headers STUDENT_ID/SSID"
    )
    assert subject(make_summary(status="failed", message="Database unreachable")) == (
        "CASEMIS import FAILED: Database unreachable"
    )
    stale = make_summary(
        status="not_refreshed", not_refreshed_since="2026-12-03T02:31:00+00:00", dry_run=True
    )
    assert subject(stale) == (
        "[DRY RUN] CASEMIS files not refreshed since Wednesday, December 2, 2026 6:31 PM PST"
    )
    long = subject(make_summary(status="failed", message="x" * 500))
    assert len(long) <= 200
    assert "\n" not in long


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    """A normal write leaves only the report files; rewriting replaces them in place."""
    write_report(tmp_path, make_summary(), make_attachments())
    files = write_report(tmp_path, make_summary(status="failed", message="second run"), make_attachments())
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == sorted(["summary.json", "report.txt", "report.html", *make_attachments()])
    assert "second run" in files.text_path.read_text(encoding="utf-8")


def test_failed_write_leaves_no_temp_file_and_no_summary(tmp_path: Path) -> None:
    """A real failure mid-report (report.html is a folder, so os.replace fails) cleans up.

    The temporary file is removed and summary.json, written last, is absent, so nobody
    mistakes the half-written folder for a complete report.
    """
    blocker = tmp_path / "report.html"
    blocker.mkdir()
    (blocker / "keep").write_text("x")
    with pytest.raises(OSError, match="report.html"):
        write_report(tmp_path, make_summary(), make_attachments())
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")]
    assert not (tmp_path / "summary.json").exists()
    assert (tmp_path / "report.txt").is_file()


def test_summary_json_accepts_numpy_counts(tmp_path: Path) -> None:
    """Counts taken straight from pandas (numpy ints) still serialise to plain JSON numbers."""
    counts = {key: np.int64(value) for key, value in COUNTS_A.items()}
    files = write_report(tmp_path, make_summary(counts={"table_a": counts, "table_b": None}), {})
    assert json.loads(files.summary_path.read_text(encoding="utf-8"))["counts"]["table_a"]["read"] == 1300
    assert files.attachment_paths == []
    assert "Attachments\n  (none)" in files.text_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["../escape.csv", "sub/x.csv", ".hidden.csv", "report.txt", "x.xlsx"])
def test_attachment_names_must_be_plain_csv_names(tmp_path: Path, name: str) -> None:
    """Names that could leave the folder or clash with report files are refused up front."""
    with pytest.raises(ValueError, match="attachment name"):
        write_report(tmp_path / "r", make_summary(), {name: pd.DataFrame()})
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
    assert not (tmp_path / "escape.csv").exists()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"completed_at": "2026-12-05T02:31:00"}, "no time zone"),
        ({"completed_at": "yesterday"}, "not an ISO 8601"),
        ({"status": "great"}, "status"),
        ({"run_id": ""}, "run_id"),
    ],
)
def test_invalid_summary_is_rejected(tmp_path: Path, changes: dict[str, Any], match: str) -> None:
    """A summary without a usable run id, status or aware completion time is refused."""
    with pytest.raises(ValueError, match=match):
        write_report(tmp_path, make_summary(**changes), {})
    assert not (tmp_path / "summary.json").exists()
