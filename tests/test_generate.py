"""The synthetic data generator and the committed sample."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from casemis.generate import generate
from casemis.paths import include_dir
from casemis.validation import validate_files


def test_generated_files_validate_clean_and_match_stu(tmp_path: Path):
    files = generate(500, tmp_path, seed=3)
    result = validate_files(files.table_a, files.table_b)
    assert result.ok, [r.errors[:3] for r in result.reports()]
    a = pd.read_csv(files.table_a, dtype=str, keep_default_na=False)
    b = pd.read_csv(files.table_b, dtype=str, keep_default_na=False)
    stu = pd.read_csv(files.stu, dtype=str, keep_default_na=False)
    assert len(a) == 500 and len(b) == files.services
    assert list(stu.columns) == ["ID", "CID", "SC", "SN", "LN", "FN", "BD"]
    # a few students are deliberately absent from STU
    missing = set(a["STUDENT_ID"]) - set(stu["ID"])
    assert len(missing) == files.unmatched and 0 < len(missing) < 25
    # realistic distributions: mostly IEPs, about four services per student who needs them
    assert (a["PLAN_TYPE"] == "10").mean() > 0.8
    assert 3.0 < len(b) / (~a["PLAN_TYPE"].isin(["70", "80", "90"])).sum() < 5.0
    # (SC, SN) is unique, as in Aeries; some students have two school records
    assert not stu.duplicated(["SC", "SN"]).any()
    assert stu["ID"].duplicated().any()


def test_generation_is_reproducible_with_a_seed(tmp_path: Path):
    one = generate(50, tmp_path / "one", seed=9)
    two = generate(50, tmp_path / "two", seed=9)
    other = generate(50, tmp_path / "other", seed=10)
    assert one.table_a.read_bytes() == two.table_a.read_bytes()
    assert one.table_a.read_bytes() != other.table_a.read_bytes()


def test_committed_sample_is_valid():
    sample = include_dir() / "sample_data"
    result = validate_files(sample / "tableA.csv", sample / "tableB.csv")
    assert result.ok
    assert result.table_a.rows == 60


def test_generator_output_validates_clean_at_100k_students(tmp_path: Path):
    files = generate(100_000, tmp_path, seed=11)
    result = validate_files(files.table_a, files.table_b)
    assert result.ok
    assert result.table_a.rows == 100_000
    assert 350_000 < files.services < 450_000  # a large SELPA's ~400k services
