"""The CASEMIS contract, rule by rule, on small hand-written files (tests/data/defects)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from casemis.contract import header_key, load_contract, resolve_headers
from casemis.validation import validate_files, validate_table

DATA = Path(__file__).parent / "data" / "defects"


def test_table_a_contract_has_the_67_fields_of_the_2017_18_layout_in_order():
    contract = load_contract("table_a")
    names = contract.field_names
    assert len(names) == 67
    assert names[0] == "REPT_DATE"
    assert names[31] == "PLAN_TYPE"  # A-32, confirmed by Aeries
    assert names[56:62] == [f"FILLER{i}" for i in range(1, 7)]  # A-57..A-62
    assert names[-1] == "TRIDELAY"
    assert [f.field_id for f in contract.fields][:3] == ["A-01", "A-02", "A-03"]


def test_contract_checks_come_from_yaml_including_registered_custom_checks():
    schema = load_contract("table_a").schema
    checks = {c.name for c in schema.columns["BIRTHDATE"].checks}
    assert "casemis_date" in checks
    plan = next(c for c in schema.columns["PLAN_TYPE"].checks if c.name == "isin")
    assert set(plan.statistics["allowed_values"]) == {"10", "15", "20", "30", "70", "80", "90"}


def test_good_pair_is_valid():
    result = validate_files(DATA / "good_a.csv", DATA / "good_b.csv")
    assert result.ok
    assert result.table_a.rows == 2 and result.table_a.valid_rows == 2
    assert result.table_b is not None and result.table_b.valid_rows == 2
    # dates in any accepted layout are normalised to ISO
    frame = result.table_a.frame
    assert frame["BIRTHDATE"].tolist() == ["2010-03-15", "2011-03-04"]
    assert frame["ENTRY_DATE"].tolist() == ["2015-09-01", "2016-09-01"]


@pytest.mark.parametrize(
    ("file", "column", "value", "expected"),
    [
        ("bad_code.csv", "PLAN_TYPE", "12", "expected one of: 10, 15, 20, 30, 70, 80, 90"),
        ("bad_date_impossible.csv", "BIRTHDATE", "20100230", "expected a real date"),
        ("bad_date_format.csv", "BIRTHDATE", "2010/03/15", "YYYYMMDD, MMDDYYYY, MM/DD/YYYY or YYYY-MM-DD"),
        ("bad_selpa_width.csv", "SELPA_CODE", "341", "expected exactly 4 digits"),
        ("bad_ssid_width.csv", "SSID", "123456789", "expected exactly 10 digits"),
        ("bad_required_blank.csv", "LAST_NAME", "", "a value is required"),
        ("bad_too_long.csv", "LAST_NAME", "X" * 51, "at most 50 characters"),
        ("bad_percent.csv", "IN_REGCLS", "101", "whole number from 0 to 100"),
        ("bad_no_student_key.csv", "STUDENT_ID/SSID", "", "needs STUDENT_ID or SSID"),
        ("bad_field_count.csv", "(row)", "11 fields", "expected 12 fields"),
    ],
)
def test_each_row_defect_is_reported_with_line_column_value_and_expectation(file, column, value, expected):
    report = validate_table(DATA / file, "table_a")
    assert not report.rejected
    assert report.rows == 1 and report.valid_rows == 0 and report.rejected_rows == 1
    matching = [e for e in report.errors if e.column == column]
    assert matching, report.errors
    error = matching[0]
    assert error.line == 2
    assert error.value == value
    assert expected in error.message
    assert report.path == file


def test_error_line_numbers_are_lines_in_the_original_file_even_after_a_multiline_field():
    report = validate_table(DATA / "quoted_newline.csv", "table_a")
    assert report.rows == 2
    assert not report.errors
    assert report.frame["__line__"].tolist() == [2, 4]
    assert report.frame["LAST_NAME"].iloc[0] == "Garcia, Jr."
    assert report.frame["FIRST_NAME"].iloc[0] == "Sofia\nAna"


def test_file_without_key_headers_is_rejected_whole_with_the_bad_headers_listed():
    report = validate_table(DATA / "bad_no_key_headers.csv", "table_a")
    assert report.rejected
    assert report.rejected_rows == report.rows == 1
    [message] = report.fatal
    assert "STUDENT_ID or SSID" in message
    assert "BIRTH_DAY" in message and "PERM_NO" in message


def test_duplicate_header_is_fatal():
    report = validate_table(DATA / "bad_duplicate_header.csv", "table_a")
    assert report.rejected
    assert any("SSID appears twice (columns 1 and 3)" in m for m in report.fatal)


def test_unknown_header_is_a_warning_not_an_error():
    report = validate_table(DATA / "warn_unknown_header.csv", "table_a")
    assert not report.rejected and not report.errors
    assert any("unknown header 'COLOR'" in w for w in report.warnings)


def test_headers_match_case_insensitively_with_spaces_and_alternative_names():
    report = validate_table(DATA / "headers_variants.csv", "table_a")
    assert not report.rejected and not report.errors, (report.fatal, report.errors)
    assert {"REPT_DATE", "SELPA_CODE", "STUDENT_ID", "SSID", "LAST_NAME", "BIRTHDATE"} <= set(
        report.frame.columns
    )
    assert report.frame["STUDENT_ID"].iloc[0] == "100001"
    assert not any("unknown header" in w for w in report.warnings)


def test_header_key_normalisation():
    assert header_key("\ufeff rept_date ") == "REPT_DATE"
    assert header_key("Last Name") == "LAST_NAME"
    assert header_key('"SSID"') == "SSID"


def test_missing_non_key_header_is_a_warning_naming_the_field_number():
    contract = load_contract("table_a")
    resolution = resolve_headers(contract, ["SSID", "LAST_NAME"])
    assert not resolution.fatal
    assert any("PLAN_TYPE (A-32) is missing" in w for w in resolution.warnings)


def test_table_b_cross_file_checks():
    result = validate_files(DATA / "good_a.csv", DATA / "bad_b_orphan_and_codes.csv")
    b = result.table_b
    assert b is not None
    orphan = [e for e in b.errors if e.line == 2]
    assert (
        orphan
        and "no Student Data (tableA) row has SELPA_CODE 3410 and STUDENT_ID 999999" in orphan[0].message
    )
    bad = {(e.column, e.value) for e in b.errors if e.line == 3}
    assert ("SERVICE", "999") in bad and ("SERV_DUR", "2000") in bad
    assert not result.ok


def test_student_without_services_is_a_warning_only():
    result = validate_files(DATA / "good_a.csv", DATA / "b_only_first_student.csv")
    assert result.ok
    assert any("1 student(s)" in w and "lines 3" in w for w in result.table_a.warnings)


def test_table_b_without_its_key_headers_is_rejected():
    report = validate_table(DATA / "bad_b_missing_key.csv", "table_b")
    assert report.rejected
    assert "STUDENT_ID" in report.fatal[0]


def test_json_shape():
    result = validate_files(DATA / "bad_code.csv")
    doc = json.loads(json.dumps(result.to_json()))
    assert doc["ok"] is False
    assert doc["files"]["table_b"] is None
    a = doc["files"]["table_a"]
    assert set(a) == {"path", "rows", "valid_rows", "rejected_rows", "fatal", "warnings", "errors"}
    assert a["errors"][0] == {
        "line": 2,
        "column": "PLAN_TYPE",
        "value": "12",
        "message": "expected one of: 10, 15, 20, 30, 70, 80, 90",
    }
