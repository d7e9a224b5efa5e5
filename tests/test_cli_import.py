"""``python -m casemis init-db`` and ``import`` as a user runs them: real subprocesses.

The ``--json`` document is a contract (scripts parse it): ``status``, ``dry_run``,
``table_a``/``table_b`` counts and ``report_dir``; exit 0 on success, 1 when the import is
rejected or fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from casemis.db import engine_from_url
from tests.import_helpers import count, insert, write_stu, write_table_a, write_table_b

ROOT = Path(__file__).resolve().parents[1]
A_KEYS = {"read", "matched", "unmatched", "duplicates", "errors", "added", "updated", "unchanged"}


def casemis(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m casemis``; staging and default reports go under ``tmp``, not the repo."""
    env = {**os.environ, "CASEMIS_HOME": str(tmp), "CASEMIS_INCLUDE_DIR": str(ROOT / "include")}
    return subprocess.run(
        [sys.executable, "-m", "casemis", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )


def import_json(tmp: Path, url: str, *extra: str) -> tuple[int, dict[str, Any]]:
    """``import --json`` with the default district's files; (exit code, document)."""
    a = write_table_a(tmp / "in" / "tableA.csv")
    b = write_table_b(tmp / "in" / "tableB.csv")
    result = casemis(
        tmp, "import", "--target", url, "--table-a", str(a), "--table-b", str(b), "--json", *extra
    )
    assert result.stdout.count("\n") == 1, result.stdout + result.stderr  # one JSON line, nothing else
    return result.returncode, json.loads(result.stdout)


@pytest.fixture
def seeded(db_url: str, tmp_path: Path) -> str:
    """A target database made with ``init-db``."""
    result = casemis(tmp_path, "init-db", "--target", db_url, "--stu", str(write_stu(tmp_path / "stu.csv")))
    assert result.returncode == 0, result.stderr
    return db_url


def test_init_db_is_idempotent(db_url: str, tmp_path: Path):
    stu = write_stu(tmp_path / "stu.csv")
    first = casemis(tmp_path, "init-db", "--target", db_url, "--stu", str(stu))
    assert first.returncode == 0, first.stderr
    assert "12 STU rows loaded" in first.stdout
    engine = engine_from_url(db_url)
    insert(engine, "CSE", [{"ID": 100001, "PT": "10"}])
    again = casemis(tmp_path, "init-db", "--target", db_url, "--stu", str(stu))
    assert again.returncode == 0, again.stderr
    assert "0 STU rows loaded" in again.stdout
    # Nothing duplicated, nothing dropped: the data loaded in between is still there.
    assert (count(engine, "STU"), count(engine, "CSE")) == (12, 1)
    engine.dispose()


def test_import_json_contract_and_exit_0(seeded: str, tmp_path: Path):
    code, doc = import_json(tmp_path, seeded, "--report-dir", str(tmp_path / "report"))
    assert code == 0
    assert set(doc) == {"status", "dry_run", "table_a", "table_b", "report_dir"}
    assert doc["status"] == "success" and doc["dry_run"] is False
    assert set(doc["table_a"]) == A_KEYS
    assert set(doc["table_b"]) == A_KEYS | {"removed"}
    assert (doc["table_a"]["matched"], doc["table_a"]["added"]) == (4, 4)
    assert (doc["table_b"]["matched"], doc["table_b"]["added"]) == (4, 4)
    assert doc["report_dir"] == str(tmp_path / "report")
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["status"] == "success"
    engine = engine_from_url(seeded)
    assert (count(engine, "CSE"), count(engine, "CSV")) == (4, 4)
    engine.dispose()

    code, doc = import_json(tmp_path, seeded)  # default report folder: var/reports/<run> under CASEMIS_HOME
    assert code == 0
    assert (doc["table_a"]["added"], doc["table_a"]["unchanged"]) == (0, 4)
    assert Path(doc["report_dir"]).is_relative_to(tmp_path / "var" / "reports")


def test_dry_run_commits_nothing_but_reports_would_be_counts(seeded: str, tmp_path: Path):
    code, doc = import_json(tmp_path, seeded, "--dry-run")
    assert code == 0
    assert doc["dry_run"] is True and doc["status"] == "success"
    assert (doc["table_a"]["added"], doc["table_b"]["added"]) == (4, 4)
    engine = engine_from_url(seeded)
    assert (count(engine, "CSE"), count(engine, "CSV"), count(engine, "CASEMIS_SERVICE_LINK")) == (0, 0, 0)
    engine.dispose()


def test_rejected_import_exits_1(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'aeries.db'}"
    assert (
        casemis(
            tmp_path, "init-db", "--target", url, "--stu", str(write_stu(tmp_path / "stu.csv"))
        ).returncode
        == 0
    )
    code, doc = import_json(tmp_path, url, "--on-error", "abort")
    assert code == 1
    assert doc["status"] == "rejected"
    assert doc["table_a"]["errors"] == 1 and doc["table_a"]["added"] == 0
    engine = engine_from_url(url)
    assert count(engine, "CSE") == 0
    engine.dispose()


def test_failed_import_exits_1(tmp_path: Path):
    # A database without the Aeries tables (init-db never ran): matching cannot read STU.
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    code, doc = import_json(tmp_path, url)
    assert code == 1
    assert doc["status"] == "failed"
    summary = json.loads((Path(doc["report_dir"]) / "summary.json").read_text())
    assert "transform" in summary["message"]
    engine = engine_from_url(url)
    assert not sa.inspect(engine).has_table("CSE")
    engine.dispose()


def test_usage_errors_exit_2(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'aeries.db'}"
    assert (
        casemis(tmp_path, "import", "--target", url, "--table-a", str(tmp_path / "missing.csv")).returncode
        == 2
    )
    assert (
        casemis(tmp_path, "init-db", "--target", url, "--stu", str(tmp_path / "missing.csv")).returncode == 2
    )
