"""Benchmark: import 100k students + ~400k services into SQLite, cold and again (re-run).

Prints, for each run, the time, rows/s (tableA + tableB rows read) and peak memory, and the
pipeline's counts, so a re-run that changes something (it must not) shows at once.

Usage: .venv/bin/python bench/bench_import.py [--students 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from _common import peak_rss_mib, timed

from casemis.db import engine_from_url
from casemis.generate import generate
from casemis.pipeline import RunContext, now_iso, run_all
from casemis.seed import init_db


def import_once(label: str, root: Path, url: str, table_a: Path, table_b: Path, rows: int) -> dict:
    """One whole pipeline run (stage, validate, match, load CSE and CSV, report); returns counts."""
    ctx = RunContext(
        run_id=f"bench-{label}-{time.time_ns()}",
        staging_root=str(root / "staging"),
        report_root=str(root / "reports"),
        started_at=now_iso(),
    )
    engine = engine_from_url(url)
    try:
        with timed(f"import ({label})", rows=rows):
            summary = run_all(ctx, engine, table_a, table_b)
    finally:
        engine.dispose()
    print(f"  status {summary['status']}: {summary['message']}")
    for kind, counts in summary["counts"].items():
        print(f"  {kind}: " + ", ".join(f"{k} {v}" for k, v in (counts or {}).items()))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the pipeline's progress")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        with timed(f"generate {args.students:,} students"):
            files = generate(args.students, root / "files", seed=1)
        rows = files.students + files.services
        print(f"files: tableA {files.students:,} rows, tableB {files.services:,} rows")
        url = f"sqlite:///{root / 'aeries.db'}"
        engine = engine_from_url(url)
        with timed("init-db + seed STU"):
            init_db(engine, files.stu)
        engine.dispose()
        cold = import_once("cold", root, url, files.table_a, files.table_b, rows)
        again = import_once("re-run", root, url, files.table_a, files.table_b, rows)
        for kind in ("table_a", "table_b"):
            counts = again["counts"][kind]
            if counts["added"] or counts["updated"] or counts.get("removed"):
                print(f"WARNING: the re-run changed {kind}: {counts}")
        assert cold["status"] == again["status"] == "success"
        print(f"peak memory overall {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
