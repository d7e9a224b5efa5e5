"""Validate CASEMIS files against the contract and report every problem precisely.

Each problem names the file, the line in the original file, the column, the value and what
was expected. Whole-file problems (unreadable, missing key headers) are ``fatal``; row
problems are ``errors`` and make only that row invalid; ``warnings`` never stop an import.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pandera.errors import SchemaError, SchemaErrors

from casemis.checks import DATE_FORMAT_NAMES, parse_dates
from casemis.contract import Contract, FileKind, load_contract, resolve_headers
from casemis.reading import FileRejected, RawTable, read_file

log = logging.getLogger(__name__)

#: Name of the column that carries each row's line number in the original file.
LINE = "__line__"
#: How many examples a summarising warning lists.
_EXAMPLES = 20


@dataclass(frozen=True)
class RowError:
    """One problem in one row: where it is, what was found and what was expected."""

    line: int
    column: str
    value: str
    message: str


@dataclass
class FileReport:
    """The outcome of validating one file.

    ``frame`` holds every data row with canonical column names (blank values as NA, dates
    normalised to ``YYYY-MM-DD``) plus ``__line__``; ``valid`` marks the rows without errors.
    """

    kind: FileKind
    label: str
    path: str
    rows: int = 0
    fatal: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    frame: pd.DataFrame | None = None
    present_fields: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        """True when the file as a whole cannot be imported."""
        return bool(self.fatal)

    @property
    def error_lines(self) -> set[int]:
        """Line numbers of rows that have at least one error."""
        return {e.line for e in self.errors}

    @property
    def valid(self) -> pd.Series:
        """Boolean mask over ``frame``: rows without errors."""
        if self.frame is None:
            return pd.Series(dtype=bool)
        return ~self.frame[LINE].isin(self.error_lines)

    @property
    def rejected_rows(self) -> int:
        """Rows that cannot be imported (all of them when the file is rejected)."""
        return self.rows if self.rejected else len(self.error_lines)

    @property
    def valid_rows(self) -> int:
        """Rows that passed every check."""
        return self.rows - self.rejected_rows

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of the ``validate --json`` command for one file."""
        return {
            "path": self.path,
            "rows": self.rows,
            "valid_rows": self.valid_rows,
            "rejected_rows": self.rejected_rows,
            "fatal": list(self.fatal),
            "warnings": list(self.warnings),
            "errors": [asdict(e) for e in sorted(self.errors, key=lambda e: (e.line, e.column))],
        }


@dataclass
class ValidationResult:
    """Both files' reports; ``table_b`` is None when no services file was given."""

    table_a: FileReport
    table_b: FileReport | None = None

    @property
    def ok(self) -> bool:
        """True when no file is rejected and no row has an error (warnings allowed)."""
        return all(not r.rejected and not r.errors for r in self.reports())

    def reports(self) -> list[FileReport]:
        """The reports that exist, tableA first."""
        return [r for r in (self.table_a, self.table_b) if r is not None]

    def to_json(self) -> dict[str, Any]:
        """The ``validate --json`` document."""
        return {
            "ok": self.ok,
            "files": {
                "table_a": self.table_a.to_json(),
                "table_b": self.table_b.to_json() if self.table_b else None,
            },
        }


def _expectation(check: str, stats: dict[str, Any]) -> str:
    """Say, in words, what a Pandera check expects."""
    if check in ("not_nullable", "column_in_dataframe"):
        return "a value is required"
    if check == "isin":
        return "expected one of: " + ", ".join(str(v) for v in stats.get("allowed_values", []))
    if check == "str_matches":
        pattern = str(stats.get("pattern", ""))
        m = re.fullmatch(r"\^\[0-9\]\{(\d+)(?:,(\d+))?\}\$", pattern)
        if m:
            low, high = m.group(1), m.group(2)
            return f"expected {low} to {high} digits" if high else f"expected exactly {low} digits"
        m = re.fullmatch(r"\^\[0-9A-Za-z\]\{(\d+),(\d+)\}\$", pattern)
        if m:
            return f"expected {m.group(1)} to {m.group(2)} letters or digits"
        return f"expected text matching {pattern}"
    if check == "str_length":
        return f"expected at most {stats.get('max_value')} characters"
    if check == "casemis_date":
        return f"expected a real date as {DATE_FORMAT_NAMES} (years {stats.get('min_year')}-{stats.get('max_year')})"
    if check == "casemis_int_range":
        return f"expected a whole number from {stats.get('min_value')} to {stats.get('max_value')}"
    return f"failed the check {check}"


def _check_stats(contract: Contract) -> dict[tuple[str, str], dict[str, Any]]:
    """Map (column, check name) to the check's statistics, for error messages."""
    stats: dict[tuple[str, str], dict[str, Any]] = {}
    for name, column in contract.schema.columns.items():
        for check in column.checks:
            stats[(name, check.name)] = dict(check.statistics or {})
    return stats


def build_frame(raw: RawTable, columns: list[str | None]) -> tuple[pd.DataFrame, list[RowError]]:
    """Build the row frame from parsed records, keeping only recognised columns.

    A record with more or fewer fields than the header row is an error on that row (it is
    padded or cut so the other columns can still be checked).
    """
    width = len(raw.headers)
    errors: list[RowError] = []
    keep = [i for i, name in enumerate(columns) if name is not None]
    names = [columns[i] for i in keep]
    data: list[list[str]] = []
    lines: list[int] = []
    for row in raw.rows:
        values = row.values
        if len(values) != width:
            errors.append(
                RowError(
                    row.line,
                    "(row)",
                    f"{len(values)} fields",
                    f"expected {width} fields like the header row, found {len(values)}",
                )
            )
            values = (values + [""] * width)[:width]
        data.append([values[i] for i in keep])
        lines.append(row.line)
    frame = (
        pd.DataFrame(data, columns=names, dtype="str") if data else pd.DataFrame(columns=names, dtype="str")
    )
    for name in names:
        stripped = frame[name].str.strip()
        frame[name] = stripped.mask(stripped == "")
    frame[LINE] = pd.Series(lines, dtype="int64")
    return frame, errors


