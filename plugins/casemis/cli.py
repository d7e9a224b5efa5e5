"""Command line: ``python -m casemis <command>``.

Commands mirror the pipeline's steps so a data engineer can rehearse an import without
Airflow: ``validate`` checks files, ``generate`` writes synthetic files, ``init-db`` creates
a demo Aeries database and ``import`` runs the whole import into a database.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_DESCRIPTION = """\
CASEMIS Import: check and import the CASEMIS Student Data (tableA) and Student
Services Data (tableB) files into the Aeries Special Ed tables (CSE, CSV).
"""
_EPILOG = """\
examples:
  python -m casemis validate --table-a tableA.csv --table-b tableB.csv
  python -m casemis generate --students 500 --out /tmp/casemis --seed 7
  python -m casemis init-db --target sqlite:///var/aeries.db --stu /tmp/casemis/stu.csv
  python -m casemis import --target sqlite:///var/aeries.db --table-a /tmp/casemis/tableA.csv \\
      --table-b /tmp/casemis/tableB.csv --dry-run

Exit status: 0 success, 1 rejected or failed, 2 usage error.
"""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors exit with status 2 (the argparse default) and a hint."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser with every subcommand."""
    parser = _Parser(
        prog="python -m casemis",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "validate",
        help="check tableA (and tableB) against the CASEMIS contract",
        description="Check the files against include/schemas/*.yaml. Exit 0 when valid (warnings "
        "allowed), 1 when a file is rejected or any row fails, 2 on usage errors.",
    )
    p.add_argument("--table-a", required=True, type=Path, metavar="A.csv", help="Student Data file (tableA)")
    p.add_argument("--table-b", type=Path, metavar="B.csv", help="Student Services Data file (tableB)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    p = sub.add_parser(
        "generate",
        help="write synthetic tableA.csv, tableB.csv and stu.csv",
        description="Write synthetic files (no real student data): tableA.csv, tableB.csv and the "
        "matching Aeries STU rows stu.csv (ID, CID, SC, SN, LN, FN, BD).",
    )
    p.add_argument("--students", required=True, type=int, metavar="N", help="number of students")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created)")
    p.add_argument("--seed", type=int, default=42, metavar="S", help="random seed (default 42)")

    _add_import_commands(sub)
    return parser


def _add_import_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``init-db`` and ``import`` (they need SQLAlchemy and the loader)."""
    p = sub.add_parser(
        "init-db",
        help="create the Aeries-shaped demo database and seed STU",
        description="Create the STU, CSE and CSV tables and the import-history tables in the target "
        "database (no-op for tables that exist), optionally seeding STU from a CSV file.",
    )
    p.add_argument(
        "--target", required=True, metavar="URL", help="SQLAlchemy URL, e.g. sqlite:///var/aeries.db"
    )
    p.add_argument(
        "--stu", type=Path, metavar="stu.csv", help="STU rows to load (ID, CID, SC, SN, LN, FN, BD)"
    )

    p = sub.add_parser(
        "import",
        help="validate, match and load the files into the target database",
        description="Run the whole import outside Airflow: validate, match to STU, load CSE and CSV "
        "(each in one transaction) and write the completion report.",
    )
    p.add_argument("--target", required=True, metavar="URL", help="SQLAlchemy URL of the Aeries database")
    p.add_argument("--table-a", required=True, type=Path, metavar="A.csv", help="Student Data file (tableA)")
    p.add_argument("--table-b", type=Path, metavar="B.csv", help="Student Services Data file (tableB)")
    p.add_argument("--dry-run", action="store_true", help="compute and report everything, commit nothing")
    p.add_argument(
        "--on-error",
        choices=["skip_rows", "abort"],
        default="skip_rows",
        help="skip_rows: load the good rows and report the rest (default); abort: load nothing if any row fails",
    )
    p.add_argument(
        "--report-dir", type=Path, metavar="DIR", help="where to write the report (default var/reports/<run>)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _cmd_validate(args: argparse.Namespace) -> int:
    from casemis.validation import validate_files

    for path in (args.table_a, args.table_b):
        if path is not None and not path.is_file():
            print(f"python -m casemis validate: error: no such file: {path}", file=sys.stderr)
            return EXIT_USAGE
    result = validate_files(args.table_a, args.table_b)
    if args.json:
        print(json.dumps(result.to_json(), indent=None))
    else:
        for report in result.reports():
            state = "REJECTED" if report.rejected else ("OK" if not report.errors else "ERRORS")
            print(f"{report.label} {report.path}: {state}; {report.rows} rows, {report.valid_rows} valid")
            for message in report.fatal:
                print(f"  fatal: {message}")
            for message in report.warnings:
                print(f"  warning: {message}")
            for e in sorted(report.errors, key=lambda e: (e.line, e.column))[:200]:
                print(f"  line {e.line}, column {e.column}: {e.value!r}: {e.message}")
            if len(report.errors) > 200:
                print(f"  ... {len(report.errors) - 200} more errors (use --json for all)")
    return EXIT_OK if result.ok else EXIT_FAILED


def _cmd_generate(args: argparse.Namespace) -> int:
    from casemis.generate import generate

    if args.students < 1:
        print("python -m casemis generate: error: --students must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    files = generate(args.students, args.out, seed=args.seed)
    print(
        f"wrote {files.table_a} ({files.students} students), {files.table_b} ({files.services} services), "
        f"{files.stu} ({files.students - files.unmatched} students in STU, {files.unmatched} left out on purpose)"
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from casemis import cli_import

    handlers = {"validate": _cmd_validate, "generate": _cmd_generate, **cli_import.HANDLERS}
    return handlers[args.command](args)
