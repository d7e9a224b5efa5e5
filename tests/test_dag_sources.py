"""The casemis_import DAG reading its files from each location, end to end.

Real parts only: the DAG runs through ``dag.test()`` on the session's Airflow metadata
database; the files sit on a real SFTP server (asyncssh) or a real Samba ``smbd``, both on
loopback (tests/servers.py), or in a local folder; the target is a SQLite database seeded
with ``casemis.seed.init_db``; the report goes to a real SMTP server (aiosmtpd). Settings
come from ``CASEMIS_CONFIG`` and credentials from ``AIRFLOW_CONN_*`` variables, as in a
deployment.

``DAG.test()`` always creates a *manual* run (``get_or_create_dagrun`` hard-codes the run
type), and the not-refreshed policy and the disabled-schedule skip only apply to scheduled
runs. :func:`scheduled_runs` therefore swaps that one helper for one that creates the same
run with ``run_type=SCHEDULED``; the run itself (scheduling loop, sensor, tasks, XCom,
retries) is Airflow's own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

# Imported at collection time, so Airflow reads the session's AIRFLOW_HOME (tests/conftest.py).
from airflow.models import dagrun as dagrun_module
from airflow.utils.state import DagRunState, TaskInstanceState
from airflow.utils.types import DagRunType

from casemis.db import engine_from_url
from casemis.generate import GeneratedFiles, generate
from casemis.pipeline import RunContext
from casemis.seed import init_db
from casemis.settings import load_settings
from casemis.sources import SourceAuthError, SourceHostKeyError
from casemis.tasks import (
    OBSERVATION_FILE,
    SkipRun,
    WaitTimedOut,
    begin_run,
    fetch_files,
    is_permanent_failure,
    poke_files,
)
from tests.servers import SftpServer, SmbServer, sftp_server, smb_server
from tests.smtp_server import SmtpSink, smtp_sink

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "casemis_import"
SFTP_CONN = "vendor_sftp"  # not the default id: the ids come from the settings
SMB_CONN = "district_share"
SMTP_CONN = "casemis_mail"
TARGET_CONN = "casemis_target"
OFFICE = "sped-office@example.org"
STUDENTS = 300  # tableA is then ~70 KB: a few SFTP read requests, so a drop is mid-file
ALL_TASKS = ("wait_for_files", "fetch_files", "validate", "transform", "load_table_a", "load_table_b")


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def sftp_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    """One SFTP server for the module; the vendor drops files in /outbox."""
    root = tmp_path_factory.mktemp("sftp_root")
    (root / "outbox").mkdir()
    with sftp_server(root) as srv:
        yield srv


@pytest.fixture(scope="module")
def smb_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmbServer]:
    """One smbd for the module, sharing a folder with a casemis/ subfolder."""
    share = tmp_path_factory.mktemp("smb_share")
    (share / "casemis").mkdir()
    with smb_server(share) as srv:
        yield srv


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> GeneratedFiles:
    """A vendor file set (tableA, tableB) and the matching Aeries STU rows."""
    return generate(STUDENTS, tmp_path_factory.mktemp("generated"), seed=11)


# --------------------------------------------------------------------------- deployment


@dataclass
class Deployment:
    """One district's set-up for a test: folders, target database, settings, mail sink."""

    monkeypatch: pytest.MonkeyPatch
    tmp: Path
    files: GeneratedFiles
    sink: SmtpSink
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        """The target (Aeries) SQLite database."""
        return self.tmp / "aeries.db"

    def configure(self, **changes: Any) -> None:
        """Update the settings and publish them through CASEMIS_CONFIG."""
        self.settings.update(changes)
        self.monkeypatch.setenv("CASEMIS_CONFIG", json.dumps(self.settings))

    def connection(self, conn_id: str, **fields: Any) -> None:
        """Define an Airflow connection through AIRFLOW_CONN_<ID> (JSON), as in a deployment."""
        self.monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))

    def drop_files(self, folder: Path) -> None:
        """Put the vendor's two files where the location serves them from."""
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.files.table_a, folder / "tableA.csv")
        shutil.copyfile(self.files.table_b, folder / "tableB.csv")

    def count(self, table: str) -> int:
        """Rows in a target table."""
        engine = engine_from_url(f"sqlite:///{self.db_path}")
        try:
            with engine.connect() as conn:
                return int(conn.execute(sa.text(f'SELECT COUNT(*) FROM "{table}"')).scalar_one())
        finally:
            engine.dispose()

    def run_context(self, run_id: str) -> RunContext:
        """The RunContext the DAG builds for ``run_id`` (to find its staging/report folders)."""
        return RunContext(
            run_id=run_id, staging_root=self.settings["staging_dir"], report_root=self.settings["report_dir"]
        )

    def report(self, run_id: str) -> dict[str, Any]:
        """The summary.json the run's email_report task wrote."""
        return json.loads((self.run_context(run_id).report_dir / "summary.json").read_text(encoding="utf-8"))

    def report_text(self, run_id: str) -> str:
        """The run's report.txt (the email's text body)."""
        return (self.run_context(run_id).report_dir / "report.txt").read_text(encoding="utf-8")


