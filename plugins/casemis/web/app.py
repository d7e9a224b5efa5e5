"""The *CASEMIS Import* page: routes and server-rendered HTML (no JavaScript build, no API docs).

Routes (mounted by Airflow under ``/casemis``):

===========  ==============  =================================================================
method       path            what it does
===========  ==============  =================================================================
GET          ``/``           the page (settings, derived schedule, recent runs)
POST         ``/settings``   validate and save the settings (the ``casemis_config`` Variable)
POST         ``/schedule``   ``action=enable|disable``: switch the scheduled process on or off
POST         ``/import``     import now from the configured location (a manual DAG run)
POST         ``/upload``     one-time import of uploaded tableA (+ tableB) files
===========  ==============  =================================================================

Every route needs a logged-in Airflow user with the right permission
(``casemis.web.security``); every POST needs the page's CSRF token. After a successful POST
the browser is redirected back to the page (post/redirect/get) with a short message.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from casemis import paths
from casemis.schedule import describe, next_run_times
from casemis.settings import (
    VARIABLE_KEY,
    WEEKDAYS,
    ImportSettings,
    SettingsError,
    env_overridden_fields,
    load_settings,
    merge_update,
)
from casemis.web import backend, uploads
from casemis.web.security import (
    DAG_ID,
    Access,
    ConfigureAccess,
    TriggerAccess,
    ViewAccess,
    check_csrf,
    csrf_token,
)

log = logging.getLogger(__name__)

URL_PREFIX = "/casemis"
UI_ROUTE = "casemis-import"  # the page inside the Airflow UI: /plugin/casemis-import
PAGE_FIELDS = (
    "location_type",
    "local_path",
    "smb_path",
    "smb_conn_id",
    "sftp_host",
    "sftp_port",
    "sftp_directory",
    "sftp_conn_id",
    "table_a_name",
    "table_b_name",
    "include_services",
    "days",
    "time",
    "timezone",
    "recipients",
    "on_error",
    "not_refreshed",
    "target_conn_id",
    "smtp_conn_id",
)
LABELS = {
    "location_type": "File location",
    "local_path": "Folder",
    "smb_path": "Share folder (UNC path)",
    "smb_conn_id": "SMB connection id",
    "sftp_host": "SFTP server",
    "sftp_port": "SFTP port",
    "sftp_directory": "Import directory",
    "sftp_conn_id": "SFTP connection id",
    "table_a_name": "Student Data file name",
    "table_b_name": "Student Services Data file name",
    "include_services": "Include Services",
    "days": "Days of the week",
    "time": "Time of day",
    "timezone": "Time zone",
    "recipients": "Report email addresses",
    "on_error": "When rows have errors",
    "not_refreshed": "When the files were not refreshed",
    "target_conn_id": "Aeries database connection id",
    "smtp_conn_id": "Mail server connection id",
    "enabled": "Scheduled process",
    "version": "Settings",
}
DAY_NAMES = dict(
    zip(WEEKDAYS, ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"), strict=True)
)
MESSAGES = {
    "saved": "Settings saved.",
    "enabled": "The scheduled process is enabled.",
    "disabled": "The scheduled process is disabled: no scheduled runs. Manual imports still work.",
    "import": "Import started with the saved settings.",
    "upload": "The files were uploaded and their import has started.",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@lru_cache(maxsize=1)
def _templates():  # type: ignore[no-untyped-def]
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    folder = Path(__file__).parent / "templates"
    return Environment(loader=FileSystemLoader(folder), autoescape=select_autoescape(["html"]))


@lru_cache(maxsize=1)
def _timezones() -> list[str]:
    from zoneinfo import available_timezones

    return sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))


def _ui_base() -> str:
    """The Airflow UI's path prefix (``[api] base_url``'s path, usually empty)."""
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def run_url(run_id: str) -> str:
    """The run's page in the Airflow UI."""
    return f"{_ui_base()}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}"


def _format_time(when: dt.datetime | None, zone: str) -> str:
    """``Mon 15 Mar 2027, 18:30 PDT``: local time in the settings' zone."""
    from zoneinfo import ZoneInfo

    if when is None:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    local = when.astimezone(ZoneInfo(zone))
    return f"{local:%a %d %b %Y, %H:%M} {local.tzname()}"


def _values_from_settings(settings: ImportSettings) -> dict[str, Any]:
    """The form's values for ``settings``."""
    values = {name: getattr(settings, name) for name in PAGE_FIELDS}
    values["sftp_port"] = "" if settings.sftp_port is None else str(settings.sftp_port)
    values["recipients"] = ", ".join(settings.recipients)
    return values


