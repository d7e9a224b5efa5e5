"""What each task of the ``casemis_import`` DAG does, as plain functions.

The DAG file only wires these together; each takes plain values (the run id, the run type,
the params, the settings) so it can be unit-tested without Airflow. Airflow-specific
outcomes are expressed as exceptions of this module (``SkipRun``) that the DAG turns into
Airflow's skip.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from casemis import paths
from casemis.pipeline import (
    RAW_NAMES,
    RunContext,
    guarded,
    last_successful_import,
    now_iso,
    read_json,
    stage_file,
    staged_files,
    write_json,
)
from casemis.settings import ImportSettings

if TYPE_CHECKING:
    from casemis.sources import Source

log = logging.getLogger(__name__)

KIND_PARAMS = {"table_a": ("table_a_path", "table_a_content"), "table_b": ("table_b_path", "table_b_content")}
# The sensor's state between pokes, in the run's staging folder.
OBSERVATION_FILE = "observation.json"
# A poke that finds the files waits at most this long (seconds) for them to settle, then
# looks again; longer settle times are spread over pokes (reschedule: no slot held).
SETTLE_IN_POKE = 60.0
# Downloads: attempts per file and the first back-off (doubled each time), in seconds.
FETCH_ATTEMPTS = 3
FETCH_BACKOFF = 2.0


class SkipRun(Exception):
    """Nothing to do for this run (schedule disabled, files not refreshed); not an error."""


class BadRequest(ValueError):
    """The run's params cannot be used (the message says why)."""


class WaitTimedOut(Exception):
    """The files did not arrive, or kept changing, for longer than ``wait_timeout_minutes``."""


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


def make_source(settings: ImportSettings) -> Source:
    """The configured file location (local folder, SMB share or SFTP site).

    Only connection ids reach the source; the hooks read the credentials from the Airflow
    connections themselves.
    """
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


def is_permanent_failure(exc: BaseException) -> bool:
    """True when retrying the task cannot help: bad params, wrong password, wrong host key,
    bad location settings, a missing file at fetch time, a wait that timed out.

    The DAG fails such tasks at once instead of retrying (retrying a wrong password only
    locks the account); dropped connections and other transport errors stay retryable.
    """
    from casemis.sources import SourceError, is_retryable

    if isinstance(exc, BadRequest | WaitTimedOut):
        return True
    return isinstance(exc, SourceError) and not is_retryable(exc)


