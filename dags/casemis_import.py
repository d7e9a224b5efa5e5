"""
### CASEMIS import

Imports the special-education vendor's CASEMIS files into Aeries:
**Student Data (tableA)** into `CSE` (one row per student) and **Student Services Data
(tableB)** into `CSV` (one row per service), after matching every row to a student in `STU`
(SSID -> `STU.CID`, then STUDENT_ID -> `STU.ID`).

| task | what it does |
|---|---|
| `wait_for_files` | waits until the files exist and stop changing (reschedule mode: no worker slot held) |
| `fetch_files` | copies them to the run's staging folder with a sha256; skips files already imported |
| `validate` | checks both files against `include/schemas/*.yaml` (Pandera) |
| `transform` | matches rows to STU, maps fields to Aeries columns (`include/mappings/aeries.yaml`) |
| `load_table_a` / `load_table_b` | one transaction each: all or nothing, safe to retry |
| `email_report` | writes the completion report, records the run, emails the office |

**Scheduled runs** read the configured location (see the *CASEMIS Import* page or the
`casemis_config` Variable) and do nothing while the schedule is disabled.
**Manual runs** ("Trigger DAG w/ config") are the one-time import: give the tableA file
(and optionally tableB) as a path under the uploads folder or as pasted CSV text; leave
everything empty to import from the configured location now.

The run fails (red) when the files are rejected or a load fails; the report says why.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

IO_RETRIES = {"retries": 3, "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": True}
# The file sensor's hard limit: the largest wait_timeout_minutes the settings accept.
WAIT_BACKSTOP = 24 * 3600


def _settings():  # type: ignore[no-untyped-def]
    from casemis.settings import load_settings

    return load_settings()


def _ctx(data: dict[str, Any] | None):  # type: ignore[no-untyped-def]
    from casemis.pipeline import RunContext

    if not data:
        raise AirflowSkipException("no run context: the run was skipped before it started")
    return RunContext.from_dict(data)


def _engine():  # type: ignore[no-untyped-def]
    from casemis.db import engine_from_connection

    return engine_from_connection(_settings().target_conn_id)


def _schedule() -> dict[str, Any]:
    """The timetable and start date from the saved settings (see casemis.schedule)."""
    from casemis.schedule import dag_schedule_args

    return dag_schedule_args()


SCHEDULE = _schedule()


@dag(
    dag_id="casemis_import",
    schedule=SCHEDULE["schedule"],  # None while the scheduled import is disabled
    start_date=SCHEDULE["start_date"],  # when the schedule was switched on: no past slot runs
    is_paused_upon_creation=False,  # pausing would also hold manual runs
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["casemis", "aeries", "special-education"],
    default_args={"owner": "data-engineering", "retries": 2, "retry_delay": timedelta(minutes=1)},
    params={
        "table_a_path": Param(
            None,
            type=["null", "string"],
            title="tableA file path",
            description="a file under the uploads folder",
        ),
        "table_a_content": Param(
            None,
            type=["null", "string"],
            format="multiline",
            title="tableA CSV text",
            description="or paste the file",
        ),
        "table_b_path": Param(None, type=["null", "string"], title="tableB file path (optional)"),
        "table_b_content": Param(
            None, type=["null", "string"], format="multiline", title="tableB CSV text (optional)"
        ),
        "dry_run": Param(
            False, type="boolean", title="Dry run", description="report what would change, write nothing"
        ),
        "on_error": Param(
            None,
            type=["null", "string"],
            enum=[None, "skip_rows", "abort"],
            title="On row errors",
            description="skip_rows: load the good rows; abort: load nothing; empty: the configured choice",
        ),
    },
)
def casemis_import() -> None:
    """Wire the import's steps; each task calls a function in ``casemis.tasks``/``casemis.pipeline``."""

    @task.sensor(
        task_id="wait_for_files",
        mode="reschedule",
        poke_interval=60,
        # A backstop only: the configured wait_timeout_minutes (at most 24 h) is enforced by
        # poke_files at run time, so changing the setting needs no DAG re-parse.
        timeout=WAIT_BACKSTOP,
        **IO_RETRIES,
    )
    def wait_for_files() -> Any:
        from airflow.sdk import PokeReturnValue
        from airflow.sdk.exceptions import AirflowSensorTimeout

        from casemis.tasks import (
            BadRequest,
            SkipRun,
            WaitTimedOut,
            begin_run,
            is_permanent_failure,
            poke_files,
            run_step,
        )

        context = get_current_context()
        settings = _settings()
        try:
            ctx = begin_run(context["run_id"], context["dag_run"].run_type, context["params"], settings)
        except SkipRun as exc:
            raise AirflowSkipException(str(exc)) from None
        except BadRequest as exc:
            raise AirflowFailException(str(exc)) from None
        # Published before looking, so email_report can still report a wait that fails.
        context["ti"].xcom_push(key="return_value", value=ctx.to_dict())
        try:
            ready, message = run_step(
                ctx, "wait_for_files", lambda: poke_files(ctx, settings, context["params"])
            )
        except WaitTimedOut as exc:
            raise AirflowSensorTimeout(str(exc)) from None
        except Exception as exc:
            if is_permanent_failure(exc):  # wrong password, host key, settings: never retried
                raise AirflowFailException(str(exc)) from None
            raise
        print(message)  # noqa: T201 - shown in the task log
        return PokeReturnValue(is_done=ready, xcom_value=ctx.to_dict())

    @task(**IO_RETRIES)
    def fetch_files(ctx: dict[str, Any]) -> list[dict[str, Any]]:
        from casemis.tasks import fetch_files as fetch
        from casemis.tasks import is_permanent_failure, not_refreshed, run_step

        run = _ctx(ctx)
        settings = _settings()
        params = get_current_context()["params"]
        try:
            files = run_step(run, "fetch_files", lambda: fetch(run, settings, params))
            reason = run_step(run, "fetch_files", lambda: not_refreshed(run, settings, files))
        except Exception as exc:
            if is_permanent_failure(exc):  # bad params, password, host key: never retried
                raise AirflowFailException(str(exc)) from None
            raise
        if reason:
            raise AirflowSkipException(reason)  # email_report says "not refreshed since ..."
        return files

    @task
    def validate(ctx: dict[str, Any], _files: list[dict[str, Any]]) -> dict[str, Any]:
        from casemis.pipeline import ImportRejected, validate_step
        from casemis.tasks import run_step

        run = _ctx(ctx)
        try:
            return run_step(run, "validate", lambda: validate_step(run))
        except ImportRejected as exc:
            raise AirflowFailException(str(exc)) from None

    @task(**IO_RETRIES)
    def transform(ctx: dict[str, Any], _validated: dict[str, Any]) -> dict[str, Any]:
        from casemis.pipeline import transform_step
        from casemis.tasks import run_step

        run = _ctx(ctx)
        return run_step(run, "transform", lambda: transform_step(run, _engine()))

    @task(**IO_RETRIES)
    def load_table_a(ctx: dict[str, Any], _matched: dict[str, Any]) -> dict[str, int]:
        from casemis.pipeline import load_table_a_step
        from casemis.tasks import run_step

        run = _ctx(ctx)
        return run_step(run, "load_table_a", lambda: load_table_a_step(run, _engine()))

    @task(**IO_RETRIES)
    def load_table_b(ctx: dict[str, Any], _loaded_a: dict[str, int]) -> dict[str, int] | None:
        from casemis.pipeline import load_table_b_step
        from casemis.tasks import run_step

        run = _ctx(ctx)
        return run_step(run, "load_table_b", lambda: load_table_b_step(run, _engine()))

    @task(trigger_rule="all_done", retries=3, retry_delay=timedelta(minutes=5))
    def email_report(ctx: dict[str, Any] | None) -> dict[str, Any]:
        from casemis.tasks import finish_run

        context = get_current_context()
        summary = finish_run(_ctx(ctx), _settings(), context["dag_run"])
        if summary["status"] in ("failed", "rejected"):
            raise AirflowFailException(summary["message"])
        return {"status": summary["status"], "counts": summary["counts"]}

    ctx = wait_for_files()
    files = fetch_files(ctx)
    validated = validate(ctx, files)
    matched = transform(ctx, validated)
    loaded_a = load_table_a(ctx, matched)
    loaded_b = load_table_b(ctx, loaded_a)
    report = email_report(ctx)
    loaded_b >> report


casemis_import()
