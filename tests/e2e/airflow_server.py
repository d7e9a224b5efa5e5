"""A real Airflow 3 for end-to-end tests: API server, scheduler and dag-processor on SQLite.

``airflow_stack(env_extra)`` migrates a fresh metadata database in a temporary
``AIRFLOW_HOME``, starts the three components as separate processes (each in its own
process group, LocalExecutor with 2 worker slots: the machine has 2 cores) with the
repository's ``dags/`` and ``plugins/`` folders, waits until the API answers and the
``casemis_import`` DAG is parsed, and stops every process group (SIGTERM, then SIGKILL)
when the ``with`` block ends. Users ``admin`` (Admin) and ``viewer`` (Viewer) have random
passwords written to the simple auth manager's passwords file.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.servers import LOOPBACK, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
DAG_ID = "casemis_import"


@dataclass
class AirflowStack:
    """The running Airflow: where it listens, its users and its folders."""

    home: Path
    port: int
    passwords: dict[str, str]
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The API server's base URL (UI, REST API and the plugin page)."""
        return f"http://{LOOPBACK}:{self.port}"

    def token(self, user: str = "admin") -> str:
        """A JWT for ``user`` from the simple auth manager."""
        response = httpx.post(
            f"{self.url}/auth/token",
            json={"username": user, "password": self.passwords[user]},
            timeout=30,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def api(self, user: str = "admin") -> httpx.Client:
        """A REST API client authenticated as ``user``."""
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token(user)}"}, timeout=30
        )

    def logs(self, lines: int = 60) -> str:
        """The tail of every component's log (for failure messages)."""
        out = []
        for name in self.procs:
            path = self.home / f"{name}.log"
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            out.append(f"----- {name} -----\n" + "\n".join(text))
        return "\n".join(out)


def _env(home: Path, port: int, passwords_file: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "CASEMIS_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{LOOPBACK}:{port}/execution/",
            "AIRFLOW__API__HOST": LOOPBACK,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": f"http://{LOOPBACK}:{port}",
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "CASEMIS_HOME": str(ROOT),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    env.update(extra)
    return env


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """Stop each component's whole process group: SIGTERM, then SIGKILL after a grace period."""
    for proc in procs.values():
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in procs.values():
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    for proc in procs.values():
        with suppress(ProcessLookupError):  # the group may still hold task workers
            os.killpg(proc.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _wait_for(check: Any, timeout: float, what: str, stack: AirflowStack) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for name, proc in stack.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"airflow {name} exited with {proc.returncode}\n{stack.logs()}")
        try:
            last = check()
            if last:
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s (last: {last!r})\n{stack.logs()}")


@contextmanager
def airflow_stack(env_extra: dict[str, str] | None = None) -> Iterator[AirflowStack]:
    """Start Airflow (see the module docstring); yield it once the DAG is parsed; stop it."""
    home = Path(tempfile.mkdtemp(prefix="casemis-e2e-airflow-"))
    port = free_port()
    passwords = {"admin": secrets.token_urlsafe(12), "viewer": secrets.token_urlsafe(12)}
    passwords_file = home / "passwords.json"
    passwords_file.write_text(json.dumps(passwords))
    env = _env(home, port, passwords_file, env_extra or {})
    stack = AirflowStack(home=home, port=port, passwords=passwords, env=env)
    airflow = str(VENV_BIN / "airflow")
    try:
        migrate = subprocess.run(
            [airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=240, check=False
        )
        assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
        commands = {
            "api-server": [airflow, "api-server", "--port", str(port), "--host", LOOPBACK],
            "scheduler": [airflow, "scheduler"],
            "dag-processor": [airflow, "dag-processor"],
        }
        for name, command in commands.items():
            log = open(home / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            stack.procs[name] = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=home
            )
            log.close()
        wait_for_port(LOOPBACK, port, 120, stack.procs["api-server"])
        _wait_for(
            lambda: httpx.get(f"{stack.url}/api/v2/monitor/health", timeout=5).status_code == 200,
            120,
            "API server",
            stack,
        )
        with stack.api() as client:
            _wait_for(lambda: client.get(f"/api/v2/dags/{DAG_ID}").status_code == 200, 120, "the DAG", stack)
        yield stack
    finally:
        _stop(stack.procs)
        keep = os.environ.get("CASEMIS_E2E_KEEP_HOME")
        if keep:
            shutil.copytree(home, keep, dirs_exist_ok=True)
        shutil.rmtree(home, ignore_errors=True)


def wait_until(check: Any, timeout: float, what: str, stack: AirflowStack) -> Any:
    """Poll ``check`` until it returns something truthy (failing fast if a component died)."""
    return _wait_for(check, timeout, what, stack)