def _schema_errors(contract: Contract, frame: pd.DataFrame) -> list[RowError]:
    """Run the Pandera schema lazily and turn its failure cases into row errors."""
    try:
        contract.schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
    except SchemaError as exc:  # pragma: no cover - lazy validation raises SchemaErrors
        cases = exc.failure_cases if isinstance(exc.failure_cases, pd.DataFrame) else pd.DataFrame()
    else:
        return []
    stats = _check_stats(contract)
    lines = frame[LINE]
    errors = []
    for case in cases.itertuples(index=False):
        index = case.index
        if index is None or pd.isna(index):
            continue
        check = str(case.check).split("(", 1)[0]
        value = "" if pd.isna(case.failure_case) else str(case.failure_case)
        if check == "not_nullable":
            message = "a value is required (the field is blank)"
        else:
            message = _expectation(check, stats.get((str(case.column), check), {}))
        errors.append(RowError(int(lines.iloc[int(index)]), str(case.column), value, message))
    return errors


def _row_rules(contract: Contract, frame: pd.DataFrame) -> list[RowError]:
    """Rules across fields of a row that the YAML states as data (``row_requires_any``)."""
    wanted = contract.meta_list("row_requires_any")
    present = [c for c in wanted if c in frame.columns]
    if not present:
        return []
    blank = frame[present].isna().all(axis=1)
    return [
        RowError(int(line), "/".join(wanted), "", f"a row needs {' or '.join(wanted)}; all are blank")
        for line in frame.loc[blank, LINE]
    ]


def validate_table(path: Path, kind: FileKind, name: str | None = None) -> FileReport:
    """Read and validate one file. Never raises for bad input: problems go in the report."""
    contract = load_contract(kind)
    shown = name or path.name
    report = FileReport(kind=kind, label=contract.label, path=str(shown))
    try:
        raw = read_file(path, shown)
    except FileRejected as exc:
        report.fatal.append(exc.reason)
        return report
    report.warnings.extend(raw.warnings)
    report.rows = len(raw.rows)
    resolution = resolve_headers(contract, raw.headers)
    report.warnings.extend(resolution.warnings)
    report.fatal.extend(resolution.fatal)
    if report.fatal:
        return report
    frame, errors = build_frame(raw, resolution.columns)
    report.present_fields = [c for c in resolution.columns if c is not None]
    errors += _schema_errors(contract, frame)
    errors += _row_rules(contract, frame)
    _normalise_dates(contract, frame)
    report.errors = errors
    report.frame = frame
    if not raw.rows:
        report.warnings.append("the file has a header row but no data rows")
    log.info("%s: %d rows read, %d rows with errors", contract.label, report.rows, len(report.error_lines))
    return report


def _normalise_dates(contract: Contract, frame: pd.DataFrame) -> None:
    """Rewrite every date column as ``YYYY-MM-DD`` (unparseable values become NA)."""
    for name, column in contract.schema.columns.items():
        if name in frame.columns and any(c.name == "casemis_date" for c in column.checks):
            frame[name] = parse_dates(frame[name])


def cross_check(table_a: FileReport, table_b: FileReport) -> None:
    """Rules between the two files.

    A services row whose student (SELPA_CODE + STUDENT_ID) is not in tableA is an error; a
    tableA student whose plan type needs services but who has no services row is a warning.
    """
    if table_a.frame is None or table_b.frame is None:
        return
    contract_b = load_contract("table_b")
    key = contract_b.meta_list("student_key")
    a, b = table_a.frame, table_b.frame
    if not all(k in a.columns for k in key) or not all(k in b.columns for k in key):
        return
    a_keys = pd.MultiIndex.from_frame(a[key].fillna(""))
    b_keys = pd.MultiIndex.from_frame(b[key].fillna(""))
    orphan = ~b_keys.isin(a_keys) & b[key].notna().all(axis=1).to_numpy()
    for line, selpa, student in b.loc[orphan, [LINE, *key]].itertuples(index=False):
        table_b.errors.append(
            RowError(
                int(line),
                key[-1],
                str(student),
                f"no {table_a.label} row has {key[0]} {selpa} and {key[-1]} {student}",
            )
        )
    exempt = contract_b.meta_list("no_services_plan_types")
    needs = ~a["PLAN_TYPE"].isin(exempt) if "PLAN_TYPE" in a.columns else pd.Series(True, index=a.index)
    without = needs.to_numpy() & ~a_keys.isin(b_keys) & a[key].notna().all(axis=1).to_numpy()
    if without.any():
        lines = a.loc[without, LINE].tolist()
        shown = ", ".join(str(x) for x in lines[:_EXAMPLES]) + (", ..." if len(lines) > _EXAMPLES else "")
        table_a.warnings.append(
            f"{len(lines)} student(s) with a plan type other than {'/'.join(exempt)} have no "
            f"{table_b.label} row (lines {shown})"
        )


def validate_files(table_a: Path, table_b: Path | None = None) -> ValidationResult:
    """Validate tableA and, when given, tableB, including the rules between them."""
    report_a = validate_table(table_a, "table_a")
    report_b = validate_table(table_b, "table_b") if table_b is not None else None
    if report_b is not None:
        cross_check(report_a, report_b)
    return ValidationResult(report_a, report_b)