def _unchanged(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether two observations saw the same files, all present, with equal size and mtime."""
    old, new = before.get("files") or {}, after.get("files") or {}
    if not new or set(old) != set(new):
        return False
    return all(
        new[name] is not None
        and old[name] is not None
        and int(old[name]["size"]) == int(new[name]["size"])
        and float(old[name]["mtime"]) == float(new[name]["mtime"])
        for name in new
    )


def poke_files(
    ctx: RunContext,
    settings: ImportSettings,
    params: dict[str, Any],
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, str]:
    """One look at the location: are the files there and unchanged for ``stable_seconds``?

    Returns ``(ready, message)``. The state between looks lives in the run's staging folder
    (``observation.json``, shared by all workers), so the sensor can run in reschedule mode
    without holding a worker slot: it holds the oldest observation the files still match
    (when they stopped changing) and when this run started waiting. When the files are
    present and the rest of the settle time is short (at most ``SETTLE_IN_POKE`` seconds),
    the poke waits it out and looks again, so files that are already complete need one
    poke only. Raises ``WaitTimedOut`` once ``wait_timeout_minutes`` have passed without the
    files being ready; errors of the location (``SourceError``) propagate.
    """
    if manual_inputs(params):
        return True, "files supplied with the run"
    from casemis.sources import is_stable, make_observation

    source = make_source(settings)
    where = source.describe()
    names = list(wanted_names(ctx, settings).values())
    interval = float(settings.stable_seconds)
    state_path = ctx.staging / OBSERVATION_FILE
    previous = read_json(state_path)
    waiting_since = float(previous.get("waiting_since", previous["observed_at"])) if previous else clock()

    observation = make_observation(source.stat_many(names), clock())
    base = previous if previous and _unchanged(previous, observation) else observation
    complete = all(observation["files"].values())
    if complete and not is_stable(base, observation, interval):
        rest = max(interval - (observation["observed_at"] - base["observed_at"]), 0.0)
        if rest <= SETTLE_IN_POKE:
            sleep(rest)
            observation = make_observation(source.stat_many(names), clock())
            if not _unchanged(base, observation):
                base = observation
            complete = all(observation["files"].values())
    ready = complete and is_stable(base, observation, interval)
    write_json(
        state_path,
        {
            "observed_at": base["observed_at"],
            "files": base["files"],
            "last_seen_at": observation["observed_at"],
            "waiting_since": waiting_since,
        },
    )
    missing = [name for name, info in observation["files"].items() if info is None]
    if ready:
        sizes = ", ".join(f"{name} ({info['size']:,} bytes)" for name, info in observation["files"].items())
        return True, f"files are complete in {where}: {sizes}"
    if missing:
        message = f"waiting for {', '.join(missing)} in {where}"
    else:
        message = (
            f"{', '.join(names)} found in {where}; waiting until they have not changed for "
            f"{settings.stable_seconds} s (the vendor may still be writing them)"
        )
    waited = clock() - waiting_since
    if waited >= settings.wait_timeout_minutes * 60:
        problem = f"{', '.join(missing)} did not appear" if missing else f"{', '.join(names)} kept changing"
        raise WaitTimedOut(
            f"gave up after {settings.wait_timeout_minutes} minute(s): {problem} in {where} "
            "(setting wait_timeout_minutes)"
        )
    return False, message


def fetch_files(ctx: RunContext, settings: ImportSettings, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Copy the run's files into ``raw/`` of its staging folder, checksummed, and return them.

    Manual runs copy the path or text they were given. Otherwise each file is downloaded
    from the location with retries on dropped connections (``fetch_with_retry``: written to
    a ``.part`` file, size-checked, renamed), staged, and its sha256 compared with the one
    computed during the download. The location is then looked at once more: a file that
    changed after the sensor found it complete raises ``SourceIntegrityError`` (retryable;
    the new observation is kept so the retry checks against it). When anything fails, the
    partly staged files are removed, so no later task can take them as complete.
    """
    try:
        return _stage_inputs(ctx, settings, params)
    except BaseException:
        _discard_staged(ctx)
        raise


def _stage_inputs(ctx: RunContext, settings: ImportSettings, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The body of :func:`fetch_files` (without the clean-up on failure)."""
    _discard_staged(ctx)  # a retry starts from nothing
    inputs = manual_inputs(params)
    if inputs:
        for kind, (how, value) in inputs.items():
            if how == "path":
                path = allowed_path(value, settings)
                stage_file(ctx, kind, source=path, original_name=path.name)
            else:
                stage_file(
                    ctx, kind, content=value.encode("utf-8"), original_name=f"{RAW_NAMES[kind]} (pasted)"
                )
    else:
        from casemis.sources import SourceIntegrityError, fetch_with_retry

        source = make_source(settings)
        names = wanted_names(ctx, settings)
        download = ctx.staging / "download"
        for kind, name in names.items():
            tmp = download / RAW_NAMES[kind]
            digest = fetch_with_retry(source, name, tmp, attempts=FETCH_ATTEMPTS, backoff=FETCH_BACKOFF)
            info = stage_file(ctx, kind, source=tmp, original_name=name)
            tmp.unlink(missing_ok=True)
            if info["sha256"] != digest:
                raise SourceIntegrityError(f"{name} changed on the way into the staging folder; retrying")
        _check_unchanged(ctx, source, names)
    files = staged_files(ctx)
    log.info("staged %d file(s): %s", len(files), ", ".join(f"{f['kind']} {f['size']} bytes" for f in files))
    return files


def _check_unchanged(ctx: RunContext, source: Source, names: dict[str, str]) -> None:
    """Look at the location once more after the copy: each file must still have the staged
    size and the size/mtime the sensor found stable (``observation.json``).

    A file that changed is reported with ``SourceIntegrityError`` (retryable), and the new
    observation replaces the sensor's, so the retry accepts the file only if it has not
    changed again by then.
    """
    from casemis.sources import SourceIntegrityError, make_observation

    now = make_observation(source.stat_many(list(names.values())), time.time())
    state_path = ctx.staging / OBSERVATION_FILE
    seen = read_json(state_path)
    staged = {f["kind"]: f for f in staged_files(ctx)}
    changed = []
    for kind, name in names.items():
        info = now["files"][name]
        found_stable = {"files": {name: (seen["files"].get(name) if seen else info)}}
        if (
            info is None
            or int(info["size"]) != staged[kind]["size"]
            or not _unchanged(found_stable, {"files": {name: info}})
        ):
            changed.append(name)
    if not changed:
        return
    if seen is not None:
        write_json(state_path, {**seen, "observed_at": now["observed_at"], "files": now["files"]})
    raise SourceIntegrityError(
        f"{', '.join(changed)} changed in {source.describe()} after it was found complete "
        "(the vendor may still be writing it); the copy is discarded and the task will retry"
    )


def _discard_staged(ctx: RunContext) -> None:
    """Remove whatever an earlier or failed attempt left in ``raw/`` and ``download/``."""
    for folder in (ctx.raw, ctx.staging / "download"):
        if folder.is_dir():
            shutil.rmtree(folder)


def not_refreshed(ctx: RunContext, settings: ImportSettings, files: list[dict[str, Any]]) -> str | None:
    """Why this run should stop because its files were already imported, or None to go on.

    Applies to scheduled runs when ``settings.not_refreshed`` is ``skip``: when every staged
    file has the sha256 of the same kind of file in the last successful import, a marker is
    written (``work/not_refreshed.json``, read by :func:`report_extra`) and the reason is
    returned; the DAG then skips the import and the report says the files were not
    refreshed. With ``reimport`` (Aeries' behaviour) or on manual runs, the files are
    imported again.
    """
    marker = ctx.work / "not_refreshed.json"
    marker.unlink(missing_ok=True)  # left by an earlier try of this run, if any
    if ctx.trigger != "scheduled" or settings.not_refreshed != "skip" or not files:
        return None
    from casemis.db import engine_from_connection

    engine = engine_from_connection(settings.target_conn_id)
    try:
        last = last_successful_import(engine, ctx.run_id)
    finally:
        engine.dispose()
    if not last or not all(last["sha256"].get(f["kind"]) == f["sha256"] for f in files):
        return None
    write_json(marker, {"since": last["finished_at"], "run_id": last["run_id"]})
    when = _local_time(last["finished_at"], ctx.timezone)
    return f"the files are the ones imported on {when}; not importing them again"


def _local_time(value: str | None, zone: str) -> str:
    """An ISO timestamp as ``2026-12-04 10:31 PST`` in the run's time zone (as given if unparsable)."""
    try:
        moment = dt.datetime.fromisoformat(str(value)).astimezone(ZoneInfo(zone))
    except (ValueError, TypeError, KeyError):
        return str(value)
    return f"{moment:%Y-%m-%d %H:%M} {moment.tzname()}"


def report_extra(ctx: RunContext) -> dict[str, Any]:
    """Report fields for a run that skipped its import because the files were not refreshed."""
    marker = read_json(ctx.work / "not_refreshed.json")
    if not marker:
        return {}
    return {
        "status": "not_refreshed",
        "message": (
            f"The files have not been refreshed since {_local_time(marker['since'], ctx.timezone)} "
            "(identical to that import); nothing was imported"
        ),
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
