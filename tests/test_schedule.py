"""Days + time + time zone -> Airflow timetable, computed by Airflow's own timetable classes.

Includes the daylight-saving weeks of 2027 (US: 14 March and 7 November) and the rules that
keep the scheduled process from running a slot that passed before it was switched on.
"""

from __future__ import annotations

import datetime as dt
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pendulum
import pytest

from casemis.schedule import (
    build_timetable,
    core_timetable,
    cron_expression,
    dag_schedule_args,
    describe,
    next_run_times,
)
from casemis.settings import ImportSettings, validate_settings

ROOT = Path(__file__).resolve().parents[1]
LA = ZoneInfo("America/Los_Angeles")
MWF_1830 = {
    "enabled": True,
    "days": ["mon", "wed", "fri"],
    "time": "18:30",
    "timezone": "America/Los_Angeles",
}


@pytest.mark.parametrize(
    ("days", "time", "cron"),
    [
        (["mon", "wed", "fri"], "18:30", "30 18 * * 1,3,5"),
        (["sun", "sat"], "04:00", "0 4 * * 0,6"),
        (["fri", "mon"], "00:05", "5 0 * * 1,5"),
        (["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "23:59", "59 23 * * *"),
    ],
)
def test_cron_expression(days: list[str], time: str, cron: str):
    assert cron_expression(days, time) == cron


def test_cron_expression_needs_a_day():
    with pytest.raises(ValueError, match="at least one day"):
        cron_expression([], "18:30")


def test_enabled_settings_give_a_cron_trigger_timetable():
    timetable = build_timetable(validate_settings(MWF_1830))
    assert timetable is not None
    assert type(timetable).__name__ == "CronTriggerTimetable"
    assert timetable.expression == "30 18 * * 1,3,5"
    assert str(timetable.timezone) == "America/Los_Angeles"
    assert timetable.run_immediately == timedelta(0)  # never "catch up" on a slot already past


def test_disabled_settings_give_no_schedule():
    settings = validate_settings({**MWF_1830, "enabled": False})
    assert build_timetable(settings) is None
    assert next_run_times(settings, dt.datetime(2027, 3, 8, tzinfo=dt.UTC), 3) == []
    assert dag_schedule_args(settings) == {"schedule": None, "start_date": None}
    # The description still says what the days and time are (the page shows it next to "Disabled").
    assert describe(settings) == "At 18:30, only on Monday, Wednesday, and Friday (America/Los_Angeles)"


def test_describe_names_the_zone():
    settings = validate_settings({"days": ["mon", "tue", "wed", "thu", "fri"], "time": "04:00"})
    assert describe(settings) == (
        "At 04:00, only on Monday, Tuesday, Wednesday, Thursday, and Friday (America/Los_Angeles)"
    )
    assert describe(validate_settings({"days": []})) == "No day of the week is chosen"


def test_spring_forward_week_stays_at_1830_local():
    """US daylight saving time starts Sunday 2027-03-14: 18:30 local moves from 02:30 to 01:30 UTC."""
    settings = validate_settings(MWF_1830)
    runs = next_run_times(settings, dt.datetime(2027, 3, 8, 0, 0, tzinfo=dt.UTC), 6)
    local = [r.astimezone(LA) for r in runs]
    assert [f"{t:%a %Y-%m-%d %H:%M}" for t in local] == [
        "Mon 2027-03-08 18:30",
        "Wed 2027-03-10 18:30",
        "Fri 2027-03-12 18:30",
        "Mon 2027-03-15 18:30",
        "Wed 2027-03-17 18:30",
        "Fri 2027-03-19 18:30",
    ]
    assert [t.utcoffset() for t in local] == [timedelta(hours=-8)] * 3 + [timedelta(hours=-7)] * 3
    assert [f"{r:%m-%d %H:%M}" for r in runs] == [
        "03-09 02:30",
        "03-11 02:30",
        "03-13 02:30",
        "03-16 01:30",
        "03-18 01:30",
        "03-20 01:30",
    ]


def test_fall_back_week_stays_at_1830_local():
    """US daylight saving time ends Sunday 2027-11-07."""
    settings = validate_settings(MWF_1830)
    runs = next_run_times(settings, dt.datetime(2027, 11, 4, tzinfo=dt.UTC), 3)
    assert [f"{r.astimezone(LA):%a %d %H:%M %Z}" for r in runs] == [
        "Wed 03 18:30 PDT",
        "Fri 05 18:30 PDT",
        "Mon 08 18:30 PST",
    ]
    assert [f"{r:%d %H:%M}" for r in runs] == ["04 01:30", "06 01:30", "09 02:30"]


def test_next_runs_start_at_schedule_since():
    since = dt.datetime(2027, 3, 10, 20, 0, tzinfo=dt.UTC)  # Wed 12:00 in Los Angeles
    settings = validate_settings({**MWF_1830, "schedule_since": since.isoformat()})
    first = next_run_times(settings, dt.datetime(2027, 3, 1, tzinfo=dt.UTC), 1)[0]
    assert f"{first.astimezone(LA):%a %d %H:%M}" == "Wed 10 18:30"


def test_dag_schedule_args_carry_the_start_date():
    since = dt.datetime(2027, 3, 10, 20, 0, tzinfo=dt.UTC)
    args = dag_schedule_args(validate_settings({**MWF_1830, "schedule_since": since.isoformat()}))
    assert args["schedule"].expression == "30 18 * * 1,3,5"
    assert args["start_date"] == since


def test_invalid_saved_settings_mean_no_schedule(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CASEMIS_CONFIG", '{"enabled": true, "time": "25:00"}')
    assert dag_schedule_args() == {"schedule": None, "start_date": None}


def _slot_two_hours_ago() -> tuple[ImportSettings, dt.datetime]:
    """Every day at the time it was two hours ago in Los Angeles: a slot that has just passed."""
    now = dt.datetime.now(dt.UTC)
    past = (now - timedelta(hours=2)).astimezone(LA).replace(second=0, microsecond=0)
    settings = validate_settings(
        {**MWF_1830, "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "time": f"{past:%H:%M}"}
    )
    return settings, now


def _scheduler_next(settings: ImportSettings, start_date: dt.datetime | None, last_run: dt.datetime | None):
    """What the scheduler computes for the DAG (catchup=False), with Airflow's own timetable."""
    from airflow.timetables.base import DataInterval, TimeRestriction

    timetable = core_timetable(settings)
    assert timetable is not None
    last = DataInterval(pendulum.instance(last_run), pendulum.instance(last_run)) if last_run else None
    earliest = pendulum.instance(start_date) if start_date else None
    info = timetable.next_dagrun_info(
        last_automated_data_interval=last,
        restriction=TimeRestriction(earliest=earliest, latest=None, catchup=False),
    )
    return dt.datetime.fromtimestamp(info.run_after.timestamp(), tz=dt.UTC)


def test_switching_on_never_runs_a_slot_that_already_passed():
    settings, now = _slot_two_hours_ago()
    # First time on (no runs yet): run_immediately=timedelta(0) waits for the next slot.
    assert _scheduler_next(settings, None, None) > now
    # Switched on again after a week off: the start date (schedule_since) keeps the missed
    # slot from two hours ago from running at once ...
    week_ago = now - timedelta(days=7)
    assert _scheduler_next(settings, now, week_ago) > now
    # ... which Airflow would otherwise do (the reason schedule_since exists).
    assert _scheduler_next(settings, None, week_ago) < now


def test_dag_file_takes_its_schedule_from_the_settings(monkeypatch: pytest.MonkeyPatch):
    """The real DAG file, parsed by Airflow's DagBag with the settings in CASEMIS_CONFIG."""
    import json

    from airflow.dag_processing.dagbag import DagBag

    since = "2027-03-10T20:00:00+00:00"
    monkeypatch.setenv("CASEMIS_CONFIG", json.dumps({**MWF_1830, "schedule_since": since}))
    bag = DagBag(dag_folder=str(ROOT / "dags" / "casemis_import.py"))
    assert bag.import_errors == {}
    dag = bag.dags["casemis_import"]
    assert dag.timetable.expression == "30 18 * * 1,3,5"
    assert dag.start_date == dt.datetime.fromisoformat(since)
    assert dag.is_paused_upon_creation is False and dag.catchup is False

    monkeypatch.setenv("CASEMIS_CONFIG", json.dumps({**MWF_1830, "enabled": False}))
    bag = DagBag(dag_folder=str(ROOT / "dags" / "casemis_import.py"))
    dag = bag.dags["casemis_import"]
    assert dag.timetable is None or type(dag.timetable).__name__ == "NullTimetable"
    assert dag.start_date is None and dag.is_paused_upon_creation is False


def test_a_stale_scheduled_run_does_nothing_while_disabled(tmp_path: Path):
    """The backstop: a scheduled run that still fires after disabling is skipped at its first task."""
    from casemis.tasks import SkipRun, begin_run

    disabled = validate_settings({**MWF_1830, "enabled": False, "staging_dir": str(tmp_path)})
    with pytest.raises(SkipRun, match="disabled"):
        begin_run("scheduled__2027-03-15T01:30:00+00:00", "scheduled", {}, disabled)
    manual = begin_run("manual__2027-03-15T09:00:00+00:00", "manual", {}, disabled)
    assert manual.trigger == "manual"  # manual imports work while the schedule is off
    enabled = validate_settings({**MWF_1830, "staging_dir": str(tmp_path)})
    assert begin_run("scheduled__2027-03-15T01:30:00+00:00", "scheduled", {}, enabled).trigger == "scheduled"
