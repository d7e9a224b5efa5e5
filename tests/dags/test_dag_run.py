"""End-to-end: the real ``casemis_import`` DAG run with ``dag.test()`` into a SQLite Aeries.

Nothing is mocked. The metadata database is the session's migrated SQLite (``airflow_db``);
the target is an SQLite file behind ``AIRFLOW_CONN_CASEMIS_TARGET``; the report goes to a
real SMTP server on loopback (``smtp_sink``) through ``AIRFLOW_CONN_SMTP_TEST``; settings
come from ``CASEMIS_CONFIG``. The DAG module is parsed again in every test, after the
environment is set, as the dag-processor would.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from io import StringIO
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import DAG

from casemis import report as rpt
from casemis.db import engine_from_url
from casemis.pipeline import RunContext
from casemis.seed import init_db
from tests.import_helpers import (
    MATCHED_IDS,
    by_id,
    count,
    insert,
    select_all,
    write_stu,
    write_table_a,
    write_table_b,
)
from tests.smtp_server import SmtpSink, smtp_sink

DAGS = Path(__file__).resolve().parents[2] / "dags"
RECIPIENTS = ["office@example.org", "lead@example.org"]
ATTACHMENTS = {
    rpt.STUDENTS_IMPORTED,
    rpt.STUDENTS_UNMATCHED,
    rpt.STUDENTS_DUPLICATES,
    rpt.STUDENTS_NOT_IN_FILE,
    rpt.STUDENTS_ERRORS,
    rpt.SERVICES_IMPORTED,
    rpt.SERVICES_UNMATCHED,
    rpt.SERVICES_DUPLICATES,
    rpt.SERVICES_ERRORS,
}


@dataclass
class Deployment:
    """One configured deployment: folders, the target database and the mail server."""

    root: Path
    engine: sa.Engine
    sink: SmtpSink

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    def dag(self) -> DAG:
        """Parse ``dags/`` now (with this test's environment) and return the DAG."""
        bag = DagBag(dag_folder=str(DAGS))
        assert bag.import_errors == {}
        return bag.dags["casemis_import"]

    def run(self, conf: dict[str, Any] | None = None, dag: DAG | None = None) -> Any:
        """One DAG run with ``dag.test()``; returns the DagRun."""
        return (dag or self.dag()).test(run_conf=conf or {})

    def summary(self, dag_run: Any) -> dict[str, Any]:
        """The run's report summary, read from its report folder."""
        return json.loads((self.report_dir(dag_run) / rpt.SUMMARY_NAME).read_text(encoding="utf-8"))

    def report_dir(self, dag_run: Any) -> Path:
        ctx = RunContext(run_id=dag_run.run_id, staging_root="", report_root=str(self.root / "reports"))
        return ctx.report_dir

    def staging(self, dag_run: Any) -> Path:
        return RunContext(
            run_id=dag_run.run_id, staging_root=str(self.root / "staging"), report_root=""
        ).staging

    def cse(self) -> dict[int, dict[str, Any]]:
        return by_id(select_all(self.engine, "CSE"))

    def csv(self) -> list[tuple[Any, ...]]:
        return [(r["ID"], r["SQ"], r["CD"], r["FQ"]) for r in select_all(self.engine, "CSV", ("ID", "SQ"))]


def states(dag_run: Any) -> dict[str, str]:
    """task_id -> state of the run's task instances."""
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def attachments(message: EmailMessage) -> dict[str, pd.DataFrame]:
    """The message's CSV attachments, parsed (every cell as text)."""
    out = {}
    for part in message.iter_attachments():
        text = part.get_payload(decode=True).decode("utf-8-sig")
        out[part.get_filename()] = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)
    return out


