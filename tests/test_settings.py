"""The configuration model: validation messages, precedence, and how the page's edits are merged."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from casemis.settings import (
    ImportSettings,
    SettingsError,
    env_overridden_fields,
    load_settings,
    merge_update,
    parse_stored,
    validate_settings,
)

NOW = dt.datetime(2027, 3, 10, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without CASEMIS_* overrides (the session may set some)."""
    import os

    for name in list(os.environ):
        if name.startswith("CASEMIS_") and name not in ("CASEMIS_HOME", "CASEMIS_INCLUDE_DIR"):
            monkeypatch.delenv(name)


def errors_of(data: dict) -> dict[str, str]:
    with pytest.raises(SettingsError) as info:
        validate_settings(data)
    return info.value.errors


def test_defaults_are_safe():
    s = ImportSettings()
    assert s.enabled is False  # nothing runs on a schedule until someone switches it on
    assert s.timezone == "America/Los_Angeles"
    assert s.days == ["mon", "tue", "wed", "thu", "fri"] and s.time == "04:00"
    assert s.upload_max_mb == 50 and s.schedule_since is None


def test_values_are_normalised():
    s = validate_settings(
        {
            "days": "Friday, mon WED fri",
            "time": "7:05",
            "recipients": "a@x.org; B@x.org , a@X.org",
            "timezone": " Europe/Berlin ",
            "table_a_name": " tableA.csv ",
            "smb_path": r"\\files\sped\casemis",
            "sftp_port": "7472",
        }
    )
    assert s.days == ["mon", "wed", "fri"]
    assert s.time == "07:05"
    assert s.recipients == ["a@x.org", "B@x.org"]
    assert s.timezone == "Europe/Berlin" and s.table_a_name == "tableA.csv" and s.sftp_port == 7472
    assert validate_settings({"time": "18:30:00"}).time == "18:30"  # what a browser may send


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"time": "24:00"}, "time", "is not a time of day as HH:MM"),
        ({"time": "6pm"}, "time", "is not a time of day"),
        ({"timezone": "Pacific Time"}, "timezone", "is not a known time zone"),
        ({"days": ["mon", "funday"]}, "days", "is not a day of the week"),
        ({"recipients": "office@district.org, not-an-email"}, "recipients", "'not-an-email' is not an email"),
        ({"table_a_name": "../etc/passwd"}, "table_a_name", "must be a plain file name"),
        ({"table_b_name": r"sub\tableB.csv"}, "table_b_name", "must be a plain file name"),
        ({"smb_path": "fileserver/share"}, "smb_path", "is not a UNC path"),
        ({"smb_path": r"\\server"}, "smb_path", "needs at least a server and a share"),
        ({"sftp_port": 70000}, "sftp_port", "less than or equal to 65535"),
        ({"target_conn_id": "bad id; drop"}, "target_conn_id", "is not a connection id"),
        ({"location_type": "ftp"}, "location_type", "'local', 'smb' or 'sftp'"),
        ({"on_error": "ignore"}, "on_error", "'skip_rows' or 'abort'"),
        ({"upload_max_mb": 0}, "upload_max_mb", "greater than or equal to 1"),
        ({"enabled": True, "days": []}, "days", "choose at least one day of the week"),
        ({"location_type": "local", "local_path": "  "}, "local_path", "a local folder is needed"),
        ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_each_problem_is_named_by_field_in_plain_words(data: dict, field: str, words: str):
    errors = errors_of(data)
    assert field in errors, errors
    assert words in errors[field]


def test_disabled_schedule_may_have_no_days():
    assert validate_settings({"enabled": False, "days": []}).days == []


def test_load_settings_precedence(monkeypatch: pytest.MonkeyPatch):
    stored = {"time": "05:00", "local_path": "/data/vendor", "on_error": "abort"}
    assert load_settings(stored=stored).time == "05:00"
    monkeypatch.setenv("CASEMIS_CONFIG", json.dumps({"time": "06:00", "days": ["sat"]}))
    monkeypatch.setenv("CASEMIS_TIME", "07:00")
    s = load_settings(stored=stored)
    assert s.time == "07:00"  # single-field variable beats CASEMIS_CONFIG beats the Variable
    assert s.days == ["sat"] and s.local_path == "/data/vendor" and s.on_error == "abort"
    assert env_overridden_fields() == {"time": "CASEMIS_TIME", "days": "CASEMIS_CONFIG"}


def test_load_settings_reports_bad_json(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CASEMIS_CONFIG", "{not json")
    with pytest.raises(ValueError, match="CASEMIS_CONFIG is not valid JSON"):
        load_settings(stored={})
    with pytest.raises(SettingsError, match="must hold a JSON object"):
        parse_stored("[1, 2]")
    assert parse_stored(None) == {} and parse_stored('{"time": "01:00"}') == {"time": "01:00"}


def test_load_settings_outside_airflow_uses_defaults():
    # No task or dag-processor context here: the Variable cannot be read, the defaults apply.
    assert load_settings() == ImportSettings()


def test_enabling_stamps_schedule_since():
    new = merge_update({"time": "18:30", "days": ["mon"]}, {"enabled": True}, now=NOW)
    assert new["enabled"] is True
    assert dt.datetime.fromisoformat(new["schedule_since"]) == NOW


def test_schedule_changes_restamp_other_changes_do_not():
    enabled = merge_update({}, {"enabled": True}, now=NOW)
    later = NOW + dt.timedelta(days=2)
    same = merge_update(enabled, {"recipients": "office@district.org"}, now=later)
    assert same["schedule_since"] == enabled["schedule_since"]  # not a schedule change
    moved = merge_update(enabled, {"time": "06:15"}, now=later)
    assert dt.datetime.fromisoformat(moved["schedule_since"]) == later
    other_zone = merge_update(enabled, {"timezone": "America/Denver"}, now=later)
    assert dt.datetime.fromisoformat(other_zone["schedule_since"]) == later


def test_disabling_keeps_values_and_does_not_stamp():
    off = merge_update({"time": "18:30"}, {"enabled": False, "days": ["fri"]}, now=NOW)
    assert off == {"time": "18:30", "enabled": False, "days": ["fri"]}  # only what was set


def test_merge_update_refuses_invalid_and_names_fields():
    with pytest.raises(SettingsError) as info:
        merge_update({}, {"recipients": "x", "time": "25:00"}, now=NOW)
    assert set(info.value.errors) == {"recipients", "time"}
    with pytest.raises(SettingsError) as info:
        merge_update({"days": []}, {"enabled": True}, now=NOW)
    assert "choose at least one day" in info.value.errors["days"]


def test_merge_update_checks_environment_overrides_fit(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CASEMIS_DAYS", "")  # the deployment empties the days...
    with pytest.raises(SettingsError, match="choose at least one day"):
        merge_update({"days": ["mon"]}, {"enabled": True}, now=NOW)  # ...so enabling cannot work


def test_merged_value_round_trips_as_json():
    new = merge_update({}, {"enabled": True, "sftp_port": "2222", "recipients": "a@b.org"}, now=NOW)
    again = validate_settings(json.loads(json.dumps(new)))
    assert again.sftp_port == 2222 and again.recipients == ["a@b.org"]
    assert again.schedule_since == NOW
