"""The CASEMIS completion report: summary model, CSV attachments, text and HTML rendering.

Aeries ends every CASEMIS import with an email to the special-education office: when it
finished, how many rows matched, were unmatched, duplicated or in error, and CSV
attachments listing those rows (see docs in /work/shared/reference, "Completion email").
This module produces the same report as files in a report folder, so it can be archived,
shown in the UI and mailed by :mod:`casemis.notify`.

Pure logic: no Airflow, and pandas is only used through the DataFrames handed in, so the
module imports cheaply from the DAG, the CLI and the tests.

The summary
-----------
The pipeline builds a plain JSON-serialisable dict shaped like :class:`Summary`. Only
``run_id``, ``status`` and ``completed_at`` are required; every other key has a sensible
default when missing. :func:`write_report` adds ``attachments`` (name and row count of
each CSV it wrote) to the copy it saves as ``summary.json``, and the renderers list them.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

Status = Literal["success", "rejected", "failed", "not_refreshed"]
Trigger = Literal["scheduled", "manual", "cli"]
FileKind = Literal["table_a", "table_b"]


class FileInfo(TypedDict):
    """One source file as it was imported (fingerprint shown in the report)."""

    kind: FileKind
    label: str  # e.g. "Student Data (tableA)"
    name: str  # e.g. "tableA.csv"
    size: int  # bytes
    sha256: str  # hex digest


class Counts(TypedDict):
    """Row counts for one file.

    ``read`` rows were read from the file; ``matched`` found an Aeries student;
    ``unmatched`` found none (skipped, listed in the Unmatched attachment);
    ``duplicates`` were left out because their key appeared more than once; ``errors``
    failed validation; ``added``/``updated``/``unchanged`` are what the load did with the
    matched rows (in a dry run: what it would have done). ``removed`` is only used for
    services (services in Aeries that the file no longer lists).
    """

    read: int
    matched: int
    unmatched: int
    duplicates: int
    errors: int
    added: int
    updated: int
    unchanged: int
    removed: NotRequired[int]


class AttachmentInfo(TypedDict):
    """A CSV attachment as listed in the report (added by :func:`write_report`)."""

    name: str
    rows: int


class Summary(TypedDict):
    """Everything the report says about one run; built by the pipeline, JSON-serialisable."""

    run_id: str
    status: Status
    trigger: Trigger
    dry_run: bool
    on_error: Literal["skip_rows", "abort"]
    completed_at: str  # ISO 8601, timezone aware
    timezone: str  # IANA name the office reads times in, e.g. "America/Los_Angeles"
    message: str  # one-line outcome
    not_refreshed_since: str | None  # ISO 8601 of the last import of the same files
    identical_to_last_import: bool | None
    files: list[FileInfo]
    counts: dict[str, Counts | None]  # keys "table_a", "table_b"; None when not processed
    warnings: dict[str, list[str]]  # per kind
    fatal: dict[str, list[str]]  # per kind
    attachments: NotRequired[list[AttachmentInfo]]


@dataclass(frozen=True)
class ReportFiles:
    """Where :func:`write_report` put the report; ``summary_path`` is written last."""

    summary_path: Path
    text_path: Path
    html_path: Path
    attachment_paths: list[Path]


# Attachment names in Aeries' style, and the columns the office expects in them.
STUDENTS_IMPORTED = "Special_Ed_Students_ImportedRecords.csv"
STUDENTS_UNMATCHED = "Special_Ed_Students_UnmatchedRecords.csv"
STUDENTS_DUPLICATES = "Special_Ed_Students_Duplicates.csv"
STUDENTS_NOT_IN_FILE = "Special_Ed_Students_NotInFile.csv"
STUDENTS_ERRORS = "Special_Ed_Students_Errors.csv"
SERVICES_IMPORTED = "Special_Ed_Services_ImportedRecords.csv"
SERVICES_UNMATCHED = "Special_Ed_Services_UnmatchedRecords.csv"
SERVICES_DUPLICATES = "Special_Ed_Services_Duplicates.csv"
SERVICES_ERRORS = "Special_Ed_Services_Errors.csv"

STUDENT_RECORD_COLUMNS = ("OriginalLineNumber", "SSID", "FirstName", "LastName", "Birthdate", "Grade")
ERROR_COLUMNS = ("OriginalLineNumber", "Column", "Value", "Message")
#: Suggested leading columns per attachment (the pipeline may add more; report.py writes
#: whatever frame it is given). Services attachments carry the file's own columns.
ATTACHMENT_COLUMNS: dict[str, tuple[str, ...]] = {
    STUDENTS_IMPORTED: (*STUDENT_RECORD_COLUMNS, "StudentID"),
    STUDENTS_UNMATCHED: (*STUDENT_RECORD_COLUMNS, "StudentID"),
    STUDENTS_DUPLICATES: STUDENT_RECORD_COLUMNS,
    STUDENTS_NOT_IN_FILE: ("StudentID",),
    STUDENTS_ERRORS: ERROR_COLUMNS,
    SERVICES_IMPORTED: ("OriginalLineNumber",),
    SERVICES_UNMATCHED: ("OriginalLineNumber",),
    SERVICES_DUPLICATES: ("OriginalLineNumber",),
    SERVICES_ERRORS: ERROR_COLUMNS,
}

SUMMARY_NAME = "summary.json"
TEXT_NAME = "report.txt"
HTML_NAME = "report.html"

COUNT_FIELDS = ("read", "matched", "unmatched", "duplicates", "errors", "added", "updated", "unchanged")
KINDS: tuple[FileKind, ...] = ("table_a", "table_b")
DEFAULT_LABELS = {"table_a": "Student Data (tableA)", "table_b": "Student Services Data (tableB)"}
COUNT_HEADINGS = {"table_a": "Students (tableA)", "table_b": "Services (tableB)"}
STATUSES = ("success", "rejected", "failed", "not_refreshed")
TRIGGER_TEXT = {
    "scheduled": "Scheduled run",
    "manual": "Manual run (one-time import)",
    "cli": "Command-line run",
}
ON_ERROR_TEXT = {
    "skip_rows": "rows with errors are skipped, the rest is imported",
    "abort": "any row error aborts the whole import",
}
DRY_RUN_BANNER = "DRY RUN: nothing was written to Aeries; the counts show what would have changed."

_ATTACHMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\.csv$")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_SUBJECT_MAX = 200


# ---------------------------------------------------------------------------------------
# Writing the report folder
# ---------------------------------------------------------------------------------------


def write_report(
    report_dir: Path, summary: Mapping[str, Any], attachments: Mapping[str, pd.DataFrame]
) -> ReportFiles:
    """Write the CSV attachments, report.txt, report.html and summary.json into report_dir.

    Each file is written atomically (temporary file in the same folder, then os.replace),
    so a crash leaves either the old file or the new one, never half of one. summary.json
    is written last: its presence means the report is complete. Attachments are written in
    the order given; an empty frame still gives a header-only CSV so the office sees "none".
    The caller's summary is not modified.
    """
    _check_summary(summary)
    for name in attachments:
        _check_attachment_name(name)
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)

    attachment_paths: list[Path] = []
    listed: list[AttachmentInfo] = []
    for name, frame in attachments.items():
        path = report_dir / name
        _atomic_write(path, csv_bytes(frame))
        attachment_paths.append(path)
        listed.append({"name": name, "rows": len(frame)})

    full: dict[str, Any] = {**summary, "attachments": listed}
    text_path = report_dir / TEXT_NAME
    html_path = report_dir / HTML_NAME
    summary_path = report_dir / SUMMARY_NAME
    _atomic_write(text_path, render_text(full).encode("utf-8"))
    _atomic_write(html_path, render_html(full).encode("utf-8"))
    _atomic_write(summary_path, summary_json(full).encode("utf-8"))
    log.info(
        "Wrote CASEMIS report (status %s, %d attachments, %d rows listed)",
        full["status"],
        len(listed),
        sum(item["rows"] for item in listed),
    )
    return ReportFiles(summary_path, text_path, html_path, attachment_paths)


def summary_json(summary: Mapping[str, Any]) -> str:
    """Serialise the summary as pretty JSON; numpy/pandas scalars become plain numbers."""
    return json.dumps(summary, indent=2, ensure_ascii=False, default=_json_default) + "\n"


def _json_default(value: Any) -> Any:
    """Turn numpy/pandas scalars (which have .item()) into Python values for json.dumps."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"summary value of type {type(value).__name__} is not JSON serialisable")