def _values_from_form(form: FormData, fallback: dict[str, Any]) -> dict[str, Any]:
    """The submitted values, to show them again next to the errors."""
    values = dict(fallback)
    for name in PAGE_FIELDS:
        if name == "days":
            values[name] = [str(d) for d in form.getlist("days")]
        elif name == "include_services":
            values[name] = form.get(name) == "on"
        elif name in form:
            values[name] = str(form.get(name) or "")
    return values


def changes_from_form(form: FormData, locked: set[str]) -> dict[str, Any]:
    """The settings the form sets, typed for the model (fields set by the environment are left out)."""
    changes: dict[str, Any] = {}
    for name in PAGE_FIELDS:
        if name in locked:
            continue
        if name == "days":
            changes[name] = [str(d) for d in form.getlist("days")]
        elif name == "include_services":
            changes[name] = form.get(name) == "on"
        elif name == "sftp_port":
            text = str(form.get(name) or "").strip()
            changes[name] = text or None
        elif name in form:
            changes[name] = str(form.get(name) or "")
    return changes


def _counts_lines(row: backend.RunRow) -> list[str]:
    """``Students: 12 read, 11 matched, 11 added ...`` for the recent-runs table."""
    out = []
    for kind, label in (("table_a", "Students"), ("table_b", "Services")):
        counts = row.counts.get(kind)
        if not counts:
            continue
        parts = [
            f"{counts[k]} {k}"
            for k in (
                "read",
                "matched",
                "unmatched",
                "duplicates",
                "errors",
                "added",
                "updated",
                "unchanged",
                "removed",
            )
            if counts.get(k)
        ]
        out.append(f"{label}: {', '.join(parts) or 'nothing'}")
    if row.message and row.status not in ("success", None):
        out.append(row.message[:300])
    return out


def _effective(stored: backend.Stored) -> tuple[ImportSettings | None, dict[str, str]]:
    """The settings the import runs with, or the reasons they are invalid."""
    if stored.error:
        return None, {"": stored.error}
    try:
        return load_settings(stored=stored.data), {}
    except SettingsError as exc:
        return None, exc.errors


def _render(
    request: Request,
    access: Access,
    *,
    status_code: int = 200,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    flash: dict[str, Any] | None = None,
) -> HTMLResponse:
    """Build the whole page from Airflow's current state."""
    from markupsafe import Markup

    stored = backend.read_stored()
    settings, invalid = _effective(stored)
    locked = env_overridden_fields()
    shown = settings or _lenient_settings(stored.data)
    now = dt.datetime.now(dt.UTC)
    warnings: list[str] = []
    if invalid and not errors:
        problems = "; ".join(f"{LABELS.get(k, k or 'settings')}: {v}" for k, v in invalid.items())
        warnings.append(
            f"The saved settings are not valid, so imports cannot start until they are fixed: {problems}"
        )
    if backend.variable_set_by_environment():
        warnings.append(
            f"The environment variable {backend.ENV_VARIABLE} sets the configuration; changes saved here have no effect."
        )
    state = backend.dag_state()
    if not state.exists:
        warnings.append(f"Airflow has not loaded the DAG {DAG_ID} yet: is the dag-processor running?")
    elif state.is_paused:
        warnings.append(
            f"The DAG {DAG_ID} is paused in Airflow, so no run starts, not even a manual import. "
            "Unpause it in Airflow; to stop only the scheduled runs, use Disable Scheduled Process."
        )
    elif state.has_import_errors:
        warnings.append(f"The DAG {DAG_ID} has import errors; see Airflow's DAG list.")
    next_runs = next_run_times(settings, now, 1) if settings else []
    zone = shown.timezone
    if settings and settings.enabled and state.exists:
        if state.timetable_summary and state.next_run_after:
            airflow_text = f"Scheduled; next run {_format_time(state.next_run_after, zone)}."
        else:
            airflow_text = "Airflow is re-reading the DAG to apply the schedule (this takes a few seconds)."
    elif state.exists:
        airflow_text = (
            "No scheduled runs."
            if not state.timetable_summary
            else "Airflow is re-reading the DAG to remove the schedule (this takes a few seconds)."
        )
    else:
        airflow_text = "The DAG is not loaded."
    context = {
        "base": _base(request),
        "access": access,
        "csrf": csrf_token(request, access),
        "version": stored.version,
        "settings": settings,
        "v": values or _values_from_settings(shown),
        "errors": errors or {},
        "labels": LABELS,
        "flash": flash,
        "warnings": warnings,
        "schedule_text": describe(shown),
        "next_run": (f"{_format_time(next_runs[0], zone)} ({next_runs[0]:%H:%M} UTC)" if next_runs else None),
        "airflow_text": airflow_text,
        "locked_enabled": "enabled" in locked,
        "weekdays": [(d, DAY_NAMES[d][:3]) for d in WEEKDAYS],
        "timezones": _timezones(),
        "variable_key": VARIABLE_KEY,
        "max_mb": shown.upload_max_mb,
        "runs": backend.recent_runs(settings),
        "run_url": run_url,
        "fmt": lambda when: _format_time(when, zone),
        "counts_lines": _counts_lines,
        "lock": lambda name: (
            Markup('disabled title="Set by the environment variable {}"').format(locked[name])
            if name in locked
            else ""
        ),
        "err": lambda name: (
            Markup('<p class="field-error">{}</p>').format(errors[name]) if errors and name in errors else ""
        ),
    }
    html = _templates().get_template("page.html").render(**context)
    return HTMLResponse(html, status_code=status_code)