@pytest.fixture
def deployment(
    airflow_db: Path, generated: GeneratedFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    """A seeded target database, a mail server and settings common to every location."""
    init_db(engine_from_url(f"sqlite:///{tmp_path / 'aeries.db'}"), generated.stu)
    with smtp_sink() as sink:
        dep = Deployment(monkeypatch, tmp_path, generated, sink)
        dep.connection(TARGET_CONN, conn_type="sqlite", host=str(dep.db_path))
        monkeypatch.setenv(f"AIRFLOW_CONN_{SMTP_CONN.upper()}", sink.airflow_conn_json())
        dep.configure(
            enabled=True,
            stable_seconds=1,
            wait_timeout_minutes=5,
            staging_dir=str(tmp_path / "staging"),
            report_dir=str(tmp_path / "reports"),
            manual_dir=str(tmp_path / "uploads"),
            target_conn_id=TARGET_CONN,
            smtp_conn_id=SMTP_CONN,
            recipients=[OFFICE],
        )
        yield dep


def use_sftp(dep: Deployment, srv: SftpServer, **conn_changes: Any) -> Path:
    """Configure the SFTP location; return the server folder the vendor drops files in."""
    fields: dict[str, Any] = {
        "conn_type": "sftp",
        "host": srv.host,
        "login": srv.username,
        "password": srv.password,
        "extra": {"host_key": srv.host_key_public},
    }
    fields.update(conn_changes)
    dep.connection(SFTP_CONN, **fields)
    dep.configure(
        location_type="sftp",
        sftp_host=srv.host,
        sftp_port=srv.port,
        sftp_conn_id=SFTP_CONN,
        sftp_directory="/outbox",
    )
    folder = srv.root / "outbox"
    for child in folder.iterdir():
        child.unlink()
    return folder


def use_smb(dep: Deployment, srv: SmbServer) -> Path:
    """Configure the SMB location (UNC path in the settings, user/password/port in the connection)."""
    dep.connection(
        SMB_CONN,
        conn_type="samba",
        host=srv.host,
        port=srv.port,
        login=srv.username,
        password=srv.password,
        schema=srv.share,
        extra={"auth_protocol": "ntlm"},
    )
    dep.configure(location_type="smb", smb_path=rf"\\{srv.host}\{srv.share}\casemis", smb_conn_id=SMB_CONN)
    folder = srv.share_dir / "casemis"
    for child in folder.iterdir():
        child.unlink()
    return folder


def use_local(dep: Deployment) -> Path:
    """Configure the local-folder location."""
    folder = dep.tmp / "drop"
    folder.mkdir(exist_ok=True)
    dep.configure(location_type="local", local_path=str(folder))
    return folder


# --------------------------------------------------------------------------- running the DAG


@dataclass
class RunTypeSwitch:
    """Which kind of run the next ``dag.test()`` creates."""

    scheduled: bool = True


@pytest.fixture
def scheduled_runs(monkeypatch: pytest.MonkeyPatch) -> RunTypeSwitch:
    """Make ``dag.test()`` create scheduled runs (set ``.scheduled = False`` for manual ones).

    Not a mock of anything under test: only the run type of the run dag.test() creates
    changes (see the module docstring). A scheduled run's id is ``scheduled__<logical date>``.
    """
    switch = RunTypeSwitch()
    manual = dagrun_module.get_or_create_dagrun

    def create_run(**kw: Any) -> Any:
        if not switch.scheduled:
            return manual(**kw)
        from airflow.models.dagrun import DagRun

        dag, session = kw["dag"], kw["session"]
        existing = session.scalar(
            sa.select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.logical_date == kw["logical_date"])
        )
        if existing:
            session.delete(existing)
            session.commit()
        return dag.create_dagrun(
            run_id=f"scheduled__{kw['logical_date'].isoformat()}",
            logical_date=kw["logical_date"],
            data_interval=kw["data_interval"],
            run_after=kw["run_after"],
            conf=kw["conf"],
            run_type=DagRunType.SCHEDULED,
            state=DagRunState.RUNNING,
            triggered_by=kw["triggered_by"],
            triggering_user_name=None,
            start_date=kw["start_date"],
            session=session,
        )

    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", create_run)
    return switch