def _check_summary(summary: Mapping[str, Any]) -> None:
    """Fail early, with the key named, when the summary lacks what every report needs."""
    for key in ("run_id", "status", "completed_at"):
        if not summary.get(key):
            raise ValueError(f"summary is missing {key!r}")
    if summary["status"] not in STATUSES:
        raise ValueError(f"summary status {summary['status']!r} is not one of {', '.join(STATUSES)}")
    _parse_time(summary["completed_at"], "completed_at")


def _check_attachment_name(name: str) -> None:
    """Allow only plain CSV file names, so an attachment can never escape the report folder."""
    if not _ATTACHMENT_NAME.match(name):
        raise ValueError(f"attachment name {name!r} must be a plain file name ending in .csv")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write data to path via a temporary file in the same folder and os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------
# CSV attachments
# ---------------------------------------------------------------------------------------


def neutralise_cell(value: Any) -> Any:
    """Stop a spreadsheet from running a cell as a formula (CSV injection).

    A string starting with = + - @ TAB or CR gets a leading single quote, unless it is a
    plain number such as "-12" or "+3.5", which stays as it is. Non-strings are returned
    unchanged (numbers are written as numbers).
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of frame with every string cell and every header name neutralised."""
    safe = frame.copy()
    safe.columns = [neutralise_cell(str(column)) for column in frame.columns]
    for position in range(safe.shape[1]):
        column = safe.iloc[:, position]
        if column.dtype.kind in "biufcmM":  # numbers and datetimes cannot hold formulas
            continue
        safe.isetitem(position, column.map(neutralise_cell, na_action="ignore"))
    return safe


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """Render an attachment as UTF-8 CSV with a byte-order mark (so Excel shows accents).

    Formula-like cells and headers are neutralised first; the index is not written.
    """
    text = neutralise_frame(frame).to_csv(index=False, lineterminator="\r\n")
    return ("\ufeff" + text).encode("utf-8")