@pytest.fixture
def deployment(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    """A seeded SQLite Aeries, the default district's files in the inbox, a live SMTP server."""
    db = tmp_path / "aeries.db"
    engine = engine_from_url(f"sqlite:///{db}")
    init_db(engine, write_stu(tmp_path / "stu.csv"))
    insert(engine, "CSE", [{"ID": 100009, "PT": "10", "DI": "240"}])  # not in the file
    insert(
        engine, "CSV", [{"ID": 100001, "SQ": 5, "CD": "330", "PR": "100", "LO": "100", "FQ": "1", "DU": 30}]
    )
    write_table_a(tmp_path / "inbox" / "tableA.csv")
    write_table_b(tmp_path / "inbox" / "tableB.csv")
    (tmp_path / "uploads").mkdir()
    with smtp_sink() as sink:
        monkeypatch.setenv(
            "AIRFLOW_CONN_CASEMIS_TARGET", json.dumps({"conn_type": "sqlite", "host": str(db)})
        )
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_TEST", sink.airflow_conn_json())
        config = {
            "local_path": str(tmp_path / "inbox"),
            "manual_dir": str(tmp_path / "uploads"),
            "recipients": RECIPIENTS,
            "smtp_conn_id": "smtp_test",
            "staging_dir": str(tmp_path / "staging"),
            "report_dir": str(tmp_path / "reports"),
            "stable_seconds": 0,
        }
        monkeypatch.setenv("CASEMIS_CONFIG", json.dumps(config))
        yield Deployment(tmp_path, engine, sink)
    engine.dispose()


def test_run_imports_emails_the_report_and_reruns_change_nothing(deployment: Deployment):
    dag_run = deployment.run()
    assert str(dag_run.state) == "success"
    assert set(states(dag_run).values()) == {"success"}
    assert sorted(deployment.cse()) == [*MATCHED_IDS, 100009]
    assert count(deployment.engine, "CSV") == 5  # 4 imported + 1 entered by hand

    # The email: one message to both recipients, the report as body, every attachment.
    assert len(deployment.sink.messages) == 1
    message = deployment.sink.messages[0]
    assert sorted(deployment.sink.envelope_recipients[0]) == sorted(RECIPIENTS)
    assert message["From"] == "casemis@example.org"
    assert message["Subject"] == "CASEMIS import succeeded: 4 students, 4 services; 7 rows need review"
    files = attachments(message)
    assert set(files) == ATTACHMENTS
    assert files[rpt.STUDENTS_IMPORTED]["StudentID"].tolist() == [str(i) for i in MATCHED_IDS]
    assert files[rpt.STUDENTS_UNMATCHED]["OriginalLineNumber"].tolist() == ["5", "6"]
    assert files[rpt.STUDENTS_DUPLICATES]["OriginalLineNumber"].tolist() == ["8", "9"]
    assert files[rpt.STUDENTS_NOT_IN_FILE]["StudentID"].tolist() == ["100009"]
    assert files[rpt.STUDENTS_ERRORS][["OriginalLineNumber", "Column"]].values.tolist() == [
        ["10", "PLAN_TYPE"]
    ]
    assert files[rpt.SERVICES_IMPORTED]["OriginalLineNumber"].tolist() == ["2", "3", "4", "5"]
    summary = deployment.summary(dag_run)
    assert summary["status"] == "success" and summary["trigger"] == "manual"
    assert summary["counts"]["table_a"]["added"] == 4 and summary["counts"]["table_b"]["added"] == 4
    body = message.get_body(("plain",)).get_content()
    assert "Import completed: the matched rows were loaded into CSE and CSV" in body

    # The same files again: nothing changes.
    cse, csv = deployment.cse(), deployment.csv()
    again = deployment.run()
    assert str(again.state) == "success"
    counts = deployment.summary(again)["counts"]
    assert (counts["table_a"]["added"], counts["table_a"]["updated"]) == (0, 0)
    assert (counts["table_b"]["added"], counts["table_b"]["updated"], counts["table_b"]["removed"]) == (
        0,
        0,
        0,
    )
    assert (deployment.cse(), deployment.csv()) == (cse, csv)
    assert deployment.summary(again)["identical_to_last_import"] is True
    assert len(deployment.sink.messages) == 2

    # A new tableA with three students changed: exactly those CSE rows change.
    changes = {
        "100001": {"DISABILIT1": "240"},
        "100003": {"LAST_IEP": "20171115"},
        "100007": {"PLAN_TYPE": "20"},
    }
    write_table_a(deployment.inbox / "tableA.csv", changes)
    third = deployment.run()
    assert str(third.state) == "success"
    counts = deployment.summary(third)["counts"]["table_a"]
    assert (counts["added"], counts["updated"], counts["unchanged"]) == (0, 3, 1)
    after = deployment.cse()
    assert sorted(i for i in after if after[i] != cse[i]) == [100001, 100003, 100007]
    assert (after[100001]["DI"], after[100007]["PT"]) == ("240", "20")
    assert str(after[100003]["LI"]) == "2017-11-15"


def test_abort_mode_with_one_bad_row_loads_nothing_and_fails(deployment: Deployment):
    dag_run = deployment.run({"on_error": "abort"})
    assert str(dag_run.state) == "failed"
    ti = states(dag_run)
    assert (ti["wait_for_files"], ti["fetch_files"], ti["validate"]) == ("success", "success", "failed")
    assert {ti["transform"], ti["load_table_a"], ti["load_table_b"]} == {"upstream_failed"}
    assert ti["email_report"] == "failed"  # it sent the report, then failed the run on purpose
    assert sorted(deployment.cse()) == [100009]  # only the hand-entered row
    assert count(deployment.engine, "CSV") == 1
    summary = deployment.summary(dag_run)
    assert summary["status"] == "rejected" and "abort" in summary["message"]
    assert deployment.sink.messages[0]["Subject"].startswith("CASEMIS import REJECTED: Import rejected")
    files = attachments(deployment.sink.messages[0])
    assert files[rpt.STUDENTS_ERRORS]["OriginalLineNumber"].tolist() == ["10"]


def test_fault_in_load_table_b_leaves_csv_unchanged_and_the_retry_succeeds(deployment: Deployment):
    dag = deployment.dag()
    # Retry quickly: this test must not wait the production delay (2 minutes).
    task = dag.get_task("load_table_b")
    task.retry_delay = timedelta(seconds=3)
    task.retry_exponential_backoff = 0
    before = deployment.csv()
    # A real database fault: a trigger refuses the second service insert (CD 415), after the
    # first insert of the batch went through inside the same transaction.
    with deployment.engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TRIGGER casemis_test_fail BEFORE INSERT ON CSV WHEN NEW.CD = '415' "
                "BEGIN SELECT RAISE(ABORT, 'injected fault'); END;"
            )
        )
    seen: dict[str, Any] = {}
    done = threading.Event()

    def repair_after_failure() -> None:
        """When the first try has failed (its marker exists), record CSV and drop the trigger."""
        while not done.is_set():
            markers = list((deployment.root / "staging").glob("*/work/load_table_b.failed.json"))
            if markers:
                seen["failure"] = json.loads(markers[0].read_text(encoding="utf-8"))
                seen["csv"] = deployment.csv()
                seen["links"] = count(deployment.engine, "CASEMIS_SERVICE_LINK")
                with deployment.engine.begin() as conn:
                    conn.execute(sa.text("DROP TRIGGER casemis_test_fail"))
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=repair_after_failure, daemon=True)
    watcher.start()
    try:
        dag_run = deployment.run(dag=dag)
    finally:
        done.set()
        watcher.join(timeout=5)

    assert "failure" in seen, "load_table_b never failed: the injected fault was not hit"
    assert "injected fault" in seen["failure"]["message"]
    assert seen["csv"] == before and seen["links"] == 0  # the failed try changed nothing
    assert str(dag_run.state) == "success"
    assert set(states(dag_run).values()) == {"success"}
    tries = {ti.task_id: ti.try_number for ti in dag_run.get_task_instances()}
    assert tries["load_table_b"] == 2 and tries["load_table_a"] == 1
    assert count(deployment.engine, "CSV") == 5
    assert [cd for i, _, cd, _ in deployment.csv() if i == 100001] == ["330", "330", "415"]
    summary = deployment.summary(dag_run)
    assert summary["status"] == "success" and summary["counts"]["table_b"]["added"] == 4
    assert not (deployment.staging(dag_run) / "work" / "load_table_b.failed.json").exists()


