"""Benchmark: validate 100k tableA rows + ~400k tableB rows (prints rows/s and peak memory).

Usage: .venv/bin/python bench/bench_validate.py [--students 100000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import timed

from casemis.generate import generate
from casemis.validation import validate_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with timed(f"generate {args.students:,} students"):
            files = generate(args.students, Path(tmp), seed=1)
        total = files.students + files.services
        print(f"files: tableA {files.students:,} rows, tableB {files.services:,} rows")
        with timed("validate tableA + tableB", rows=total):
            result = validate_files(files.table_a, files.table_b)
        print(f"valid: {result.ok}; errors: {sum(len(r.errors) for r in result.reports())}")


if __name__ == "__main__":
    main()
