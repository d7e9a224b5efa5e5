"""The Airflow side of each ``casemis_import`` task: a thin adapter over ``casemis.tasks``.

The DAG file wires these functions; they read the run's Airflow context, call the plain,
unit-tested functions in :mod:`casemis.tasks` and :mod:`casemis.pipeline`, and translate
their outcomes into Airflow's: :class:`~casemis.tasks.SkipRun` becomes a skip; problems that
retrying cannot fix (bad params or settings, wrong password or host key, rejected files)
fail the task at once instead of burning its retries; a wait past the configured limit is a
sensor timeout. Everything else is raised as it is, so Airflow retries it.

Every failure before ``email_report`` still ends in a report: the run context is published
as soon as it exists, and each step records why it failed in the staging folder.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from airflow.sdk import PokeReturnValue, get_current_context
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, AirflowSkipException

from casemis import pipeline, tasks
from casemis.settings import ImportSettings, SettingsError, load_settings

log = logging.getLogger(__name__)

#: XCom key of ``wait_for_files`` saying the run was skipped on purpose (not a failure).
SKIPPED_KEY = "skipped"


@contextlib.contextmanager
def airflow_outcomes() -> Iterator[None]:
    """Translate the pipeline's exceptions into Airflow task outcomes."""
    try:
        yield
    except tasks.SkipRun as exc:
        raise AirflowSkipException(str(exc)) from None
    except tasks.WaitTimedOut as exc:
        raise AirflowSensorTimeout(str(exc)) from None
    except (SettingsError, pipeline.ImportRejected) as exc:
        raise AirflowFailException(str(exc)) from None
    except Exception as exc:
        if tasks.is_permanent_failure(exc):
            raise AirflowFailException(str(exc)) from None
        raise


def settings() -> ImportSettings:
    """The effective settings; invalid settings fail the task without retries."""
    with airflow_outcomes():
        return load_settings()


def run_context(data: dict[str, Any] | None) -> pipeline.RunContext:
    """The run context published by ``wait_for_files`` (skip when the run never started)."""
    if not data:
        raise AirflowSkipException("no run context: the run was skipped before it started")
    return pipeline.RunContext.from_dict(data)


def _engine():  # type: ignore[no-untyped-def]
    from casemis.db import engine_from_connection

    return engine_from_connection(settings().target_conn_id)


def wait_for_files() -> PokeReturnValue:
    """Sensor poke: decide the run's options, then look for complete files at the location."""
    context = get_current_context()
    ti, params = context["ti"], context["params"]
    config = settings()
    run_type = context["dag_run"].run_type
    try:
        ctx = tasks.begin_run(context["run_id"], run_type, params, config)
    except tasks.SkipRun as exc:
        ti.xcom_push(key=SKIPPED_KEY, value=str(exc))
        raise AirflowSkipException(str(exc)) from None
    except tasks.BadRequest as exc:
        # Publish a context built from the settings alone so email_report can say what was wrong.
        ctx = tasks.begin_run(context["run_id"], "manual", {}, config)
        ti.xcom_push(key="return_value", value=ctx.to_dict())
        pipeline.record_failure(ctx, "wait_for_files", exc)
        raise AirflowFailException(str(exc)) from None
    # Published before looking, so email_report can still report a wait that fails.
    ti.xcom_push(key="return_value", value=ctx.to_dict())
    with airflow_outcomes():
        ready, message = tasks.run_step(ctx, "wait_for_files", lambda: tasks.poke_files(ctx, config, params))
    log.info("%s", message)
    return PokeReturnValue(is_done=ready, xcom_value=ctx.to_dict())


def fetch_files(ctx_data: dict[str, Any]) -> list[dict[str, Any]]:
    """Copy the files into staging; skip the rest of the run when they were not refreshed."""
    ctx, config = run_context(ctx_data), settings()
    params = get_current_context()["params"]
    with airflow_outcomes():
        files = tasks.run_step(ctx, "fetch_files", lambda: tasks.fetch_files(ctx, config, params))
        reason = tasks.run_step(ctx, "fetch_files", lambda: tasks.not_refreshed(ctx, config, files))
    if reason:
        raise AirflowSkipException(reason)  # email_report says "not refreshed since ..."
    return files


def validate(ctx_data: dict[str, Any]) -> dict[str, Any]:
    """Validate the staged files; rejected files fail the task (the report says why)."""
    ctx = run_context(ctx_data)
    with airflow_outcomes():
        return tasks.run_step(ctx, "validate", lambda: pipeline.validate_step(ctx))


def transform(ctx_data: dict[str, Any]) -> dict[str, Any]:
    """Match to STU and build the Aeries rows."""
    ctx = run_context(ctx_data)
    with airflow_outcomes():
        return tasks.run_step(ctx, "transform", lambda: pipeline.transform_step(ctx, _engine()))


def load_table_a(ctx_data: dict[str, Any]) -> dict[str, int]:
    """Load CSE in one transaction."""
    ctx = run_context(ctx_data)
    with airflow_outcomes():
        return tasks.run_step(ctx, "load_table_a", lambda: pipeline.load_table_a_step(ctx, _engine()))


def load_table_b(ctx_data: dict[str, Any]) -> dict[str, int] | None:
    """Load CSV in one transaction (nothing when the run has no services file)."""
    ctx = run_context(ctx_data)
    with airflow_outcomes():
        return tasks.run_step(ctx, "load_table_b", lambda: pipeline.load_table_b_step(ctx, _engine()))


def email_report(ctx_data: dict[str, Any] | None) -> dict[str, Any]:
    """Write, record and email the report; fail the run when the import failed or was rejected.

    Without a run context the run either was skipped on purpose (schedule disabled: skip) or
    failed before it could start (invalid settings: fail, so the run does not show green).
    """
    context = get_current_context()
    if not ctx_data:
        reason = context["ti"].xcom_pull(task_ids="wait_for_files", key=SKIPPED_KEY)
        if reason:
            raise AirflowSkipException(reason)
        raise AirflowFailException("the run failed before it started; see the wait_for_files log")
    summary = tasks.finish_run(run_context(ctx_data), settings(), context["dag_run"])
    result = {"status": summary["status"], "message": summary["message"], "counts": summary["counts"]}
    context["ti"].xcom_push(key="return_value", value=result)
    if summary["status"] in ("failed", "rejected"):
        raise AirflowFailException(summary["message"])
    return result