_LOGICAL_BASE = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)
_counter = iter(range(1, 1_000_000))


def next_logical_date() -> dt.datetime:
    """A logical date no other run of this session uses (dag.test replaces same-date runs)."""
    return _LOGICAL_BASE + dt.timedelta(minutes=next(_counter), microseconds=os.getpid() % 1000)


def run_dag(logical_date: dt.datetime | None = None) -> Any:
    """Parse the DAG with the current settings and run it once with dag.test(); return the DagRun."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "casemis_import.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(DAG_ID).test(logical_date=logical_date or next_logical_date())


def states(dag_run: Any) -> dict[str, str | None]:
    """task_id -> final state of the run's task instances."""
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def try_numbers(dag_run: Any) -> dict[str, int]:
    """task_id -> how many times the task ran."""
    return {ti.task_id: ti.try_number for ti in dag_run.get_task_instances()}


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_imported(dep: Deployment, dag_run: Any) -> dict[str, Any]:
    """A successful scheduled import: every task succeeded, CSE/CSV rows are in the target,
    the staged files are whole (same sha256 as the vendor's), no partial file is left, and
    the office got the success email. Returns the report summary."""
    assert dag_run.run_type == DagRunType.SCHEDULED
    assert dag_run.state == DagRunState.SUCCESS, states(dag_run)
    assert set(states(dag_run).values()) == {TaskInstanceState.SUCCESS}
    summary = dep.report(dag_run.run_id)
    assert summary["status"] == "success"
    assert summary["trigger"] == "scheduled"
    counts = summary["counts"]
    assert counts["table_a"]["added"] == counts["table_a"]["matched"] > 0
    assert counts["table_b"]["added"] > 0
    assert dep.count("CSE") == counts["table_a"]["added"]
    assert dep.count("CSV") == counts["table_b"]["added"]
    staging = dep.run_context(dag_run.run_id).staging
    assert sha256(staging / "raw" / "tableA.csv") == sha256(dep.files.table_a)
    assert sha256(staging / "raw" / "tableB.csv") == sha256(dep.files.table_b)
    assert {f["kind"]: f["sha256"] for f in summary["files"]} == {
        "table_a": sha256(dep.files.table_a),
        "table_b": sha256(dep.files.table_b),
    }
    assert not [p for p in staging.rglob("*") if p.name.endswith((".part", ".tmp"))]
    assert (staging / OBSERVATION_FILE).exists()  # the sensor's state lives in staging
    mail = dep.sink.messages[-1]
    assert "CASEMIS import succeeded" in mail["Subject"]
    assert dep.sink.envelope_recipients[-1] == [OFFICE]
    return summary


# --------------------------------------------------------------------------- the three locations


