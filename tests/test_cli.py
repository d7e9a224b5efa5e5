"""``python -m casemis`` as a user runs it: real subprocesses, exit codes and JSON output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data" / "defects"
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "casemis", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_help_lists_commands_and_examples():
    result = run("--help")
    assert result.returncode == 0
    for word in ("validate", "generate", "init-db", "import", "examples:", "Exit status"):
        assert word in result.stdout


def test_validate_valid_pair_exits_0_with_json():
    result = run(
        "validate", "--table-a", str(DATA / "good_a.csv"), "--table-b", str(DATA / "good_b.csv"), "--json"
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    assert doc["files"]["table_a"]["valid_rows"] == 2
    assert doc["files"]["table_b"]["rows"] == 2


def test_validate_row_error_exits_1_and_names_line_column_value():
    result = run("validate", "--table-a", str(DATA / "bad_code.csv"))
    assert result.returncode == 1
    assert "line 2, column PLAN_TYPE: '12': expected one of" in result.stdout


def test_validate_rejected_file_exits_1_with_fatal_in_json():
    result = run("validate", "--table-a", str(DATA / "semicolon.csv"), "--json")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert "semicolon-delimited" in doc["files"]["table_a"]["fatal"][0]
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2():
    assert run("validate").returncode == 2
    assert run("validate", "--table-a", "/no/such/file.csv").returncode == 2
    assert run("frobnicate").returncode == 2


def test_generate_then_validate(tmp_path: Path):
    result = run("generate", "--students", "40", "--out", str(tmp_path), "--seed", "5")
    assert result.returncode == 0, result.stderr
    assert "40 students" in result.stdout
    check = run(
        "validate", "--table-a", str(tmp_path / "tableA.csv"), "--table-b", str(tmp_path / "tableB.csv")
    )
    assert check.returncode == 0, check.stdout
