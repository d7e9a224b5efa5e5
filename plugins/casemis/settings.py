"""The import's configuration: one pydantic model, one source of truth.

Precedence (later wins): the model's defaults, the Airflow Variable ``casemis_config``
(JSON; read only when running inside Airflow), the ``CASEMIS_CONFIG`` environment variable
(JSON, for tests and deployments), then single-field environment overrides
``CASEMIS_<FIELD>`` (e.g. ``CASEMIS_LOCAL_PATH``). Credentials never live here: only the ids
of the Airflow connections that hold them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

log = logging.getLogger(__name__)

VARIABLE_KEY = "casemis_config"
ENV_JSON = "CASEMIS_CONFIG"
ENV_PREFIX = "CASEMIS_"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ADDRESS = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")


class ImportSettings(BaseModel):
    """Everything an administrator sets for the CASEMIS import."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    location_type: Literal["local", "smb", "sftp"] = Field(
        "local", description="where the vendor drops the files"
    )
    local_path: str = Field(
        "include/sample_data", description="folder (relative paths start at the project root)"
    )
    smb_path: str = Field("", description=r"UNC path of the share folder, e.g. \\server\share\casemis")
    smb_conn_id: str = Field(
        "casemis_smb", description="Airflow connection with the share's user and password"
    )
    sftp_host: str = Field("", description="SFTP server (blank: the connection's host)")
    sftp_port: int | None = Field(None, ge=1, le=65535, description="SFTP port (blank: the connection's)")
    sftp_directory: str = Field("", description="folder on the SFTP server (blank: the login folder)")
    sftp_conn_id: str = Field(
        "casemis_sftp", description="Airflow connection with the SFTP user, password, host key"
    )
    table_a_name: str = Field("tableA.csv", description="Student Data file name")
    table_b_name: str = Field("tableB.csv", description="Student Services Data file name")
    include_services: bool = Field(True, description="also import the Services file (tableB)")
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"], description="days of the week to run"
    )
    time: str = Field("04:00", description="time of day to run, HH:MM (24-hour)")
    timezone: str = Field("America/Los_Angeles", description="time zone of the schedule and the report")
    recipients: list[str] = Field(default_factory=list, description="report email addresses")
    enabled: bool = Field(False, description="run on the schedule (manual runs work either way)")
    on_error: Literal["skip_rows", "abort"] = Field("skip_rows", description="what to do when rows fail")
    not_refreshed: Literal["skip", "reimport"] = Field("skip", description="when the files are unchanged")
    target_conn_id: str = Field("casemis_target", description="Airflow connection of the Aeries database")
    smtp_conn_id: str = Field("smtp_default", description="Airflow connection of the mail server")
    staging_dir: str = Field("var/staging", description="shared folder for run files (all workers)")
    report_dir: str = Field("var/reports", description="folder for completion reports")
    manual_dir: str = Field("var/uploads", description="folder a manual run's file paths must be under")
    stable_seconds: int = Field(30, ge=0, le=3600, description="a file is complete when unchanged this long")
    wait_timeout_minutes: int = Field(
        120, ge=1, le=24 * 60, description="give up waiting for files after this"
    )

    @field_validator("recipients", mode="before")
    @classmethod
    def _split_recipients(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in re.split(r"[,;\s]+", value) if v]
        return value

    @field_validator("recipients")
    @classmethod
    def _check_recipients(cls, value: list[str]) -> list[str]:
        seen: list[str] = []
        for address in value:
            address = address.strip()
            if not _ADDRESS.fullmatch(address):
                raise ValueError(f"{address!r} is not an email address")
            if address.lower() not in (s.lower() for s in seen):
                seen.append(address)
        return seen

    @field_validator("days", mode="before")
    @classmethod
    def _split_days(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in re.split(r"[,\s]+", value) if v]
        if isinstance(value, list):
            value = [str(v).strip().lower()[:3] for v in value]
            value = [d for d in WEEKDAYS if d in value]  # canonical order, no repeats
        return value

    @field_validator("time")
    @classmethod
    def _check_time(cls, value: str) -> str:
        m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value.strip())
        if not m:
            raise ValueError(f"{value!r} is not a time of day as HH:MM (00:00-23:59)")
        return f"{int(m.group(1)):02d}:{m.group(2)}"

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a known time zone (e.g. America/Los_Angeles)") from None
        return value

    @field_validator("table_a_name", "table_b_name")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        value = value.strip()
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError(f"{value!r} must be a plain file name (no folders)")
        return value


def _from_variable() -> dict[str, Any]:
    """The Airflow Variable's JSON, when running inside Airflow; {} otherwise."""
    try:
        from airflow.sdk import Variable
    except ImportError:  # pragma: no cover - Airflow is always installed here
        return {}
    try:
        raw = Variable.get(VARIABLE_KEY, default=None)
    except Exception:  # noqa: BLE001 - outside a task there is no Variable backend; defaults apply
        log.debug("Variable %s not readable here; using defaults", VARIABLE_KEY)
        return {}
    return _parse_json(raw, f"Airflow Variable {VARIABLE_KEY}") if raw else {}


def _parse_json(raw: str | dict[str, Any], where: str) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{where} must hold a JSON object")
    return data


def _env_overrides() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ImportSettings.model_fields:
        value = os.environ.get(ENV_PREFIX + name.upper())
        if value is not None:
            out[name] = value
    return out


def load_settings(*, use_variable: bool = True, stored: dict[str, Any] | None = None) -> ImportSettings:
    """Build the effective settings (see the module docstring for precedence).

    ``stored`` replaces the Variable lookup (the configuration page passes what it read).
    Raises ``ValueError`` with every problem listed when the result is invalid.
    """
    data: dict[str, Any] = {}
    if stored is not None:
        data.update(stored)
    elif use_variable:
        data.update(_from_variable())
    if os.environ.get(ENV_JSON):
        data.update(_parse_json(os.environ[ENV_JSON], f"environment variable {ENV_JSON}"))
    data.update(_env_overrides())
    try:
        return ImportSettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid CASEMIS import settings: {problems}") from None