@pytest.mark.usefixtures("scheduled_runs")
def test_scheduled_run_from_sftp_retries_a_dropped_transfer(
    deployment: Deployment, sftp_srv: SftpServer
) -> None:
    """SFTP end to end; the server cuts the connection half-way through tableA.csv once."""
    deployment.drop_files(use_sftp(deployment, sftp_srv))
    drops_before = sftp_srv.drops
    size = deployment.files.table_a.stat().st_size
    assert size > 2 * 32768  # larger than two SFTP read requests
    sftp_srv.drop_next_transfer(after_bytes=size // 2)

    dag_run = run_dag()

    assert sftp_srv.drops == drops_before + 1  # the transfer really was cut
    assert try_numbers(dag_run)["fetch_files"] == 1  # retried inside the task, not by Airflow
    assert_imported(deployment, dag_run)


@pytest.mark.usefixtures("scheduled_runs")
def test_scheduled_run_from_smb_share(deployment: Deployment, smb_srv: SmbServer) -> None:
    deployment.drop_files(use_smb(deployment, smb_srv))

    dag_run = run_dag()

    assert_imported(deployment, dag_run)
    assert deployment.report(dag_run.run_id)["files"][0]["name"] == "tableA.csv"


def test_unchanged_files_are_reported_not_refreshed_then_reimported_on_request(
    deployment: Deployment, scheduled_runs: RunTypeSwitch
) -> None:
    """Local folder: import; the same files again -> skipped with a "not refreshed" report
    (the run succeeds, nothing is loaded); with not_refreshed=reimport -> loaded again with
    nothing added or updated; a manual run always imports."""
    deployment.drop_files(use_local(deployment))
    first = run_dag()
    summary = assert_imported(deployment, first)
    cse, csv = deployment.count("CSE"), deployment.count("CSV")

    second = run_dag()

    assert second.state == DagRunState.SUCCESS  # not refreshed is not a failure
    assert states(second) == {
        "wait_for_files": TaskInstanceState.SUCCESS,
        "fetch_files": TaskInstanceState.SKIPPED,
        "validate": TaskInstanceState.SKIPPED,
        "transform": TaskInstanceState.SKIPPED,
        "load_table_a": TaskInstanceState.SKIPPED,
        "load_table_b": TaskInstanceState.SKIPPED,
        "email_report": TaskInstanceState.SUCCESS,
    }
    report = deployment.report(second.run_id)
    assert report["status"] == "not_refreshed"
    assert report["identical_to_last_import"] is True
    assert report["not_refreshed_since"] == dt.datetime.fromisoformat(summary["completed_at"]).isoformat()
    assert "not been refreshed since" in report["message"]
    assert (deployment.count("CSE"), deployment.count("CSV")) == (cse, csv)
    mail = deployment.sink.messages[-1]
    assert str(mail["Subject"]).strip().startswith("CASEMIS files not refreshed since")
    assert "have not been refreshed since" in mail.get_body(("plain",)).get_content()

    deployment.configure(not_refreshed="reimport")
    third = run_dag()

    assert_reimported(deployment, third, summary)

    deployment.configure(not_refreshed="skip")
    scheduled_runs.scheduled = False  # a manual run with no files reads the location now
    fourth = run_dag()

    assert fourth.run_type == DagRunType.MANUAL
    assert deployment.report(fourth.run_id)["trigger"] == "manual"
    assert_reimported(deployment, fourth, summary)
    assert (deployment.count("CSE"), deployment.count("CSV")) == (cse, csv)


def assert_reimported(dep: Deployment, dag_run: Any, first: dict[str, Any]) -> None:
    """The same files imported again: the run succeeds, nothing is added or updated."""
    assert dag_run.state == DagRunState.SUCCESS
    assert set(states(dag_run).values()) == {TaskInstanceState.SUCCESS}
    again = dep.report(dag_run.run_id)
    assert again["status"] == "success"
    for kind in ("table_a", "table_b"):
        assert again["counts"][kind]["added"] == again["counts"][kind]["updated"] == 0
    assert again["counts"]["table_a"]["unchanged"] == first["counts"]["table_a"]["added"]
    assert again["identical_to_last_import"] is True


# --------------------------------------------------------------------------- failures


@pytest.mark.usefixtures("scheduled_runs")
def test_wrong_sftp_password_fails_the_run_at_once_without_showing_it(
    deployment: Deployment, sftp_srv: SftpServer, capfd: pytest.CaptureFixture[str]
) -> None:
    wrong = "Not-The-Password-" + sftp_srv.password[:6]
    deployment.drop_files(use_sftp(deployment, sftp_srv, password=wrong))

    dag_run = run_dag()

    assert dag_run.state == DagRunState.FAILED
    assert states(dag_run)["wait_for_files"] == TaskInstanceState.FAILED
    assert try_numbers(dag_run)["wait_for_files"] == 1  # never retried: it would lock the account
    assert deployment.count("CSE") == 0
    report = deployment.report(dag_run.run_id)
    assert report["status"] == "failed"
    assert "SFTP authentication failed for connection 'vendor_sftp'" in report["message"]
    output = capfd.readouterr()
    log_text = output.out + output.err
    assert "SFTP authentication failed" in log_text  # the task log says why
    mail = deployment.sink.messages[-1]
    assert "FAILED" in mail["Subject"]
    for text in (log_text, deployment.report_text(dag_run.run_id), mail.as_string()):
        assert wrong not in text
        assert sftp_srv.password not in text


@pytest.mark.usefixtures("scheduled_runs")
def test_unknown_sftp_host_key_fails_the_run_and_says_how_to_fix_it(
    deployment: Deployment, sftp_srv: SftpServer, capfd: pytest.CaptureFixture[str]
) -> None:
    # The connection has no host_key extra and does not turn checking off: refused.
    deployment.drop_files(use_sftp(deployment, sftp_srv, extra={}))

    dag_run = run_dag()

    assert dag_run.state == DagRunState.FAILED
    assert try_numbers(dag_run)["wait_for_files"] == 1
    message = deployment.report(dag_run.run_id)["message"]
    assert "host key" in message and "unknown" in message
    assert "ssh-keyscan" in message
    log_text = "".join(capfd.readouterr())
    assert f"the host key of {sftp_srv.host}:{sftp_srv.port} is unknown" in log_text  # the task log
    assert sftp_srv.password not in log_text


@pytest.mark.usefixtures("scheduled_runs")
def test_files_that_never_arrive_time_out_with_a_report(deployment: Deployment) -> None:
    """The sensor gives up after wait_timeout_minutes (from the settings, not the DAG file).

    The run starts with the state an earlier poke of this run left in staging a minute
    ago (files missing), as after a real minute of reschedules.
    """
    use_local(deployment)
    deployment.configure(wait_timeout_minutes=1)
    logical_date = next_logical_date()
    run_id = f"scheduled__{logical_date.isoformat()}"
    state = deployment.run_context(run_id).staging / OBSERVATION_FILE
    state.parent.mkdir(parents=True)
    earlier = time.time() - 61
    state.write_text(
        json.dumps(
            {
                "observed_at": earlier,
                "files": {"tableA.csv": None, "tableB.csv": None},
                "waiting_since": earlier,
            }
        )
    )

    dag_run = run_dag(logical_date)

    assert dag_run.run_id == run_id
    assert dag_run.state == DagRunState.FAILED
    assert states(dag_run)["wait_for_files"] == TaskInstanceState.FAILED
    assert try_numbers(dag_run)["wait_for_files"] == 1  # a timeout is not retried
    report = deployment.report(run_id)
    assert report["status"] == "failed"
    assert "gave up after 1 minute(s): tableA.csv, tableB.csv did not appear" in report["message"]


# --------------------------------------------------------------------------- task functions


def _ctx(run_type: str = "scheduled") -> RunContext:
    """begin_run for a new run of the given type with the current settings."""
    return begin_run(f"{run_type}__t{next(_counter)}", run_type, {}, load_settings(use_variable=False))


def test_growing_file_is_not_picked_up_until_it_stops_changing(
    deployment: Deployment, sftp_srv: SftpServer
) -> None:
    """poke_files against the SFTP server while the vendor is still appending to tableA.csv."""
    folder = use_sftp(deployment, sftp_srv)
    deployment.configure(include_services=False)
    settings = load_settings(use_variable=False)
    ctx = _ctx()
    target = folder / "tableA.csv"

    ready, message = poke_files(ctx, settings, {})
    assert (ready, message) == (
        False,
        f"waiting for tableA.csv in SFTP {sftp_srv.host}:{sftp_srv.port} /outbox",
    )

    writing = threading.Event()
    writing.set()

    def vendor_writes() -> None:
        with target.open("ab") as out:
            while writing.is_set():
                out.write(b"x" * 512)
                out.flush()
                time.sleep(0.15)

    writer = threading.Thread(target=vendor_writes)
    writer.start()
    try:
        for _ in range(2):
            ready, message = poke_files(ctx, settings, {})
            assert not ready
            assert "waiting until they have not changed for 1 s" in message
    finally:
        writing.clear()
        writer.join()

    ready, message = poke_files(ctx, settings, {})

    assert ready, message
    assert f"tableA.csv ({target.stat().st_size:,} bytes)" in message
    state = json.loads((ctx.staging / OBSERVATION_FILE).read_text())
    assert state["files"]["tableA.csv"]["size"] == target.stat().st_size


class Clock:
    """A clock for poke_files whose sleep moves time forward (a minute between pokes without waiting one)."""

    def __init__(self) -> None:
        self.now = time.time()
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_settle_time_longer_than_a_poke_spans_pokes(deployment: Deployment) -> None:
    """stable_seconds=120: the first poke does not block for two minutes; the observation
    that started the unchanged span is kept in staging, and a later poke finishes the wait."""
    deployment.drop_files(use_local(deployment))
    deployment.configure(stable_seconds=120)
    settings = load_settings(use_variable=False)
    ctx = _ctx()
    clock = Clock()

    first = poke_files(ctx, settings, {}, clock=clock, sleep=clock.sleep)
    clock.now += 70  # the sensor is rescheduled; it pokes again 70 s later
    second = poke_files(ctx, settings, {}, clock=clock, sleep=clock.sleep)

    assert first[0] is False
    assert second[0] is True
    assert clock.slept == [50.0]  # only the rest of the 120 s, within the second poke


def test_fetch_files_discards_a_copy_of_a_file_changed_after_it_was_found_complete(
    deployment: Deployment,
) -> None:
    folder = use_local(deployment)
    deployment.drop_files(folder)
    settings = load_settings(use_variable=False)
    ctx = _ctx()
    assert poke_files(ctx, settings, {})[0]
    with (folder / "tableB.csv").open("a", encoding="utf-8") as out:
        out.write("\n")  # the vendor rewrites the file after the sensor said it was complete

    from casemis.sources import SourceIntegrityError

    with pytest.raises(SourceIntegrityError, match="tableB.csv changed"):
        fetch_files(ctx, settings, {})

    assert not ctx.raw.exists() or not any(ctx.raw.iterdir())  # nothing half-staged remains
    files = fetch_files(ctx, settings, {})  # the retry: unchanged since -> accepted
    assert {f["kind"] for f in files} == {"table_a", "table_b"}


def test_scheduled_run_is_skipped_while_the_schedule_is_disabled(deployment: Deployment) -> None:
    use_local(deployment)
    deployment.configure(enabled=False)
    settings = load_settings(use_variable=False)
    with pytest.raises(SkipRun, match="disabled"):
        begin_run("scheduled__x", "scheduled", {}, settings)
    assert begin_run("manual__x", "manual", {}, settings).trigger == "manual"  # manual runs proceed


def test_scheduled_run_while_disabled_runs_nothing_and_stays_green(
    deployment: Deployment, scheduled_runs: RunTypeSwitch
) -> None:
    deployment.drop_files(use_local(deployment))
    deployment.configure(enabled=False)

    dag_run = run_dag()

    # A stale schedule that still fires while disabled does nothing, and is not a failure:
    # every task is skipped (email_report too: there is nothing to report).
    assert str(dag_run.state) == "success"
    assert set(states(dag_run).values()) == {"skipped"}
    assert not deployment.sink.messages
    assert deployment.count("CSE") == 0


def test_permanent_failures_are_not_retried() -> None:
    assert is_permanent_failure(SourceAuthError("x"))
    assert is_permanent_failure(SourceHostKeyError("x"))
    assert is_permanent_failure(WaitTimedOut("x"))
    assert not is_permanent_failure(ConnectionResetError())


def test_host_key_from_ssh_keyscan_as_documented_is_accepted(
    deployment: Deployment, sftp_srv: SftpServer
) -> None:
    """README "File locations": `ssh-keyscan -t ed25519 -p PORT HOST | cut -d' ' -f2-` is the host_key."""
    scan = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(sftp_srv.port), sftp_srv.host],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    line = next(line for line in scan.stdout.splitlines() if line and not line.startswith("#"))
    host_key = line.split(" ", 1)[1]  # what `cut -d' ' -f2-` leaves: "ssh-ed25519 AAAA..."
    deployment.drop_files(use_sftp(deployment, sftp_srv, extra={"host_key": host_key}))
    deployment.configure(stable_seconds=0)

    ready, message = poke_files(_ctx(), load_settings(use_variable=False), {})

    assert ready, message
    assert host_key == sftp_srv.host_key_public