def test_manual_run_with_pasted_table_a_and_an_uploaded_table_b(deployment: Deployment):
    table_a = write_table_a(deployment.root / "paste" / "tableA.csv").read_text(encoding="utf-8")
    uploaded_b = write_table_b(deployment.uploads / "services.csv")
    dag_run = deployment.run({"table_a_content": table_a, "table_b_path": str(uploaded_b)})
    assert str(dag_run.state) == "success"
    assert sorted(deployment.cse()) == [*MATCHED_IDS, 100009]
    assert count(deployment.engine, "CSV") == 5
    files = {f["kind"]: f["name"] for f in deployment.summary(dag_run)["files"]}
    assert files == {"table_a": "tableA.csv (pasted)", "table_b": "services.csv"}


def test_manual_run_refuses_a_path_outside_the_allowed_folders(deployment: Deployment):
    outside = write_table_a(deployment.root / "elsewhere" / "tableA.csv")
    sneaky = deployment.uploads / ".." / "elsewhere" / "tableA.csv"
    assert sneaky.is_file() and outside.is_file()
    dag_run = deployment.run({"table_a_path": str(sneaky)})
    assert str(dag_run.state) == "failed"
    ti = states(dag_run)
    assert ti["fetch_files"] == "failed" and ti["load_table_a"] == "upstream_failed"
    assert not (deployment.staging(dag_run) / "raw" / "tableA.csv").exists()
    assert sorted(deployment.cse()) == [100009]
    summary = deployment.summary(dag_run)
    assert summary["status"] == "failed"
    assert "fetch_files" in summary["message"]
    assert "outside the folders manual runs may read" in summary["message"]
    message = deployment.sink.messages[0]
    assert message["Subject"].startswith("CASEMIS import FAILED: Import failed in fetch_files")
    assert "outside the folders" in message.get_body(("plain",)).get_content()


def test_bad_params_fail_the_run_and_the_report_says_why(deployment: Deployment):
    table_a = write_table_a(deployment.uploads / "tableA.csv")
    dag_run = deployment.run({"table_a_path": str(table_a), "table_a_content": "SSID\n1234567890\n"})
    assert str(dag_run.state) == "failed"
    ti = states(dag_run)
    assert ti["wait_for_files"] == "failed" and ti["email_report"] == "failed"
    summary = deployment.summary(dag_run)
    assert summary["status"] == "failed"
    assert "give either table_a_path or table_a_content, not both" in summary["message"]
    assert sorted(deployment.cse()) == [100009]  # nothing loaded
    assert "not both" in deployment.sink.messages[0].get_body(("plain",)).get_content()


def test_invalid_settings_fail_the_run_instead_of_showing_green(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("CASEMIS_TIME", "25:99")  # an impossible time of day
    dag_run = deployment.run()
    assert str(dag_run.state) == "failed"
    ti = states(dag_run)
    assert ti["wait_for_files"] == "failed"
    assert ti["email_report"] == "failed"
    assert sorted(deployment.cse()) == [100009]
