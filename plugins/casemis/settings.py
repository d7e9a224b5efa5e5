"""The import's configuration: one pydantic model, one source of truth.

Precedence (later wins): the model's defaults, the Airflow Variable ``casemis_config``
(JSON; read only when running inside Airflow), the ``CASEMIS_CONFIG`` environment variable
(JSON, for tests and deployments), then single-field environment overrides
``CASEMIS_<FIELD>`` (e.g. ``CASEMIS_LOCAL_PATH``). Credentials never live here: only the ids
of the Airflow connections that hold them.

The *CASEMIS Import* page (``casemis.web``) edits the Variable through :func:`merge_update`,
which validates the result and stamps ``schedule_since`` whenever the schedule changes, so
switching the schedule on never starts a run for a time slot that is already past.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

log = logging.getLogger(__name__)

VARIABLE_KEY = "casemis_config"
ENV_JSON = "CASEMIS_CONFIG"
ENV_PREFIX = "CASEMIS_"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Changing any of these changes when scheduled runs happen (see merge_update).
SCHEDULE_FIELDS = ("enabled", "days", "time", "timezone")
_ADDRESS = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
_CONN_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")


class SettingsError(ValueError):
    """Invalid settings; ``errors`` maps each field name (or ``""``) to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        problems = "; ".join(f"{field}: {msg}" if field else msg for field, msg in errors.items())
        super().__init__(f"invalid CASEMIS import settings: {problems}")


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
    upload_max_mb: int = Field(
        50, ge=1, le=2048, description="largest file the page accepts for a one-time import (MB)"
    )
    schedule_since: dt.datetime | None = Field(
        None,
        description="when the schedule was last switched on or changed (UTC); slots before it never run",
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
            unknown = [v for v in value if v not in WEEKDAYS]
            if unknown:
                raise ValueError(f"{', '.join(map(repr, unknown))} is not a day of the week (mon..sun)")
            value = [d for d in WEEKDAYS if d in value]  # canonical order, no repeats
        return value

    @field_validator("time")
    @classmethod
    def _check_time(cls, value: str) -> str:
        m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)(:00)?", value.strip())
        if not m:
            raise ValueError(f"{value!r} is not a time of day as HH:MM (00:00-23:59)")
        return f"{int(m.group(1)):02d}:{m.group(2)}"

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        value = value.strip()
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

    @field_validator("smb_conn_id", "sftp_conn_id", "target_conn_id", "smtp_conn_id")
    @classmethod
    def _check_conn_id(cls, value: str) -> str:
        value = value.strip()
        if not _CONN_ID.fullmatch(value):
            raise ValueError(f"{value!r} is not a connection id (letters, digits, '_', '.', '-')")
        return value

    @field_validator("smb_path")
    @classmethod
    def _check_unc(cls, value: str) -> str:
        from casemis.sources import SourceConfigError, parse_unc

        value = value.strip()
        if value:
            try:
                parse_unc(value)
            except SourceConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("local_path", "sftp_host", "sftp_directory")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("schedule_since")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)  # stored values are UTC
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ImportSettings:
        if self.location_type == "local" and not self.local_path:
            raise ValueError("local_path: a local folder is needed when the files are in a local folder")
        if self.enabled and not self.days:
            raise ValueError("days: choose at least one day of the week to enable the schedule")
        return self


def _from_variable() -> dict[str, Any]:
    """The Airflow Variable's JSON, when running inside Airflow; {} otherwise.

    Inside a task and in the dag-processor the Task SDK reads it (environment variable
    ``AIRFLOW_VAR_CASEMIS_CONFIG`` first, then the secrets backends and the metadata DB);
    elsewhere (``python dag.py``, a DagBag in pytest) the lookup finds nothing and the
    defaults apply.
    """
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
        raise SettingsError(
            {"": f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"}
        ) from None
    if not isinstance(data, dict):
        raise SettingsError({"": f"{where} must hold a JSON object"})
    return data


def parse_stored(raw: str | dict[str, Any] | None) -> dict[str, Any]:
    """The Variable's value as a dict ({} when unset); raises SettingsError when it is not JSON."""
    if raw is None or raw == "":
        return {}
    return _parse_json(raw, f"Airflow Variable {VARIABLE_KEY}")


def _env_overrides() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ImportSettings.model_fields:
        value = os.environ.get(ENV_PREFIX + name.upper())
        if value is not None:
            out[name] = value
    return out


def env_overridden_fields() -> dict[str, str]:
    """Fields the environment sets (they win over the Variable): field -> environment variable."""
    out: dict[str, str] = {}
    if os.environ.get(ENV_JSON):
        try:
            for name in _parse_json(os.environ[ENV_JSON], f"environment variable {ENV_JSON}"):
                out[name] = ENV_JSON
        except SettingsError:
            pass  # load_settings reports it
    for name in _env_overrides():
        out[name] = ENV_PREFIX + name.upper()
    return out


def _errors(exc: ValidationError) -> dict[str, str]:
    """Pydantic's errors as field -> message, in plain words."""
    out: dict[str, str] = {}
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        msg = str(err["msg"]).removeprefix("Value error, ")
        field = loc[0] if loc else ""
        if not field and ": " in msg and msg.split(": ", 1)[0] in ImportSettings.model_fields:
            field, msg = msg.split(": ", 1)  # a model-level check names its field
        if field and len(loc) > 1 and loc[1].isdigit():
            msg = f"item {int(loc[1]) + 1}: {msg}"
        out.setdefault(field, msg)
    return out


def validate_settings(data: Mapping[str, Any]) -> ImportSettings:
    """Validate ``data`` as settings; raises SettingsError naming each wrong field."""
    try:
        return ImportSettings.model_validate(dict(data))
    except ValidationError as exc:
        raise SettingsError(_errors(exc)) from None


def load_settings(*, use_variable: bool = True, stored: dict[str, Any] | None = None) -> ImportSettings:
    """Build the effective settings (see the module docstring for precedence).

    ``stored`` replaces the Variable lookup (the configuration page passes what it read).
    Raises ``SettingsError`` (a ``ValueError``) with every problem listed when the result
    is invalid.
    """
    data: dict[str, Any] = {}
    if stored is not None:
        data.update(stored)
    elif use_variable:
        data.update(_from_variable())
    if os.environ.get(ENV_JSON):
        data.update(_parse_json(os.environ[ENV_JSON], f"environment variable {ENV_JSON}"))
    data.update(_env_overrides())
    return validate_settings(data)


def merge_update(
    stored: Mapping[str, Any], changes: Mapping[str, Any], *, now: dt.datetime | None = None
) -> dict[str, Any]:
    """The Variable's new value: ``stored`` with ``changes`` applied, validated and normalised.

    When the result is enabled and the schedule differs from before (switched on, other
    days, time or zone), ``schedule_since`` is set to ``now`` so no run is made for a slot
    before the change. Both the stored value alone and the effective settings (with the
    environment's overrides) must be valid; SettingsError says what is not.
    """
    merged = {**stored, **changes}
    new = validate_settings(merged)
    old = _lenient(stored)
    changed = any(getattr(new, f) != getattr(old, f) for f in SCHEDULE_FIELDS)
    if new.enabled and (changed or new.schedule_since is None):
        merged["schedule_since"] = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat()
        new = validate_settings(merged)
    load_settings(stored=merged)  # the environment's overrides must fit too
    return new.model_dump(mode="json", exclude_unset=True)


def _lenient(stored: Mapping[str, Any]) -> ImportSettings:
    """The stored settings, or the defaults when they are missing or invalid."""
    try:
        return validate_settings(stored)
    except SettingsError:
        return ImportSettings()
