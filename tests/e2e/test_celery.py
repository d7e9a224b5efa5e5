"""The DAG on a real multi-worker Airflow: CeleryExecutor, two Celery workers, PostgreSQL, Redis.

Starts, as subprocesses on loopback: the API server (UI, REST API and the Task Execution
API), the scheduler, the DAG processor and two ``airflow celery worker`` processes
(``-H w1@%h`` / ``-H w2@%h``, concurrency 1 each). The local Redis is the Celery broker
(database 7 only, flushed before and after); a fresh PostgreSQL database is Airflow's
metadata database and Celery's result backend; another fresh PostgreSQL database is the
Aeries target, seeded with ``include/sample_data/stu.csv``. Both databases are dropped at the
end, and every process group started here is stopped.

A manual run is triggered through the REST API with the sample files. The test proves:

- the run succeeds and the CSE and CSV rows are in the target database;
- tasks of the run(s) ran on BOTH workers (task instance ``hostname``), so later tasks read
  what earlier tasks wrote on the other worker;
- that exchange went through the shared staging folder set by configuration
  (``CASEMIS_CONFIG`` ``staging_dir``), not through a worker's own disk: each worker runs
  in its own working directory, and the run's files are in the shared folder only.

Both workers run on this one machine, so their TI ``hostname`` would be the same; each
worker therefore reports ``w1@<host>``/``w2@<host>`` through Airflow's
``[core] hostname_callable`` (a small module written by the test), as two containers
would report their own host names.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.servers import LOOPBACK, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "include" / "sample_data"
PG_ADMIN_URL = os.environ.get("CASEMIS_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 7
DEADLINE_SECONDS = 300  # everything, start-up included
DAG_ID = "casemis_import"
ADMIN = "admin"

HOSTNAME_MODULE = '''
"""Written by tests/e2e/test_celery.py: the worker's name as the task instance hostname."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    """``w1@<host>``: which of the two local Celery workers ran the task."""
    return f"{os.environ['CASEMIS_E2E_WORKER']}@{socket.gethostname()}"