# ---------------------------------------------------------------------------------------
# Wording shared by the text and HTML renderers
# ---------------------------------------------------------------------------------------


def subject(summary: Mapping[str, Any]) -> str:
    """One-line email subject for the run, prefixed "[DRY RUN] " for dry runs.

    Examples: "CASEMIS import succeeded: 1,234 students, 4,321 services",
    "CASEMIS import REJECTED: <message>", "CASEMIS files not refreshed since <date>".
    """
    status = summary.get("status")
    message = _one_line(summary.get("message") or "")
    if status == "success":
        parts = [f"{_imported(summary, 'table_a'):,} students"]
        if _counts(summary, "table_b") is not None:
            parts.append(f"{_imported(summary, 'table_b'):,} services")
        text = "CASEMIS import succeeded: " + ", ".join(parts)
        review = _needs_review(summary)
        if review:
            text += f"; {review:,} rows need review"
    elif status == "rejected":
        text = "CASEMIS import REJECTED" + (f": {message}" if message else "")
    elif status == "not_refreshed":
        since = summary.get("not_refreshed_since")
        when = _format_time(since, _zone(summary)) if since else "the last import"
        text = f"CASEMIS files not refreshed since {when}"
    else:
        text = "CASEMIS import FAILED" + (f": {message}" if message else "")
    if summary.get("dry_run"):
        text = "[DRY RUN] " + text
    return _one_line(text)[:_SUBJECT_MAX]


def _one_line(text: str) -> str:
    """Collapse all whitespace (incl. newlines) so text is safe in a header or a single line."""
    return " ".join(str(text).split())


