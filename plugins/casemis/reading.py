"""Turn the bytes of a vendor CSV file into rows, robustly and with original line numbers.

Vendors' exports vary: UTF-8 with or without a byte-order mark, Windows line endings,
quoted fields holding commas or line breaks, Windows-1252 names. This module accepts all of
that and rejects, with a message a person can act on, what is not a CSV file at all (empty,
binary, a spreadsheet, another delimiter). It never raises anything but ``FileRejected``
for bad input.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

_SNIFF_BYTES = 65536
_OTHER_DELIMITERS = {"\t": "tab", ";": "semicolon", "|": "pipe"}
_SIGNATURES = {
    b"PK\x03\x04": "a ZIP archive or Excel workbook (.xlsx)",
    b"\xd0\xcf\x11\xe0": "an old Excel workbook (.xls)",
    b"%PDF": "a PDF document",
}


class FileRejected(Exception):
    """The file as a whole cannot be read as a CASEMIS CSV file."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


@dataclass
class RawRow:
    """One data record: its first physical line in the file and its raw values."""

    line: int
    values: list[str]


@dataclass
class RawTable:
    """A parsed CSV file: header row, data records and what was noticed on the way."""

    name: str
    encoding: str
    headers: list[str]
    rows: list[RawRow]
    warnings: list[str] = field(default_factory=list)


def decode(data: bytes, name: str) -> tuple[str, str, list[str]]:
    """Decode file bytes: UTF-8 (BOM optional), else Windows-1252 with a warning.

    Returns ``(text, encoding, warnings)``. Raises ``FileRejected`` for empty or binary data.
    """
    if not data.removeprefix(b"\xef\xbb\xbf").strip():
        raise FileRejected(name, "the file is empty; expected a CSV file with a header row")
    for signature, what in _SIGNATURES.items():
        if data.startswith(signature):
            raise FileRejected(name, f"the file is {what}, not a CSV text file; export or save it as CSV")
    head = data[:_SNIFF_BYTES]
    nul = head.find(b"\x00")
    if nul >= 0:
        raise FileRejected(
            name, f"the file looks binary (a NUL byte at offset {nul}); expected a comma-separated text file"
        )
    try:
        return data.decode("utf-8-sig"), "utf-8", []
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        try:
            text = data.decode("cp1252")
            encoding = "cp1252"
        except UnicodeDecodeError:
            text = data.decode("latin-1")
            encoding = "latin-1"
        warning = (
            f"the file is not UTF-8 (first invalid byte on line {line}); "
            f"decoded as Windows-1252 ({encoding}): check accented names in the report"
        )
        return text, encoding, [warning]


def check_delimiter(header_line: str, name: str) -> None:
    """Reject a file whose header row is clearly delimited by something other than commas."""
    if "," in header_line:
        return
    counts = {label: header_line.count(ch) for ch, label in _OTHER_DELIMITERS.items()}
    label, count = max(counts.items(), key=lambda item: item[1])
    if count:
        raise FileRejected(
            name,
            f"line 1: the header row is {label}-delimited ({count} {label}s, no commas); "
            "expected comma-separated values",
        )


def parse_text(text: str, name: str) -> tuple[list[str], list[RawRow]]:
    """Parse CSV text into a header row and records tagged with their first line number.

    Blank lines are skipped (they still count for line numbers). A quote that is never
    closed rejects the file with the line where the record started.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    headers: list[str] | None = None
    rows: list[RawRow] = []
    next_line = 1
    try:
        for values in reader:
            start = next_line
            next_line = reader.line_num + 1
            if not values or (len(values) == 1 and not values[0].strip()):
                continue
            if headers is None:
                headers = values
                continue
            rows.append(RawRow(start, values))
    except csv.Error as exc:
        raise FileRejected(name, f"line {next_line}: malformed CSV ({exc})") from None
    if headers is None:
        raise FileRejected(name, "the file has no header row")
    return headers, rows


def read_bytes(data: bytes, name: str) -> RawTable:
    """Read a whole CSV file held in memory."""
    text, encoding, warnings = decode(data, name)
    first_line = text.lstrip("\r\n").split("\n", 1)[0]
    check_delimiter(first_line, name)
    headers, rows = parse_text(text, name)
    return RawTable(name=name, encoding=encoding, headers=headers, rows=rows, warnings=warnings)


def read_file(path: Path, name: str | None = None) -> RawTable:
    """Read a CSV file from disk; ``name`` is how messages refer to it (default: file name)."""
    shown = name or path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileRejected(shown, f"file not found: {path}") from None
    except IsADirectoryError:
        raise FileRejected(shown, f"expected a file but found a folder: {path}") from None
    except OSError as exc:
        raise FileRejected(shown, f"cannot read the file ({exc.strerror})") from None
    return read_bytes(data, shown)
