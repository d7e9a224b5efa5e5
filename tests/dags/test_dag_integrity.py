"""The ``casemis_import`` DAG file parses cleanly and follows the project's DAG policy.

Parsing only (no metadata database): ``DagBag`` imports every file in ``dags/`` the way the
dag-processor does. Examples are off through ``AIRFLOW__CORE__LOAD_EXAMPLES`` (set in
``tests/conftest.py``); Airflow 3.3's ``DagBag`` has no ``include_examples`` argument.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import DAG

DAGS = Path(__file__).resolve().parents[2] / "dags"
ORDER = (
    "wait_for_files",
    "fetch_files",
    "validate",
    "transform",
    "load_table_a",
    "load_table_b",
    "email_report",
)


@pytest.fixture(scope="module")
def bag() -> DagBag:
    return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="module")
def dag(bag: DagBag) -> DAG:
    return bag.dags["casemis_import"]


def test_dagbag_has_no_import_errors(bag: DagBag):
    assert bag.import_errors == {}
    assert bag.dag_ids == ["casemis_import"]


def test_tasks_run_in_order(dag: DAG):
    assert set(dag.task_ids) == set(ORDER)
    for upstream, downstream in zip(ORDER, ORDER[1:], strict=False):
        assert downstream in dag.get_task(upstream).downstream_task_ids, f"{upstream} -> {downstream}"
    order = [t.task_id for t in dag.topological_sort()]
    assert order == list(ORDER)
    # Every step after the sensor needs the one before it (no step can start early).
    for i, task_id in enumerate(ORDER[1:], start=1):
        assert ORDER[i - 1] in dag.get_task(task_id).upstream_task_ids


def test_report_runs_whatever_happened_before(dag: DAG):
    assert dag.get_task("email_report").trigger_rule == "all_done"
    assert dag.get_task("wait_for_files").mode == "reschedule"


def test_policy_tags_retries_one_run_at_a_time_and_docs(dag: DAG):
    assert "casemis" in dag.tags and len(dag.tags) >= 2
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert dag.doc_md and "CASEMIS import" in dag.doc_md
    for task in dag.tasks:
        assert task.retries >= 2, task.task_id
        assert task.owner != "airflow", task.task_id


def test_manual_run_params_are_declared(dag: DAG):
    params = dag.params
    for name in ("table_a_path", "table_a_content", "table_b_path", "table_b_content", "dry_run", "on_error"):
        assert name in params, name
    # A scheduled run uses the defaults: nothing supplied, settings decide.
    assert params["table_a_path"] is None and params["dry_run"] is False and params["on_error"] is None
