"""The import's steps as plain functions, shared by the Airflow DAG and the CLI.

Every step reads its inputs from, and writes its outputs to, the run's staging folder
(``<staging_dir>/<run>/``), so steps can run on different workers and XCom only carries
small dicts. Layout::

    raw/tableA.csv, raw/tableB.csv     the files as fetched (+ raw/files.json fingerprints)
    work/table_a.parquet, ...          validated rows (canonical columns + __line__)
    work/validation.json               fatal problems, warnings and row errors per file
    work/a_rows.parquet, b_rows.parquet  every row with its outcome (matched, unmatched, ...)
    work/cse.parquet, csv.parquet      Aeries rows to load
    work/load_a.json, load_b.json      what each load did
    work/<step>.failed.json            why a step failed (removed when a retry succeeds)

A step that fails writes ``<step>.failed.json`` and re-raises, so the report step can say
what happened; a load that fails has rolled back and changed nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import pandas as pd
import sqlalchemy as sa

from casemis import report as rpt
from casemis.aeries import build_tables, create_history_tables, load_mapping
from casemis.loading import load_cse, load_csv, students_not_in_file
from casemis.matching import (
    DUPLICATE,
    ERROR,
    MATCHED,
    UNMATCHED,
    match_services,
    match_students,
    read_students,
)
from casemis.transform import to_table_frame
from casemis.validation import LINE, FileReport, RowError, validate_files

log = logging.getLogger(__name__)

Trigger = Literal["scheduled", "manual", "cli"]
KINDS = ("table_a", "table_b")
RAW_NAMES = {"table_a": "tableA.csv", "table_b": "tableB.csv"}
T = TypeVar("T")


class ImportRejected(Exception):
    """The files cannot be imported as they are (the report says why)."""


@dataclass(frozen=True)
class RunContext:
    """Identity and options of one import run; small and JSON-friendly (goes through XCom)."""

    run_id: str
    staging_root: str
    report_root: str
    trigger: Trigger = "cli"
    dry_run: bool = False
    on_error: Literal["skip_rows", "abort"] = "skip_rows"
    timezone: str = "America/Los_Angeles"
    started_at: str = ""
    include_services: bool = True
    report_path: str = ""  # an explicit report folder (the CLI's --report-dir)

    @property
    def folder_name(self) -> str:
        """A file-system-safe, collision-free folder name for the run id."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.run_id).strip("._")[:80] or "run"
        return f"{safe}-{hashlib.sha256(self.run_id.encode()).hexdigest()[:8]}"

    @property
    def staging(self) -> Path:
        """This run's staging folder."""
        return Path(self.staging_root) / self.folder_name

    @property
    def raw(self) -> Path:
        """Where fetched files land."""
        return self.staging / "raw"

    @property
    def work(self) -> Path:
        """Where intermediate results live."""
        return self.staging / "work"

    @property
    def report_dir(self) -> Path:
        """This run's report folder."""
        return Path(self.report_path) if self.report_path else Path(self.report_root) / self.folder_name

    def to_dict(self) -> dict[str, Any]:
        """For XCom."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunContext:
        """From XCom."""
        return cls(**data)


def now_iso() -> str:
    """The current time, timezone-aware, ISO 8601."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON file written by :func:`write_json` (``default`` when it does not exist)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else default


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def guarded(ctx: RunContext, step: str, fn: Callable[[], T]) -> T:
    """Run a step; on failure record why (for the report) and re-raise; on success clear it."""
    marker = ctx.work / f"{step}.failed.json"
    try:
        result = fn()
    except ImportRejected:
        raise
    except Exception as exc:
        record_failure(ctx, step, exc)
        raise
    marker.unlink(missing_ok=True)
    return result


def record_failure(ctx: RunContext, step: str, exc: BaseException) -> None:
    """Write ``<step>.failed.json`` so the report can say which step failed and why."""
    write_json(
        ctx.work / f"{step}.failed.json",
        {"step": step, "error": type(exc).__name__, "message": _safe_message(exc)},
    )