def _counts(summary: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The counts for one file kind, or None when that file was not processed."""
    counts = summary.get("counts") or {}
    return counts.get(kind)


def _imported(summary: Mapping[str, Any], kind: str) -> int:
    """Rows of a file that ended up in Aeries: added + updated + unchanged."""
    counts = _counts(summary, kind) or {}
    return sum(int(counts.get(field) or 0) for field in ("added", "updated", "unchanged"))


def _needs_review(summary: Mapping[str, Any]) -> int:
    """Unmatched + duplicate + error rows over both files: what the office has to look at."""
    total = 0
    for kind in KINDS:
        counts = _counts(summary, kind) or {}
        total += sum(int(counts.get(field) or 0) for field in ("unmatched", "duplicates", "errors"))
    return total


def _zone(summary: Mapping[str, Any]) -> ZoneInfo | None:
    """The configured time zone, or None (keep the timestamp's own offset) if unknown."""
    name = summary.get("timezone")
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("Unknown report time zone %r; showing times with their own UTC offset", name)
        return None


def _parse_time(value: str, key: str) -> datetime:
    """Parse an ISO timestamp that must carry a time zone."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"summary {key} {value!r} is not an ISO 8601 date and time") from exc
    if moment.tzinfo is None:
        raise ValueError(f"summary {key} {value!r} has no time zone")
    return moment


def _format_time(value: str, zone: ZoneInfo | None) -> str:
    """Format an ISO timestamp like "Friday, December 4, 2026 6:31 PM PST"."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return str(value)
    if moment.tzinfo is not None and zone is not None:
        moment = moment.astimezone(zone)
    hour = moment.hour % 12 or 12
    zone_name = moment.tzname() or ""
    return f"{moment:%A, %B} {moment.day}, {moment.year} {hour}:{moment:%M %p} {zone_name}".rstrip()


def _size(size: Any) -> str:
    """Human file size: "12,345 bytes (12.1 KB)"."""
    size = int(size or 0)
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor:
            return f"{size:,} bytes ({size / factor:.1f} {unit})"
    return f"{size:,} bytes"


def _label(summary: Mapping[str, Any], kind: str) -> str:
    """The label of a file kind as given in summary['files'], else the default."""
    for info in summary.get("files") or []:
        if info.get("kind") == kind and info.get("label"):
            return str(info["label"])
    return DEFAULT_LABELS.get(kind, kind)


def _status_heading(summary: Mapping[str, Any]) -> str:
    """Short status word(s) for the top of the report body."""
    return {
        "success": "Import completed",
        "rejected": "Import REJECTED",
        "failed": "Import FAILED",
        "not_refreshed": "Files not refreshed",
    }.get(summary.get("status", ""), "Import finished")


def _facts(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The label/value lines under the headline (outcome, time, trigger, mode, freshness)."""
    zone = _zone(summary)
    message = _one_line(summary.get("message") or "")
    outcome = _status_heading(summary) + (f": {message}" if message else "")
    facts = [("Outcome", outcome)]
    facts.append(("Completed", _format_time(summary["completed_at"], zone)))
    trigger = summary.get("trigger") or "scheduled"
    facts.append(("Run", f"{TRIGGER_TEXT.get(trigger, trigger)}, run id {summary['run_id']}"))
    on_error = summary.get("on_error")
    if on_error:
        facts.append(("Row errors", ON_ERROR_TEXT.get(on_error, on_error)))
    for line in _freshness_lines(summary, zone):
        facts.append(("Files", line))
    return facts


def _freshness_lines(summary: Mapping[str, Any], zone: ZoneInfo | None) -> list[str]:
    """The "identical to the last import" / "not refreshed since" notices, when they apply."""
    lines = []
    if summary.get("identical_to_last_import"):
        lines.append("The files are identical to the last successful import (same size and SHA-256).")
    since = summary.get("not_refreshed_since")
    if since:
        lines.append(f"The files have not been refreshed since {_format_time(since, zone)}.")
    return lines


def _count_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Headings and rows of the counts table: one column per processed file."""
    kinds = [kind for kind in KINDS if _counts(summary, kind) is not None]
    headings = [COUNT_HEADINGS[kind] for kind in kinds]
    fields = list(COUNT_FIELDS)
    if any("removed" in (_counts(summary, kind) or {}) or kind == "table_b" for kind in kinds):
        fields.append("removed")
    rows = []
    for field in fields:
        cells = []
        for kind in kinds:
            counts = _counts(summary, kind) or {}
            value = counts.get(field)
            cells.append("-" if value is None else f"{int(value):,}")
        rows.append((field.capitalize(), cells))
    return headings, rows


def _problems(summary: Mapping[str, Any], key: str) -> list[tuple[str, list[str]]]:
    """Warnings or fatal problems grouped by file label, skipping files without any."""
    groups = summary.get(key) or {}
    return [(_label(summary, kind), [str(item) for item in items]) for kind, items in groups.items() if items]


def _attachment_lines(summary: Mapping[str, Any]) -> list[str]:
    """ "name (N rows)" for every attachment written with the report."""
    lines = []
    for item in summary.get("attachments") or []:
        rows = int(item.get("rows") or 0)
        lines.append(f"{item['name']} ({rows:,} row{'' if rows == 1 else 's'})")
    return lines


def _file_lines(summary: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(label, name, size text, sha256) for every source file."""
    return [
        (
            str(info.get("label") or DEFAULT_LABELS.get(info.get("kind", ""), "File")),
            str(info.get("name", "")),
            _size(info.get("size")),
            str(info.get("sha256", "")),
        )
        for info in summary.get("files") or []
    ]


# ---------------------------------------------------------------------------------------
# Renderers
# ---------------------------------------------------------------------------------------


def render_text(summary: Mapping[str, Any]) -> str:
    """The plain-text report (email text part and report.txt)."""
    headline = subject(summary)
    out = [headline, "=" * len(headline), ""]
    if summary.get("dry_run"):
        out += [f"*** {DRY_RUN_BANNER} ***", ""]
    width = max(len(label) for label, _ in _facts(summary)) + 1
    out += [f"{label + ':':<{width}} {value}" for label, value in _facts(summary)]

    out += ["", "Files"]
    files = _file_lines(summary)
    out += [f"  {label}: {name}, {size}, SHA-256 {digest}" for label, name, size, digest in files] or [
        "  (none)"
    ]

    headings, rows = _count_rows(summary)
    if headings:
        out += ["", "Counts"]
        first = max(len(name) for name, _ in rows) + 2
        widths = [
            max(len(heading), *(len(cells[i]) for _, cells in rows)) for i, heading in enumerate(headings)
        ]
        out.append("  " + " " * first + "  ".join(f"{h:>{w}}" for h, w in zip(headings, widths, strict=True)))
        for name, cells in rows:
            out.append(
                "  " + f"{name:<{first}}" + "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
            )

    for title, key in (
        ("Fatal problems (nothing was imported from these files)", "fatal"),
        ("Warnings", "warnings"),
    ):
        groups = _problems(summary, key)
        if groups:
            out += ["", title]
            for label, items in groups:
                out.append(f"  {label}:")
                out += [f"    - {_one_line(item)}" for item in items]

    out += ["", "Attachments"]
    out += [f"  - {line}" for line in _attachment_lines(summary)] or ["  (none)"]
    return "\n".join(out) + "\n"


def _e(value: Any) -> str:
    """HTML-escape any value (quotes too): every dynamic value in the HTML goes through here."""
    return html.escape(str(value), quote=True)


def _html_list(items: Iterable[str]) -> str:
    """An escaped <ul> of items."""
    return "<ul>" + "".join(f"<li>{_e(item)}</li>" for item in items) + "</ul>"


def _html_table(headings: Sequence[str], rows: Sequence[Sequence[str]], first_is_header: bool = True) -> str:
    """A small bordered table; every heading and cell is escaped."""
    cell = 'style="border:1px solid #bbb;padding:3px 8px;text-align:{align}"'
    head = "".join(f"<th {cell.format(align='left')}>{_e(h)}</th>" for h in headings)
    body = []
    for row in rows:
        cells = []
        for index, value in enumerate(row):
            tag = "th" if first_is_header and index == 0 else "td"
            align = "left" if index == 0 or not first_is_header else "right"
            cells.append(f"<{tag} {cell.format(align=align)}>{_e(value)}</{tag}>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<table style="border-collapse:collapse;margin:4px 0 12px 0">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def render_html(summary: Mapping[str, Any]) -> str:
    """The HTML report (email HTML part and report.html); every value is escaped."""
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{_e(subject(summary))}</title></head>",
        '<body style="font-family:Arial,Helvetica,sans-serif;font-size:14px;color:#222">',
        f"<h2>{_e(subject(summary))}</h2>",
    ]
    if summary.get("dry_run"):
        parts.append(
            '<p style="background:#fff3cd;border:1px solid #e0c36c;padding:8px;font-weight:bold">'
            f"{_e(DRY_RUN_BANNER)}</p>"
        )
    rows = "".join(
        f'<tr><th style="text-align:left;padding:2px 12px 2px 0;vertical-align:top">{_e(label)}</th>'
        f"<td>{_e(value)}</td></tr>"
        for label, value in _facts(summary)
    )
    parts.append(f"<table>{rows}</table>")

    parts.append("<h3>Files</h3>")
    files = _file_lines(summary)
    if files:
        parts.append(_html_table(["File", "Name", "Size", "SHA-256"], files, first_is_header=False))
    else:
        parts.append("<p>(none)</p>")

    headings, count_rows = _count_rows(summary)
    if headings:
        parts.append("<h3>Counts</h3>")
        parts.append(_html_table(["", *headings], [[name, *cells] for name, cells in count_rows]))

    for title, key in (
        ("Fatal problems (nothing was imported from these files)", "fatal"),
        ("Warnings", "warnings"),
    ):
        groups = _problems(summary, key)
        if groups:
            parts.append(f"<h3>{_e(title)}</h3>")
            for label, items in groups:
                parts.append(f"<p><strong>{_e(label)}</strong></p>{_html_list(items)}")

    parts.append("<h3>Attachments</h3>")
    attachments = _attachment_lines(summary)
    parts.append(_html_list(attachments) if attachments else "<p>(none)</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
