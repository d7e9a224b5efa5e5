"""Robust reading: encodings, line endings, quoting, and clear rejection of non-CSV input."""

from __future__ import annotations

from pathlib import Path

import pytest

from casemis.reading import FileRejected, read_bytes, read_file
from casemis.validation import validate_table

DATA = Path(__file__).parent / "data" / "defects"


def test_utf8_bom_and_crlf_are_accepted():
    table = read_file(DATA / "bom_crlf.csv")
    assert table.headers[0] == "REPT_DATE"  # BOM removed
    assert table.encoding == "utf-8"
    assert table.rows[0].values[-1] == "80"  # no trailing \r
    assert table.rows[0].line == 2


def test_cp1252_names_are_decoded_with_a_warning():
    report = validate_table(DATA / "cp1252.csv", "table_a")
    assert not report.rejected and not report.errors
    assert report.frame["LAST_NAME"].iloc[0] == "Peña"
    assert report.frame["FIRST_NAME"].iloc[0] == "José"
    assert any("not UTF-8 (first invalid byte on line 2)" in w for w in report.warnings)


@pytest.mark.parametrize(
    ("file", "reason"),
    [
        ("empty.csv", "the file is empty"),
        ("binary.bin", "looks binary"),
        ("semicolon.csv", "semicolon-delimited"),
        ("unterminated_quote.csv", "line 2: malformed CSV"),
    ],
)
def test_unreadable_files_are_rejected_with_a_clear_message(file, reason):
    with pytest.raises(FileRejected) as info:
        read_file(DATA / file)
    assert reason in info.value.reason
    assert str(info.value).startswith(file)
    # and validation turns it into a fatal message, never a traceback
    report = validate_table(DATA / file, "table_a")
    assert report.rejected and reason in report.fatal[0]


def test_spreadsheet_and_missing_file_are_rejected():
    with pytest.raises(FileRejected, match="Excel workbook"):
        read_bytes(b"PK\x03\x04rest-of-zip", "tableA.xlsx")
    report = validate_table(Path("/nonexistent/tableA.csv"), "table_a")
    assert report.rejected and "file not found" in report.fatal[0]


def test_whitespace_only_file_is_empty_and_header_only_file_has_no_rows():
    with pytest.raises(FileRejected, match="empty"):
        read_bytes(b"\xef\xbb\xbf \r\n\r\n", "tableA.csv")
    table = read_bytes(b"SSID,STUDENT_ID\r\n", "tableA.csv")
    assert table.rows == []


def test_blank_lines_are_skipped_but_counted():
    table = read_bytes(b"SSID,STUDENT_ID\n\n1234567890,1\n\n1234567891,2\n", "a.csv")
    assert [r.line for r in table.rows] == [3, 5]
