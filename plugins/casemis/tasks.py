"""What each task of the ``casemis_import`` DAG does, as plain functions.

The DAG file only wires these together; each takes plain values (the run id, the run type,
the params, the settings) so it can be unit-tested without Airflow. Airflow-specific
outcomes are expressed as exceptions of this module (``SkipRun``) that the DAG turns into
Airflow's skip.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from casemis import paths
from casemis.pipeline import (
    RAW_NAMES,
    RunContext,
    _read_json,
    _write_json,
    guarded,
    last_successful_import,
    now_iso,
    stage_file,
)
from casemis.settings import ImportSettings

log = logging.getLogger(__name__)

KIND_PARAMS = {"table_a": ("table_a_path", "table_a_content"), "table_b": ("table_b_path", "table_b_content")}


class SkipRun(Exception):
    """Nothing to do for this run (schedule disabled, files not refreshed); not an error."""


class BadRequest(ValueError):
    """The run's params cannot be used (the message says why)."""


def manual_inputs(params: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The files a manual run supplies: kind -> ("path", path) or ("content", text)."""
    out: dict[str, tuple[str, str]] = {}
    for kind, (path_key, content_key) in KIND_PARAMS.items():
        path, content = params.get(path_key), params.get(content_key)
        if path and content:
            raise BadRequest(f"give either {path_key} or {content_key}, not both")
        if path:
            out[kind] = ("path", str(path))
        elif content:
            out[kind] = ("content", str(content))
    if out and "table_a" not in out:
        raise BadRequest("a manual import needs the Student Data file (table_a_path or table_a_content)")
    return out


def allowed_path(path: str, settings: ImportSettings) -> Path:
    """Resolve a manual run's file path; it must lie under the manual or the local folder.

    This stops a run's params from reading arbitrary files on the worker.
    """
    candidate = paths.resolve(path).resolve()
    roots = [paths.resolve(settings.manual_dir).resolve(), paths.resolve(settings.local_path).resolve()]
    if not any(candidate.is_relative_to(root) for root in roots):
        raise BadRequest(f"{path} is outside the folders manual runs may read ({', '.join(map(str, roots))})")
    if not candidate.is_file():
        raise BadRequest(f"{path} is not a readable file")
    return candidate


def begin_run(run_id: str, run_type: str, params: dict[str, Any], settings: ImportSettings) -> RunContext:
    """Decide this run's options: params win, null params fall back to the settings.

    A scheduled run while the schedule is disabled is skipped (manual runs always proceed).
    """
    scheduled = run_type == "scheduled"
    if scheduled and not settings.enabled:
        raise SkipRun("the scheduled import is disabled in the CASEMIS settings")
    inputs = manual_inputs(params)
    on_error = params.get("on_error") or settings.on_error
    if on_error not in ("skip_rows", "abort"):
        raise BadRequest(f"on_error must be skip_rows or abort, not {on_error!r}")
    include_b = settings.include_services if not inputs else "table_b" in inputs
    return RunContext(
        run_id=run_id,
        staging_root=str(paths.resolve(settings.staging_dir)),
        report_root=str(paths.resolve(settings.report_dir)),
        trigger="scheduled" if scheduled else "manual",
        dry_run=bool(params.get("dry_run")),
        on_error=on_error,
        timezone=settings.timezone,
        started_at=now_iso(),
        include_services=include_b,
    )


def make_source(settings: ImportSettings):  # type: ignore[no-untyped-def]
    """The configured file location."""
    from casemis.sources import make_source as build

    if settings.location_type == "local":
        return build("local", path=str(paths.resolve(settings.local_path)))
    if settings.location_type == "smb":
        return build("smb", conn_id=settings.smb_conn_id, unc_path=settings.smb_path or None)
    return build(
        "sftp",
        conn_id=settings.sftp_conn_id,
        host=settings.sftp_host or None,
        port=settings.sftp_port,
        directory=settings.sftp_directory,
    )


def wanted_names(ctx: RunContext, settings: ImportSettings) -> dict[str, str]:
    """kind -> remote file name, for the files this run reads from the location."""
    names = {"table_a": settings.table_a_name}
    if ctx.include_services:
        names["table_b"] = settings.table_b_name
    return names


def poke_files(ctx: RunContext, settings: ImportSettings, params: dict[str, Any]) -> tuple[bool, str]:
    """One look at the location: are the files there and unchanged since the last look?

    The previous observation is kept in the run's staging folder (shared by all workers),
    so the sensor can run in reschedule mode without holding a worker slot.
    """
    if manual_inputs(params):
        return True, "files supplied with the run"
    from casemis.sources import check_stable

    source = make_source(settings)
    state = ctx.staging / "observation.json"
    previous = _read_json(state)
    names = list(wanted_names(ctx, settings).values())
    ready, observation = check_stable(source, names, previous, min_interval=settings.stable_seconds)
    if previous is None and all(observation["files"].values()):
        # First look and the files are there: look again after the settle time within this
        # poke (at most a minute), so files that are already complete need one poke only.
        time.sleep(min(settings.stable_seconds, 60))
        ready, observation = check_stable(source, names, observation, min_interval=min(settings.stable_seconds, 60))
    _write_json(state, observation)
    missing = [n for n, info in observation["files"].items() if info is None]
    if missing:
        return False, f"waiting for {', '.join(missing)} in {source.describe()}"
    return ready, (
        "files are complete" if ready else f"files found in {source.describe()}; checking they are complete"
    )


def fetch_files(ctx: RunContext, settings: ImportSettings, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Copy the run's files into staging (checksummed, atomic) and check they are new.

    When the files are exactly those of the last successful import and the settings say
    ``skip``, records that in staging and raises ``SkipRun`` (the report says so).
    """
    inputs = manual_inputs(params)
    if inputs:
        for kind, (how, value) in inputs.items():
            if how == "path":
                source = allowed_path(value, settings)
                stage_file(ctx, kind, source=source, original_name=source.name)
            else:
                stage_file(
                    ctx, kind, content=value.encode("utf-8"), original_name=f"{RAW_NAMES[kind]} (pasted)"
                )
    else:
        from casemis.sources import fetch_with_retry

        source = make_source(settings)
        for kind, name in wanted_names(ctx, settings).items():
            tmp = ctx.staging / "download" / RAW_NAMES[kind]
            tmp.parent.mkdir(parents=True, exist_ok=True)
            fetch_with_retry(source, name, tmp)
            stage_file(ctx, kind, source=tmp, original_name=name)
            tmp.unlink(missing_ok=True)
    files = json.loads((ctx.raw / "files.json").read_text(encoding="utf-8"))
    if ctx.trigger == "scheduled" and settings.not_refreshed == "skip":
        _skip_if_not_refreshed(ctx, settings, files)
    log.info("staged %d file(s): %s", len(files), ", ".join(f"{f['kind']} {f['size']} bytes" for f in files))
    return files


def _skip_if_not_refreshed(ctx: RunContext, settings: ImportSettings, files: list[dict[str, Any]]) -> None:
    from casemis.db import engine_from_connection

    last = last_successful_import(engine_from_connection(settings.target_conn_id), ctx.run_id)
    if last and all(last["sha256"].get(f["kind"]) == f["sha256"] for f in files):
        _write_json(ctx.work / "not_refreshed.json", {"since": last["finished_at"], "run_id": last["run_id"]})
        raise SkipRun(f"the files are the ones imported on {last['finished_at']}; not importing them again")


def report_extra(ctx: RunContext) -> dict[str, Any]:
    """Report fields for a run that skipped its import because the files were not refreshed."""
    marker = _read_json(ctx.work / "not_refreshed.json")
    if not marker:
        return {}
    return {
        "status": "not_refreshed",
        "message": f"The files have not been refreshed since {marker['since']}; nothing was imported",
        "not_refreshed_since": marker["since"],
        "identical_to_last_import": True,
    }


def run_step(ctx: RunContext, step: str, fn: Any) -> Any:
    """Run a pipeline step with failure recording, logging its duration."""
    start = time.perf_counter()
    result = guarded(ctx, step, fn)
    log.info("%s finished in %.1f s", step, time.perf_counter() - start)
    return result


def run_recipients(
    settings: ImportSettings, run_type: str, triggering_user: str | None, params: dict[str, Any]
) -> list[str]:
    """Who gets the report: the configured addresses, plus the person who started a manual
    run when their address is known (Aeries mails the logged-in user too)."""
    from casemis.notify import parse_recipients

    recipients = list(settings.recipients)
    if run_type != "scheduled":
        for candidate in (params.get("notify_email"), triggering_user):
            if candidate and "@" in str(candidate):
                recipients.append(str(candidate))
    return parse_recipients(recipients) if recipients else []


def finish_run(ctx: RunContext, settings: ImportSettings, dag_run: Any) -> dict[str, Any]:
    """The ``email_report`` task: write the report, record the run, email it."""
    from casemis.db import engine_from_connection
    from casemis.pipeline import report_step

    try:
        engine = engine_from_connection(settings.target_conn_id)
    except Exception as exc:  # noqa: BLE001 - the report must still be written
        log.warning("target database unavailable for the report: %s", type(exc).__name__)
        engine = None
    params = dict(getattr(dag_run, "conf", None) or {})
    recipients = run_recipients(
        settings, getattr(dag_run, "run_type", ""), getattr(dag_run, "triggering_user_name", None), params
    )
    summary = report_step(
        ctx, engine, recipients=recipients, smtp_conn_id=settings.smtp_conn_id, extra=report_extra(ctx)
    )
    log.info("import %s: %s", summary["status"], json.dumps(summary["counts"]))
    return summary