'''


@dataclass
class Stack:
    """The running services and what the test needs to talk to them."""

    base_url: str
    password: str
    shared: Path
    target_url: str
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def check_alive(self) -> None:
        """Fail at once (with the logs) when a service died."""
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}\n{self.log_tails()}")

    def log_tails(self, lines: int = 40) -> str:
        """The end of every service's log, for a failure message."""
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            out.append(f"----- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


def _create_database(prefix: str) -> tuple[str, str]:
    """A fresh PostgreSQL database: (name, URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def _drop_database(name: str) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _flush_redis_db() -> None:
    """Empty the test's own Redis database (7), never the others."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    client.flushdb()
    client.close()


def _airflow_env(
    tmp: Path, api_port: int, meta_url: str, shared: Path, target: dict[str, Any]
) -> dict[str, str]:
    """Configuration shared by every Airflow process (as a deployment sets it per container)."""
    from cryptography.fernet import Fernet

    meta = sa.make_url(meta_url)
    # an explicit driver: SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3, not installed here
    result_backend = f"db+postgresql+psycopg2://{meta.username}@{meta.host}:{meta.port}/{meta.database}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CASEMIS_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(tmp / "airflow_home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{LOOPBACK}:{api_port}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta_url,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
            "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            "AIRFLOW__API__HOST": LOOPBACK,
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(24),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_CASEMIS_TARGET": json.dumps(target),
            "CASEMIS_HOME": str(ROOT),
            "CASEMIS_CONFIG": json.dumps(
                {
                    "location_type": "local",
                    "local_path": str(shared / "incoming"),
                    "manual_dir": str(shared / "uploads"),
                    "staging_dir": str(shared / "staging"),
                    "report_dir": str(shared / "reports"),
                    "stable_seconds": 0,
                    "enabled": False,
                    "target_conn_id": "casemis_target",
                }
            ),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(tmp / "pylib"),
        }
    )
    return env


def _start(stack: Stack, name: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
    """Start one service in its own process group, logging to ``<logs>/<name>.log``."""
    log = (stack.logs / f"{name}.log").open("wb")
    stack.processes[name] = subprocess.Popen(
        [str(Path(sys.executable).with_name("airflow")), *args],
        env=env,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()


def _stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM each started process group, then SIGKILL whatever is left after a grace period."""
    for proc in processes.values():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    end = time.monotonic() + 15
    for proc in processes.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, end - time.monotonic()))
    for proc in processes.values():
        # the group may outlive its leader (forked task runners, uvicorn children)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole multi-worker Airflow, stopped and cleaned up afterwards."""
    from casemis.db import engine_from_url
    from casemis.seed import init_db

    tmp = tmp_path_factory.mktemp("celery")
    shared = tmp / "shared"
    for sub in ("incoming", "uploads", "staging", "reports"):
        (shared / sub).mkdir(parents=True)
    (tmp / "pylib").mkdir()
    (tmp / "pylib" / "casemis_e2e_host.py").write_text(textwrap.dedent(HOSTNAME_MODULE), encoding="utf-8")
    (tmp / "logs").mkdir()
    password = secrets.token_urlsafe(16)
    (tmp / "passwords.json").write_text(json.dumps({ADMIN: password}), encoding="utf-8")

    meta_name, meta_url = _create_database("casemis_e2e_airflow")
    target_name, target_url = _create_database("casemis_e2e_aeries")
    _flush_redis_db()
    api_port = free_port()
    stack = Stack(
        base_url=f"http://{LOOPBACK}:{api_port}",
        password=password,
        shared=shared,
        target_url=target_url,
        logs=tmp / "logs",
    )
    try:
        engine = engine_from_url(target_url)
        init_db(engine, SAMPLES / "stu.csv")
        engine.dispose()
        target = sa.make_url(target_url)
        env = _airflow_env(
            tmp,
            api_port,
            meta_url,
            shared,
            {
                "conn_type": "postgres",
                "host": target.host,
                "port": target.port,
                "login": target.username,
                "schema": target.database,
            },
        )
        migrate = subprocess.run(
            [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]

        _start(stack, "api-server", ["api-server", "-H", LOOPBACK, "-p", str(api_port), "-w", "1"], env, tmp)
        _start(stack, "scheduler", ["scheduler"], env, tmp)
        _start(stack, "dag-processor", ["dag-processor"], env, tmp)
        for worker in ("w1", "w2"):
            private = tmp / f"{worker}-cwd"  # each worker's own disk: nothing may be read from here
            private.mkdir()
            worker_env = {
                **env,
                "CASEMIS_E2E_WORKER": worker,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "casemis_e2e_host.hostname",
                "TMPDIR": str(private),
            }
            _start(
                stack,
                worker,
                [
                    "celery",
                    "worker",
                    "-H",
                    f"{worker}@%h",
                    "--concurrency",
                    "1",
                    "--skip-serve-logs",
                    "--pid",
                    str(tmp / f"{worker}.pid"),
                ],
                worker_env,
                private,
            )
        yield stack
    finally:
        _stop(stack.processes)
        _flush_redis_db()
        _drop_database(meta_name)
        _drop_database(target_name)


class Api:
    """A tiny REST API v2 client (token from ``POST /auth/token``)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.client = httpx.Client(base_url=stack.base_url, timeout=30)

    def wait_until_up(self, deadline: float) -> None:
        """Poll the health endpoint until the API server answers."""
        while time.monotonic() < deadline:
            self.stack.check_alive()
            try:
                if self.client.get("/api/v2/monitor/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        else:
            pytest.fail("the API server did not come up\n" + self.stack.log_tails())
        response = self.client.post("/auth/token", json={"username": ADMIN, "password": self.stack.password})
        assert response.status_code in (200, 201), response.text
        self.client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def get(self, path: str) -> dict[str, Any]:
        """GET a JSON document (must succeed)."""
        response = self.client.get(path)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
        return response.json()

    def wait_for_dag(self, deadline: float) -> None:
        """Until the DAG processor has parsed the DAG (unpaused at creation)."""
        while time.monotonic() < deadline:
            self.stack.check_alive()
            response = self.client.get(f"/api/v2/dags/{DAG_ID}")
            if response.status_code == 200:
                assert response.json()["is_paused"] is False
                return
            time.sleep(2)
        pytest.fail(f"{DAG_ID} was not parsed in time\n" + self.stack.log_tails())

    def trigger(self, conf: dict[str, Any]) -> str:
        """Start a manual run; returns its run id."""
        response = self.client.post(
            f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf}
        )
        assert response.status_code in (200, 201), response.text
        return response.json()["dag_run_id"]

    def wait_for_run(self, run_id: str, deadline: float) -> str:
        """Until the run finishes; returns its final state."""
        while time.monotonic() < deadline:
            self.stack.check_alive()
            state = self.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(2)
        pytest.fail(f"run {run_id} did not finish in time\n" + self.stack.log_tails())

    def task_instances(self, run_id: str) -> list[dict[str, Any]]:
        """The run's task instances (task_id, state, hostname, ...)."""
        return self.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]


def _count(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        value = conn.execute(sa.text(f'SELECT COUNT(*) FROM "{table}"')).scalar_one()
    engine.dispose()
    return int(value)


def test_import_runs_across_two_celery_workers(stack: Stack) -> None:
    """One import's tasks run on two workers, exchanging files only through shared staging."""
    from casemis.pipeline import RunContext

    deadline = time.monotonic() + DEADLINE_SECONDS
    uploads = stack.shared / "uploads"
    for name in ("tableA.csv", "tableB.csv"):
        shutil.copyfile(SAMPLES / name, uploads / name)
    conf = {"table_a_path": str(uploads / "tableA.csv"), "table_b_path": str(uploads / "tableB.csv")}

    api = Api(stack)
    api.wait_until_up(deadline)
    api.wait_for_dag(deadline)

    runs: dict[str, list[dict[str, Any]]] = {}
    workers: set[str] = set()
    while len(workers) < 2 and len(runs) < 3:  # a second run only if one worker took everything
        run_id = api.trigger(conf)
        state = api.wait_for_run(run_id, deadline)
        tis = api.task_instances(run_id)
        runs[run_id] = tis
        assert state == "success", json.dumps(tis, indent=1, default=str) + "\n" + stack.log_tails()
        assert {ti["task_id"] for ti in tis if ti["state"] == "success"} >= {
            "fetch_files",
            "validate",
            "transform",
            "load_table_a",
            "load_table_b",
            "email_report",
        }
        workers |= {str(ti["hostname"]).split("@")[0] for ti in tis if ti["hostname"]}

    placement = {rid: {t["task_id"]: t["hostname"] for t in tis} for rid, tis in runs.items()}
    print(json.dumps(placement, indent=1))  # which worker ran which task, in the test output
    # Two different Celery workers ran tasks of the import.
    assert workers == {"w1", "w2"}, {
        rid: [(t["task_id"], t["hostname"]) for t in tis] for rid, tis in runs.items()
    }

    first_run = next(iter(runs))
    ctx = RunContext(run_id=first_run, staging_root=str(stack.shared / "staging"), report_root="")
    # Every task's output is in the shared staging folder set by CASEMIS_CONFIG ...
    for produced in (
        "raw/tableA.csv",
        "raw/tableB.csv",
        "work/validation.json",
        "work/cse.parquet",
        "work/load_a.json",
    ):
        assert (ctx.staging / produced).is_file(), produced
    assert (stack.shared / "reports" / ctx.folder_name).is_dir()
    # ... and nowhere else: not in the default folder under the project, not on a worker's own disk.
    assert not (ROOT / "var" / "staging" / ctx.folder_name).exists()
    for worker in ("w1", "w2"):
        private = stack.shared.parent / f"{worker}-cwd"
        assert not list(private.rglob("*.parquet")) and not list(private.rglob("tableA.csv"))

    # The first run loaded the sample files into the target database.
    loaded_a = json.loads((ctx.work / "load_a.json").read_text(encoding="utf-8"))
    loaded_b = json.loads((ctx.work / "load_b.json").read_text(encoding="utf-8"))
    assert loaded_a["added"] > 0 and loaded_b["added"] > 0
    assert _count(stack.target_url, "CSE") == loaded_a["added"]
    assert _count(stack.target_url, "CSV") == loaded_b["added"]
    engine = sa.create_engine(stack.target_url)
    with engine.connect() as conn:
        history = dict(conn.execute(sa.text('SELECT "RUN_ID", "STATUS" FROM "CASEMIS_IMPORT_RUN"')).all())
    engine.dispose()
    assert history == dict.fromkeys(runs, "success")
