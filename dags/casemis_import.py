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

from airflow.sdk import Param, dag, task

# Retries with exponential back-off (2 min, 4 min, 8 min) for the tasks that do I/O.
IO_RETRIES = {"retries": 3, "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": 2.0}
# The file sensor's hard limit: the largest wait_timeout_minutes the settings accept. The
# configured limit is enforced at run time, so changing it needs no DAG re-parse.
WAIT_BACKSTOP = 24 * 3600


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
    """Wire the import's steps; each task is one call into ``casemis.airflow_tasks``."""

    @task.sensor(
        task_id="wait_for_files", mode="reschedule", poke_interval=60, timeout=WAIT_BACKSTOP, **IO_RETRIES
    )
    def wait_for_files() -> Any:
        from casemis import airflow_tasks

        return airflow_tasks.wait_for_files()

    @task(**IO_RETRIES)
    def fetch_files(ctx: dict[str, Any]) -> list[dict[str, Any]]:
        from casemis import airflow_tasks

        return airflow_tasks.fetch_files(ctx)

    @task
    def validate(ctx: dict[str, Any], _files: list[dict[str, Any]]) -> dict[str, Any]:
        from casemis import airflow_tasks

        return airflow_tasks.validate(ctx)

    @task(**IO_RETRIES)
    def transform(ctx: dict[str, Any], _validated: dict[str, Any]) -> dict[str, Any]:
        from casemis import airflow_tasks

        return airflow_tasks.transform(ctx)

    @task(**IO_RETRIES)
    def load_table_a(ctx: dict[str, Any], _matched: dict[str, Any]) -> dict[str, int]:
        from casemis import airflow_tasks

        return airflow_tasks.load_table_a(ctx)

    @task(**IO_RETRIES)
    def load_table_b(ctx: dict[str, Any], _loaded_a: dict[str, int]) -> dict[str, int] | None:
        from casemis import airflow_tasks

        return airflow_tasks.load_table_b(ctx)

    @task(trigger_rule="all_done", retries=3, retry_delay=timedelta(minutes=5))
    def email_report(ctx: dict[str, Any] | None) -> dict[str, Any]:
        from casemis import airflow_tasks

        return airflow_tasks.email_report(ctx)

    ctx = wait_for_files()
    files = fetch_files(ctx)
    validated = validate(ctx, files)
    matched = transform(ctx, validated)
    loaded_a = load_table_a(ctx, matched)
    loaded_b = load_table_b(ctx, loaded_a)
    report = email_report(ctx)
    loaded_b >> report


casemis_import()