def _lenient_settings(data: dict[str, Any]) -> ImportSettings:
    """The stored values that are valid on their own, over the defaults (to fill the form)."""
    settings = ImportSettings()
    for name, value in data.items():
        if name in ImportSettings.model_fields:
            try:
                setattr(settings, name, value)
            except ValueError:
                continue
    return settings


def _base(request: Request) -> str:
    """Where Airflow mounted this app (``/casemis``, behind any ``[api] base_url`` path)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _back(request: Request, message: str, run_id: str | None = None) -> RedirectResponse:
    """Post/redirect/get: back to the page with a message code (never free text)."""
    query = {"msg": message, **({"run": run_id} if run_id else {})}
    return RedirectResponse(f"{_base(request)}/?{urlencode(query)}", status_code=303)


def _flash_from_query(request: Request) -> dict[str, Any] | None:
    code = request.query_params.get("msg")
    if code not in MESSAGES:
        return None
    return {"kind": "ok", "text": MESSAGES[code], "run_id": request.query_params.get("run")}


async def _form(request: Request) -> FormData:
    return await request.form(max_files=0, max_fields=100, max_part_size=64 * 1024)


def create_app() -> FastAPI:
    """The FastAPI app the plugin mounts; no OpenAPI docs (they would be unauthenticated)."""
    app = FastAPI(
        title="CASEMIS Import", docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=True
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(HTTPException)
    async def refused(request: Request, exc: HTTPException) -> Response:
        """Browsers asking for the page without a login go to Airflow's login; others get the status."""
        if exc.status_code == 401 and request.method == "GET":
            from airflow.api_fastapi.app import get_auth_manager

            login = get_auth_manager().get_url_login(next_url=f"{_ui_base()}/plugin/{UI_ROUTE}")
            return RedirectResponse(login, status_code=303)
        from markupsafe import escape

        body = (
            f"<!doctype html><title>CASEMIS Import</title><p>{escape(str(exc.detail))}</p>"
            f'<p><a href="{escape(_base(request))}/">Back to the CASEMIS Import page</a></p>'
        )
        return HTMLResponse(body, status_code=exc.status_code)

    @app.get("/", response_class=HTMLResponse)
    async def page(request: Request, access: ViewAccess) -> Response:
        return await run_in_threadpool(_render, request, access, flash=_flash_from_query(request))

    @app.post("/settings")
    async def save(request: Request, access: ConfigureAccess) -> Response:
        form = await _form(request)
        check_csrf(request, access, form.get("csrf_token"))  # type: ignore[arg-type]
        return await run_in_threadpool(_save, request, access, form)

    @app.post("/schedule")
    async def schedule(request: Request, access: ConfigureAccess) -> Response:
        form = await _form(request)
        check_csrf(request, access, form.get("csrf_token"))  # type: ignore[arg-type]
        action = form.get("action")
        if action not in ("enable", "disable"):
            raise HTTPException(400, "action must be enable or disable")
        return await run_in_threadpool(_switch, request, access, action == "enable")

    @app.post("/import")
    async def import_now(request: Request, access: TriggerAccess) -> Response:
        form = await _form(request)
        check_csrf(request, access, form.get("csrf_token"))  # type: ignore[arg-type]
        return await run_in_threadpool(_import_now, request, access)

    @app.post("/upload")
    async def upload(request: Request, access: TriggerAccess) -> Response:
        settings, invalid = await run_in_threadpool(lambda: _effective(backend.read_stored()))
        if settings is None:
            return await run_in_threadpool(
                _render, request, access, status_code=409, flash=_error("Fix the saved settings first.")
            )
        max_bytes = settings.upload_max_mb * 1024 * 1024
        try:
            form = await uploads.read_form(request, max_bytes)
        except uploads.UploadRejected as exc:
            return await run_in_threadpool(
                _render, request, access, status_code=exc.status, flash=_error(str(exc))
            )
        try:
            check_csrf(request, access, form.get("csrf_token"))  # type: ignore[arg-type]
            return await run_in_threadpool(_upload, request, access, settings, form)
        finally:
            await form.close()

    return app


def _error(text: str) -> dict[str, Any]:
    return {"kind": "bad", "text": text, "run_id": None}


def _save(request: Request, access: Access, form: FormData) -> Response:
    stored = backend.read_stored()
    locked = set(env_overridden_fields())
    shown = _values_from_form(form, _values_from_settings(_lenient_settings(stored.data)))
    if form.get("version") != stored.version:
        return _render(
            request,
            access,
            status_code=409,
            values=shown,
            errors={
                "version": "someone changed the settings after you opened this page; "
                "reload the page and make your changes again"
            },
        )
    changes = changes_from_form(form, locked)
    try:
        new = merge_update(stored.data, changes)
    except SettingsError as exc:
        return _render(request, access, status_code=400, values=shown, errors=exc.errors)
    backend.write_stored(new)
    changed = sorted(k for k in new if new.get(k) != stored.data.get(k))
    backend.audit("casemis.settings.saved", access.user_name, {"changed": changed})
    backend.request_reparse()
    return _back(request, "saved")


def _switch(request: Request, access: Access, enable: bool) -> Response:
    stored = backend.read_stored()
    if stored.error:
        return _render(request, access, status_code=400, flash=_error(stored.error))
    try:
        new = merge_update(stored.data, {"enabled": enable})
    except SettingsError as exc:
        problems = "; ".join(f"{LABELS.get(k, k or 'Settings')}: {v}" for k, v in exc.errors.items())
        return _render(
            request, access, status_code=400, flash=_error(f"The schedule was not changed: {problems}")
        )
    backend.write_stored(new)
    backend.audit("casemis.schedule." + ("enabled" if enable else "disabled"), access.user_name)
    backend.request_reparse()
    return _back(request, "enabled" if enable else "disabled")


def _import_now(request: Request, access: Access) -> Response:
    settings, invalid = _effective(backend.read_stored())
    if settings is None:
        return _render(request, access, status_code=409, flash=_error("Fix the saved settings first."))
    try:
        run_id = backend.trigger({}, access.user_name, note="Import now, from the CASEMIS Import page")
    except backend.TriggerError as exc:
        return _render(request, access, status_code=409, flash=_error(str(exc)))
    backend.audit("casemis.import.now", access.user_name, {"run_id": run_id})
    return _back(request, "import", run_id)


def _upload(request: Request, access: Access, settings: ImportSettings, form: FormData) -> Response:
    max_bytes = settings.upload_max_mb * 1024 * 1024
    files = {kind: form.get(kind) for kind in ("table_a", "table_b")}
    given = {k: f for k, f in files.items() if isinstance(f, UploadFile) and f.filename}
    if "table_a" not in given:
        return _render(
            request, access, status_code=400, flash=_error("Choose the Student Data file (tableA) to import.")
        )
    root = paths.resolve(settings.manual_dir)
    folder = uploads.new_upload_folder(root)
    try:
        stored = [uploads.store(upload, kind, folder, max_bytes) for kind, upload in given.items()]
    except uploads.UploadRejected as exc:
        shutil.rmtree(folder, ignore_errors=True)
        return _render(request, access, status_code=exc.status, flash=_error(str(exc)))
    conf: dict[str, Any] = {f"{s.kind}_path": str(s.path) for s in stored}
    conf["dry_run"] = form.get("dry_run") == "on"
    note = "One-time import from the CASEMIS Import page: " + ", ".join(
        f"{s.original_name} ({s.size:,} bytes) as {uploads.STORED_NAMES[s.kind]}" for s in stored
    )
    try:
        run_id = backend.trigger(conf, access.user_name, note=note)
    except backend.TriggerError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        return _render(request, access, status_code=409, flash=_error(str(exc)))
    uploads.prune(root)
    backend.audit(
        "casemis.import.upload",
        access.user_name,
        {"run_id": run_id, "files": {s.kind: s.size for s in stored}, "dry_run": conf["dry_run"]},
    )
    return _back(request, "upload", run_id)
