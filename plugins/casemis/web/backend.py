"""What the page reads from and writes to Airflow, through Airflow's own models.

The page runs inside the Airflow API server, which talks to the metadata database
directly: the settings are the ``casemis_config`` Variable, runs are created with
``airflow.api.common.trigger_dag.trigger_dag`` (what the REST API's trigger endpoint and
``TriggerDagRunOperator`` use: same checks, same run ids, and the scheduler picks the run
up like any other manual run), and a saved schedule is applied at once by asking the
dag-processor to re-parse the DAG file (what the UI's "Reparse Dag" button does).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casemis import paths
from casemis.settings import VARIABLE_KEY, ImportSettings, parse_stored
from casemis.web.security import DAG_ID

log = logging.getLogger(__name__)

VARIABLE_DESCRIPTION = (
    "CASEMIS import settings (JSON). Edit them on the CASEMIS Import page, or here; "
    "see the README section 'The CASEMIS Import page' for every field."
)
ENV_VARIABLE = "AIRFLOW_VAR_" + VARIABLE_KEY.upper()


class TriggerError(Exception):
    """The run could not be created (the message says why, in plain words)."""


@dataclass(frozen=True)
class Stored:
    """The Variable as read: its JSON text, the parsed dict and a version for edit conflicts."""

    raw: str | None
    data: dict[str, Any]
    error: str | None  # the Variable is not a JSON object

    @property
    def version(self) -> str:
        """A digest of the stored text; a form saved against an older version is refused."""
        return hashlib.sha256((self.raw or "").encode()).hexdigest()[:16]


def read_stored() -> Stored:
    """The ``casemis_config`` Variable (through Airflow's secrets chain, as tasks see it)."""
    from airflow.models.variable import Variable

    raw = Variable.get(VARIABLE_KEY, default_var=None)
    try:
        return Stored(raw=raw, data=parse_stored(raw), error=None)
    except ValueError as exc:
        return Stored(raw=raw, data={}, error=str(exc))


def write_stored(data: dict[str, Any]) -> None:
    """Save the settings as the Variable's JSON (pretty-printed, stable key order)."""
    from airflow.models.variable import Variable

    Variable.set(VARIABLE_KEY, json.dumps(data, indent=2, sort_keys=True), description=VARIABLE_DESCRIPTION)


def variable_set_by_environment() -> bool:
    """True when ``AIRFLOW_VAR_CASEMIS_CONFIG`` is set: it wins, so saving here changes nothing."""
    return bool(os.environ.get(ENV_VARIABLE))


@dataclass(frozen=True)
class DagState:
    """What Airflow currently knows about the DAG (from its last parse)."""

    exists: bool
    is_paused: bool = False
    has_import_errors: bool = False
    timetable_summary: str | None = None
    timetable_description: str | None = None
    next_run_after: dt.datetime | None = None
    last_parsed: dt.datetime | None = None


def dag_state() -> DagState:
    """The DAG's row in the metadata database."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        dm = session.get(DagModel, DAG_ID)
        if dm is None or dm.is_stale:
            return DagState(exists=False)
        summary = dm.timetable_summary
        return DagState(
            exists=True,
            is_paused=bool(dm.is_paused),
            has_import_errors=bool(dm.has_import_errors),
            timetable_summary=None if summary in (None, "", "None") else summary,
            timetable_description=dm.timetable_description,
            next_run_after=dm.next_dagrun_create_after,
            last_parsed=dm.last_parsed_time,
        )


def request_reparse() -> bool:
    """Ask the dag-processor to re-parse the DAG file now (it then reads the new settings)."""
    from airflow.models.dag import DagModel
    from airflow.models.dagbag import DagPriorityParsingRequest
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        dm = session.get(DagModel, DAG_ID)
        if dm is None or not dm.relative_fileloc:
            return False
        pending = session.scalar(
            select(DagPriorityParsingRequest.id).where(
                DagPriorityParsingRequest.bundle_name == dm.bundle_name,
                DagPriorityParsingRequest.relative_fileloc == dm.relative_fileloc,
            )
        )
        if pending is None:
            session.add(
                DagPriorityParsingRequest(bundle_name=dm.bundle_name, relative_fileloc=dm.relative_fileloc)
            )
    return True


def audit(event: str, user_name: str, extra: dict[str, Any] | None = None) -> None:
    """Write an entry to Airflow's audit log (Browse > Audit Log), like the REST API does."""
    from airflow.models.log import Log
    from airflow.utils.session import create_session

    try:
        with create_session() as session:
            session.add(
                Log(
                    event=event,
                    owner=user_name,
                    owner_display_name=user_name,
                    dag_id=DAG_ID,
                    extra=json.dumps(extra or {}, sort_keys=True),
                )
            )
    except Exception:  # noqa: BLE001 - the action itself succeeded; a missing log line must not undo it
        log.warning("could not write the audit log entry %s", event, exc_info=True)


def trigger(conf: dict[str, Any], user_name: str, note: str | None = None) -> str:
    """Create a manual run of the DAG with ``conf``; returns its run id.

    Refused (TriggerError) when the DAG is unknown, has import errors or refuses the conf.
    A paused DAG accepts the run, which then waits until the DAG is unpaused.
    """
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType

    with create_session() as session:
        dm = session.get(DagModel, DAG_ID)
        if dm is None or dm.is_stale:
            raise TriggerError(f"Airflow does not know the DAG {DAG_ID} yet (is the dag-processor running?)")
        if dm.has_import_errors:
            raise TriggerError(f"The DAG {DAG_ID} has import errors; see Airflow's DAG list")
    try:
        run = trigger_dag(
            dag_id=DAG_ID,
            triggered_by=DagRunTriggeredByType.UI,
            triggering_user_name=user_name,
            conf=conf,
            note=note,
        )
    except Exception as exc:  # noqa: BLE001 - shown to the user; Airflow's messages say what is wrong
        raise TriggerError(f"Airflow refused the run: {exc}") from None
    if run is None:  # pragma: no cover - trigger_dag returns the run or raises
        raise TriggerError("Airflow did not create the run")
    log.info("CASEMIS import run %s created by %s", run.run_id, user_name)
    return str(run.run_id)


@dataclass
class RunRow:
    """One line of the page's recent-runs table."""

    run_id: str
    state: str
    run_type: str
    started: dt.datetime | None
    ended: dt.datetime | None
    run_after: dt.datetime | None
    user: str | None
    status: str | None = None  # the import's own outcome (success, rejected, not_refreshed, ...)
    counts: dict[str, Any] = field(default_factory=dict)
    message: str | None = None


def recent_runs(settings: ImportSettings | None, limit: int = 10) -> list[RunRow]:
    """The latest runs with the import's outcome and counts.

    The counts come from the ``email_report`` task's return value (XCom) or, when that
    task failed (a rejected or failed import), from the run's ``summary.json`` report.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(
            select(DagRun).where(DagRun.dag_id == DAG_ID).order_by(DagRun.run_after.desc()).limit(limit)
        ).all()
        rows = [
            RunRow(
                run_id=r.run_id,
                state=str(getattr(r.state, "value", r.state) or "queued"),
                run_type=str(getattr(r.run_type, "value", r.run_type)),
                started=r.start_date,
                ended=r.end_date,
                run_after=r.run_after,
                user=r.triggering_user_name,
            )
            for r in runs
        ]
        if not rows:
            return rows
        xcoms = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == DAG_ID,
                XComModel.task_id == "email_report",
                XComModel.key == "return_value",
                XComModel.run_id.in_([r.run_id for r in rows]),
            )
        ).all()
        results = {x.run_id: XComModel.deserialize_value(x) for x in xcoms}
    for row in rows:
        value = results.get(row.run_id)
        if not isinstance(value, dict) and settings is not None and row.state in ("success", "failed"):
            value = _summary_file(settings, row.run_id)
        if isinstance(value, dict):
            row.status = value.get("status")
            row.counts = {k: v for k, v in (value.get("counts") or {}).items() if isinstance(v, dict)}
            row.message = value.get("message")
    return rows


def report_folder_name(run_id: str) -> str:
    """The run's report folder name; must equal ``casemis.pipeline.RunContext.folder_name``.

    Repeated here so the API server need not import the pipeline (pandas, pandera) to
    show a table; a test checks the two agree.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")[:80] or "run"
    return f"{safe}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"


def _summary_file(settings: ImportSettings, run_id: str) -> dict[str, Any] | None:
    path = Path(paths.resolve(settings.report_dir)) / report_folder_name(run_id) / "summary.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