def _safe_message(exc: BaseException) -> str:
    """An exception message without connection strings or passwords."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = re.sub(r"\b(\w+://)[^@\s/]*@", r"\1***@", text)
    return text[:500]


# --------------------------------------------------------------------------- staging


def sha256_file(path: Path) -> str:
    """sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stage_file(
    ctx: RunContext,
    kind: str,
    source: Path | None = None,
    content: bytes | None = None,
    original_name: str | None = None,
) -> dict[str, Any]:
    """Copy one input (a readable path, or content given inline) into ``raw/`` atomically.

    The staged name is fixed per kind (``tableA.csv``/``tableB.csv``): a name supplied by a
    user is shown in the report but never used as a path.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown file kind {kind!r}")
    dest = ctx.raw / RAW_NAMES[kind]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        if content is not None:
            tmp.write_bytes(content)
        elif source is not None:
            shutil.copyfile(source, tmp)
        else:
            raise ValueError("stage_file needs a source path or content")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    info = {
        "kind": kind,
        "label": rpt.DEFAULT_LABELS[kind],
        "name": original_name or (source.name if source else RAW_NAMES[kind]),
        "size": dest.stat().st_size,
        "sha256": sha256_file(dest),
    }
    files = [f for f in read_json(ctx.raw / "files.json", []) if f["kind"] != kind]
    write_json(ctx.raw / "files.json", sorted([*files, info], key=lambda f: f["kind"]))
    return info


def staged_files(ctx: RunContext) -> list[dict[str, Any]]:
    """Fingerprints of the staged files (name, size, sha256)."""
    return read_json(ctx.raw / "files.json", [])


# --------------------------------------------------------------------------- validate


def _errors_frame(errors: list[RowError]) -> pd.DataFrame:
    return pd.DataFrame(
        [(e.line, e.column, e.value, e.message) for e in errors], columns=list(rpt.ERROR_COLUMNS)
    ).sort_values(["OriginalLineNumber", "Column"], kind="stable")


def validate_step(ctx: RunContext) -> dict[str, Any]:
    """Validate the staged files; write the row frames and ``validation.json``.

    Returns ``{"status": "ok"|"rejected", "message", "rows": {...}, "errors": {...}}``.
    A rejected import (a file rejected, or ``abort`` with any failing row) raises
    ``ImportRejected`` after writing everything the report needs.
    """
    table_a = ctx.raw / RAW_NAMES["table_a"]
    table_b = ctx.raw / RAW_NAMES["table_b"]
    use_b = ctx.include_services and table_b.exists()
    result = validate_files(table_a, table_b if use_b else None)
    names = {f["kind"]: f["name"] for f in staged_files(ctx)}
    doc: dict[str, Any] = {"files": {}}
    for report in result.reports():
        report.path = names.get(report.kind, report.path)
        doc["files"][report.kind] = {
            "rows": report.rows,
            "fatal": report.fatal,
            "warnings": report.warnings,
            "present_fields": report.present_fields,
            "error_lines": sorted(report.error_lines),
        }
        if report.frame is not None:
            _write_parquet(report.frame, ctx.work / f"{report.kind}.parquet")
        _write_parquet(_errors_frame(report.errors), ctx.work / f"{report.kind}.errors.parquet")
    status, message = _validation_outcome(ctx, result.reports())
    doc["status"], doc["message"] = status, message
    write_json(ctx.work / "validation.json", doc)
    summary = {
        "status": status,
        "message": message,
        "rows": {r.kind: r.rows for r in result.reports()},
        "rows_with_errors": {r.kind: r.rejected_rows for r in result.reports()},
    }
    log.info("validation: %s", {k: v for k, v in summary.items() if k != "message"})
    if status == "rejected":
        raise ImportRejected(message)
    return summary


def _validation_outcome(ctx: RunContext, reports: list[FileReport]) -> tuple[str, str]:
    rejected = [r for r in reports if r.rejected]
    if rejected:
        first = rejected[0]
        return "rejected", f"Import rejected: {first.label} {first.path}: {first.fatal[0]}"
    failing = sum(len(r.error_lines) for r in reports)
    if failing and ctx.on_error == "abort":
        return "rejected", f"Import rejected: {failing} row(s) failed validation and on_error is abort"
    return "ok", "files are valid" if not failing else f"{failing} row(s) failed validation and are skipped"


# --------------------------------------------------------------------------- transform


def transform_step(ctx: RunContext, engine: sa.Engine) -> dict[str, Any]:
    """Match rows to Aeries students and build the CSE/CSV rows to load."""
    mapping = load_mapping()
    tables = build_tables(mapping)
    validation = read_json(ctx.work / "validation.json")
    a_info = validation["files"]["table_a"]
    frame_a = pd.read_parquet(ctx.work / "table_a.parquet")
    create_history_tables(engine, tables)  # this project's own tables; a no-op once they exist
    with engine.connect() as conn:
        students = read_students(conn, tables)
    matched = match_students(frame_a, set(a_info["error_lines"]), students)
    _write_parquet(matched.frame, ctx.work / "a_rows.parquet")
    cse = to_table_frame(matched.rows(MATCHED), mapping.cse, a_info["present_fields"])
    _write_parquet(cse, ctx.work / "cse.parquet")
    counts = {"table_a": _outcome_counts(matched.frame)}

    b_info = validation["files"].get("table_b")
    if b_info is not None:
        from casemis.contract import load_contract

        contract_b = load_contract("table_b")
        identity = [mapping.csv.column(c).field for c in mapping.csv.identity]
        frame_b = pd.read_parquet(ctx.work / "table_b.parquet")
        services = match_services(
            frame_b, set(b_info["error_lines"]), matched.frame, identity, contract_b.meta_list("student_key")
        )
        _write_parquet(services, ctx.work / "b_rows.parquet")
        csv = to_table_frame(services[services["OUTCOME"] == MATCHED], mapping.csv, b_info["present_fields"])
        _write_parquet(csv, ctx.work / "csv.parquet")
        # Only students whose service rows were all imported are reconciled (removals).
        troubled = set(services.loc[services["OUTCOME"] != MATCHED, "STU_ID"].dropna().astype(int))
        reconcile = sorted(set(csv["ID"].astype(int)) - troubled)
        write_json(ctx.work / "reconcile_ids.json", reconcile)
        counts["table_b"] = _outcome_counts(services)
    log.info("matching: %s", counts)
    return counts


def _outcome_counts(frame: pd.DataFrame) -> dict[str, int]:
    outcome = frame["OUTCOME"]
    return {
        "read": len(frame),
        "matched": int((outcome == MATCHED).sum()),
        "unmatched": int((outcome == UNMATCHED).sum()),
        "duplicates": int((outcome == DUPLICATE).sum()),
        "errors": int((outcome == ERROR).sum()),
    }


# --------------------------------------------------------------------------- load


def _in_transaction(engine: sa.Engine, dry_run: bool, work: Callable[[sa.Connection], T]) -> T:
    """Run ``work`` in one transaction: commit, or roll back for a dry run or on error."""
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            result = work(conn)
        except BaseException:
            transaction.rollback()
            raise
        if dry_run:
            transaction.rollback()
        else:
            transaction.commit()
        return result


def load_table_a_step(ctx: RunContext, engine: sa.Engine) -> dict[str, int]:
    """Load CSE in one transaction; record the counts in ``load_a.json``."""
    mapping = load_mapping()
    tables = build_tables(mapping)
    cse = pd.read_parquet(ctx.work / "cse.parquet")
    counts = _in_transaction(engine, ctx.dry_run, lambda conn: load_cse(conn, tables, mapping, cse))
    write_json(ctx.work / "load_a.json", counts.as_dict())
    _write_parquet(pd.DataFrame({"ID": counts.added_ids}), ctx.work / "load_a.added.parquet")
    return counts.as_dict()


def load_table_b_step(ctx: RunContext, engine: sa.Engine) -> dict[str, int] | None:
    """Load CSV in one transaction (skipped when there is no services file)."""
    path = ctx.work / "csv.parquet"
    if not path.exists():
        log.info("no services file in this run; CSV left as it is")
        return None
    mapping = load_mapping()
    tables = build_tables(mapping)
    csv = pd.read_parquet(path)
    reconcile = set(read_json(ctx.work / "reconcile_ids.json", []))

    counts = _in_transaction(
        engine,
        ctx.dry_run,
        lambda conn: load_csv(conn, tables, mapping, csv, reconcile_ids=reconcile, run_id=ctx.run_id),
    )
    write_json(ctx.work / "load_b.json", counts.as_dict())
    return counts.as_dict()


# --------------------------------------------------------------------------- report


def _student_records(rows: pd.DataFrame, with_id: bool) -> pd.DataFrame:
    """Aeries-style student record columns from tableA rows."""

    def col(name: str) -> pd.Series:
        return rows[name] if name in rows.columns else pd.Series(pd.NA, index=rows.index, dtype="str")

    out = pd.DataFrame(
        {
            "OriginalLineNumber": rows[LINE],
            "SSID": col("SSID"),
            "FirstName": col("FIRST_NAME"),
            "LastName": col("LAST_NAME"),
            "Birthdate": col("BIRTHDATE"),
            "Grade": col("GRADE"),
        }
    )
    if with_id:
        out["StudentID"] = rows["STU_ID"]
    else:
        out.insert(2, "StudentID", col("STUDENT_ID"))
        out["Reason"] = rows["REASON"]
    return out.reset_index(drop=True)


def _service_records(rows: pd.DataFrame, with_id: bool) -> pd.DataFrame:
    fields = ["STUDENT_ID", "SSID", "SERVICE", "SERV_PROV", "SERV_LOC", "SERV_FREQ", "SERV_DUR"]
    out = pd.DataFrame({"OriginalLineNumber": rows[LINE]})
    for f in fields:
        if f in rows.columns:
            out[f] = rows[f]
    if with_id:
        out["AeriesStudentID"] = rows["STU_ID"]
    else:
        out["Reason"] = rows["REASON"]
    return out.reset_index(drop=True)


def _outcome_attachments(
    rows: pd.DataFrame,
    loaded: bool,
    records: Callable[[pd.DataFrame, bool], pd.DataFrame],
    names: tuple[str, str, str],
) -> dict[str, pd.DataFrame]:
    """Imported (only once the load committed), unmatched and duplicate records of one file."""
    imported, unmatched, duplicates = names
    outcome = rows["OUTCOME"]
    return {
        imported: records(rows[outcome == MATCHED] if loaded else rows[:0], True),
        unmatched: records(rows[outcome == UNMATCHED], False),
        duplicates: records(rows[outcome == DUPLICATE], False),
    }


def _attachments(ctx: RunContext, engine: sa.Engine | None) -> dict[str, pd.DataFrame]:
    """The CSV attachments, from whatever the earlier steps left in staging."""
    out: dict[str, pd.DataFrame] = {}
    for kind, errors_name in (("table_a", rpt.STUDENTS_ERRORS), ("table_b", rpt.SERVICES_ERRORS)):
        path = ctx.work / f"{kind}.errors.parquet"
        if path.exists():
            out[errors_name] = pd.read_parquet(path)
    a_rows = ctx.work / "a_rows.parquet"
    if a_rows.exists():
        rows = pd.read_parquet(a_rows)
        names = (rpt.STUDENTS_IMPORTED, rpt.STUDENTS_UNMATCHED, rpt.STUDENTS_DUPLICATES)
        out.update(_outcome_attachments(rows, (ctx.work / "load_a.json").exists(), _student_records, names))
        if engine is not None:
            try:
                with engine.connect() as conn:
                    ids = set(rows["STU_ID"].dropna().astype(int))
                    out[rpt.STUDENTS_NOT_IN_FILE] = students_not_in_file(conn, build_tables(), ids).rename(
                        columns={"ID": "StudentID", "DI": "Disability", "PT": "PlanType", "XD": "ExitDate"}
                    )
            except sa.exc.SQLAlchemyError as exc:
                log.warning("could not list CSE students not in the file: %s", _safe_message(exc))
    b_rows = ctx.work / "b_rows.parquet"
    if b_rows.exists():
        rows = pd.read_parquet(b_rows)
        names = (rpt.SERVICES_IMPORTED, rpt.SERVICES_UNMATCHED, rpt.SERVICES_DUPLICATES)
        out.update(_outcome_attachments(rows, (ctx.work / "load_b.json").exists(), _service_records, names))
    return out


def _counts(ctx: RunContext, validation: dict[str, Any]) -> dict[str, Any]:
    """Per-file counts from the outcome frames and the load results."""
    counts: dict[str, Any] = {}
    for kind, rows_name, load_name in (("table_a", "a_rows", "load_a"), ("table_b", "b_rows", "load_b")):
        info = (validation.get("files") or {}).get(kind)
        if info is None:
            counts[kind] = None
            continue
        rows_path = ctx.work / f"{rows_name}.parquet"
        if rows_path.exists():
            base = _outcome_counts(pd.read_parquet(rows_path, columns=["OUTCOME"]))
        else:
            read = int(info["rows"])
            errors = read if info["fatal"] else len(info["error_lines"])
            base = {"read": read, "matched": 0, "unmatched": 0, "duplicates": 0, "errors": errors}
        loaded = read_json(ctx.work / f"{load_name}.json", {})
        base.update({k: int(loaded.get(k, 0)) for k in ("added", "updated", "unchanged")})
        if kind == "table_b":
            base["removed"] = int(loaded.get("removed", 0))
        counts[kind] = base
    return counts


def _status(ctx: RunContext, validation: dict[str, Any] | None) -> tuple[str, str]:
    failures = sorted(ctx.work.glob("*.failed.json")) if ctx.work.exists() else []
    if failures:
        first = read_json(failures[0])
        loaded_a = (ctx.work / "load_a.json").exists()
        note = (
            " (CSE was loaded; CSV was not changed)" if loaded_a and first["step"] == "load_table_b" else ""
        )
        return "failed", f"Import failed in {first['step']}: {first['error']}: {first['message']}{note}"
    if validation is None:
        return "failed", "Import failed before the files were validated"
    if validation.get("status") == "rejected":
        return "rejected", validation["message"]
    if not (ctx.work / "load_a.json").exists():
        return "failed", "Import did not reach the load step"
    # The report puts its own "Import completed" heading in front of this message.
    loaded = "CSE and CSV" if (ctx.work / "load_b.json").exists() else "CSE"
    if ctx.dry_run:
        return "success", f"dry run: nothing was written; the counts show what {loaded} would get"
    return "success", f"the matched rows were loaded into {loaded}"


def last_successful_import(engine: sa.Engine, exclude_run: str) -> dict[str, Any] | None:
    """The most recent successful, non-dry-run import and its files' sha256 by kind."""
    tables = build_tables()
    runs, files = tables.runs, tables.files
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(runs.name):
            return None
        row = conn.execute(
            sa.select(runs.c.RUN_ID, runs.c.FINISHED_AT)
            .where(runs.c.STATUS == "success", runs.c.DRY_RUN == sa.false(), runs.c.RUN_ID != exclude_run)
            .order_by(runs.c.FINISHED_AT.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        shas = dict(
            conn.execute(sa.select(files.c.KIND, files.c.SHA256).where(files.c.RUN_ID == row[0])).all()
        )
    finished = row[1]
    if isinstance(finished, dt.datetime) and finished.tzinfo is None:
        finished = finished.replace(tzinfo=dt.UTC)
    return {"run_id": row[0], "finished_at": finished.isoformat() if finished else None, "sha256": shas}


def record_history(engine: sa.Engine, summary: dict[str, Any], ctx: RunContext) -> None:
    """Write the run and its files to the import-history tables (replacing a retry's row)."""
    tables = create_history_tables(engine)
    runs, files = tables.runs, tables.files
    counts = json.dumps(summary.get("counts"), sort_keys=True)
    with engine.begin() as conn:
        conn.execute(files.delete().where(files.c.RUN_ID == ctx.run_id))
        conn.execute(runs.delete().where(runs.c.RUN_ID == ctx.run_id))
        conn.execute(
            runs.insert().values(
                RUN_ID=ctx.run_id,
                STARTED_AT=dt.datetime.fromisoformat(ctx.started_at) if ctx.started_at else None,
                FINISHED_AT=dt.datetime.fromisoformat(summary["completed_at"]),
                TRIGGER=ctx.trigger,
                STATUS=summary["status"],
                DRY_RUN=ctx.dry_run,
                ON_ERROR=ctx.on_error,
                MESSAGE=summary.get("message", "")[:4000],
                COUNTS=counts,
            )
        )
        staged = summary.get("files") or []
        if staged:
            conn.execute(
                files.insert(),
                [
                    {
                        "RUN_ID": ctx.run_id,
                        "KIND": f["kind"],
                        "NAME": f["name"][:255],
                        "SIZE": f["size"],
                        "SHA256": f["sha256"],
                    }
                    for f in staged
                ],
            )


def report_step(
    ctx: RunContext,
    engine: sa.Engine | None,
    *,
    recipients: list[str] | None = None,
    smtp_conn_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the completion report from staging, write it, record history, email it.

    Runs whatever happened before (``trigger_rule=all_done`` in the DAG). The report is on
    disk before any email is attempted; a mail failure is logged and re-raised after the
    history is recorded, so nothing is lost.
    """
    validation = read_json(ctx.work / "validation.json")
    status, message = _status(ctx, validation)
    files = staged_files(ctx)
    summary: dict[str, Any] = {
        "run_id": ctx.run_id,
        "status": status,
        "trigger": ctx.trigger,
        "dry_run": ctx.dry_run,
        "on_error": ctx.on_error,
        "completed_at": now_iso(),
        "timezone": ctx.timezone,
        "message": message,
        "files": files,
        "counts": _counts(ctx, validation or {}),
        "warnings": {k: v["warnings"] for k, v in ((validation or {}).get("files") or {}).items()},
        "fatal": {k: v["fatal"] for k, v in ((validation or {}).get("files") or {}).items()},
        "identical_to_last_import": None,
        "not_refreshed_since": None,
    }
    summary.update(extra or {})
    if engine is not None:
        try:
            last = last_successful_import(engine, ctx.run_id)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not read the import history: %s", _safe_message(exc))
            last = None
        if last and files:
            same = all(last["sha256"].get(f["kind"]) == f["sha256"] for f in files)
            summary["identical_to_last_import"] = same
            if same and not summary.get("not_refreshed_since"):
                summary["not_refreshed_since"] = last["finished_at"]
    written = rpt.write_report(ctx.report_dir, summary, _attachments(ctx, engine))
    log.info("report written to %s", ctx.report_dir)
    if engine is not None:
        try:
            record_history(engine, summary, ctx)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not record the import history: %s", _safe_message(exc))
    if smtp_conn_id and recipients:
        from casemis.notify import send_report

        sent = send_report(summary, written, recipients=recipients, smtp_conn_id=smtp_conn_id)
        log.info("report emailed to %d recipient(s)", len(sent))
    return summary


def run_all(
    ctx: RunContext,
    engine: sa.Engine,
    table_a: Path,
    table_b: Path | None = None,
    *,
    recipients: list[str] | None = None,
    smtp_conn_id: str | None = None,
) -> dict[str, Any]:
    """Every step in order, in one process (the CLI's ``import``). Returns the summary.

    Failures are captured in the report (status ``rejected`` or ``failed``), never lost.
    """
    steps: list[tuple[str, Callable[[], Any]]] = [
        (
            "stage",
            lambda: (
                [stage_file(ctx, "table_a", table_a)]
                + ([stage_file(ctx, "table_b", table_b)] if table_b and ctx.include_services else [])
            ),
        ),
        ("validate", lambda: validate_step(ctx)),
        ("transform", lambda: transform_step(ctx, engine)),
        ("load_table_a", lambda: load_table_a_step(ctx, engine)),
        ("load_table_b", lambda: load_table_b_step(ctx, engine)),
    ]
    for name, fn in steps:
        try:
            guarded(ctx, name, fn)
        except ImportRejected:
            break
        except Exception:  # noqa: BLE001 - recorded in <step>.failed.json and reported below
            log.exception("step %s failed", name)
            break
    return report_step(ctx, engine, recipients=recipients, smtp_conn_id=smtp_conn_id)
