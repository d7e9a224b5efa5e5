"""One-time import files: streamed from the browser into the uploads folder, safely.

* The request body is counted while it streams in and refused (413) once it exceeds the
  limit, before the rest is read; a ``Content-Length`` above the limit is refused at once.
* The stored file name is generated here (``<UTC time>-<random>/tableA.csv``); the name
  the browser sends is only shown to people, never used as a path.
* Files are written to a temporary name and renamed when complete, so a run never sees
  half a file. Upload folders older than ``RETENTION_DAYS`` are removed (they hold
  student data that has been imported by then).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.datastructures import FormData, UploadFile
    from starlette.requests import Request

STORED_NAMES = {"table_a": "tableA.csv", "table_b": "tableB.csv"}
RETENTION_DAYS = 30
_FOLDER = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{12}$")
_CHUNK = 1024 * 1024
_FORM_OVERHEAD = 256 * 1024  # multipart headers and the small fields around the files


class UploadRejected(Exception):
    """The upload cannot be used; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StoredFile:
    """A file saved for a one-time import."""

    kind: str
    path: Path
    original_name: str
    size: int


def display_name(name: str | None) -> str:
    """The browser's file name, made safe to show (no path, no control characters)."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable())
    return base[:120] or "(unnamed)"


async def read_form(request: Request, max_file_bytes: int) -> FormData:
    """Parse a multipart upload of at most two files of ``max_file_bytes`` each."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UploadRejected("send the files as a multipart form (enctype=multipart/form-data)")
    limit = 2 * max_file_bytes + _FORM_OVERHEAD
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise UploadRejected(_too_large(max_file_bytes), status=413)

    async def limited() -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                raise UploadRejected(_too_large(max_file_bytes), status=413)
            yield chunk

    parser = MultiPartParser(request.headers, limited(), max_files=2, max_fields=20)
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise UploadRejected(f"the upload could not be read: {exc.message}") from None


def _too_large(max_file_bytes: int) -> str:
    return f"a file is larger than the limit of {max_file_bytes // (1024 * 1024)} MB"


def new_upload_folder(root: Path, now: dt.datetime | None = None) -> Path:
    """A fresh folder under ``root`` named from the time and a random part."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    folder = root / f"{stamp}-{secrets.token_hex(6)}"
    folder.mkdir(parents=True, mode=0o750)
    return folder


def store(upload: UploadFile, kind: str, folder: Path, max_file_bytes: int) -> StoredFile:
    """Copy one uploaded file into ``folder`` under its generated name (size-checked, atomic)."""
    target = folder / STORED_NAMES[kind]
    partial = target.with_name(target.name + ".part")
    size = 0
    upload.file.seek(0)
    with open(partial, "wb") as out:
        while chunk := upload.file.read(_CHUNK):
            size += len(chunk)
            if size > max_file_bytes:
                out.close()
                partial.unlink(missing_ok=True)
                raise UploadRejected(_too_large(max_file_bytes), status=413)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if size == 0:
        partial.unlink(missing_ok=True)
        raise UploadRejected(f"{display_name(upload.filename)} is empty")
    os.replace(partial, target)
    return StoredFile(kind=kind, path=target, original_name=display_name(upload.filename), size=size)


def prune(root: Path, max_age_days: int = RETENTION_DAYS) -> int:
    """Remove upload folders (only those this module created) older than ``max_age_days``."""
    if not root.is_dir():
        return 0
    cutoff = time.time() - max_age_days * 86400
    removed = 0
    for entry in root.iterdir():
        if entry.is_dir() and _FOLDER.fullmatch(entry.name) and entry.stat().st_mtime < cutoff:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed
