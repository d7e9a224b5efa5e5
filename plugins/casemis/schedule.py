"""Days of the week + time of day + time zone -> the DAG's timetable.

Mon/Wed/Fri 18:30 America/Los_Angeles becomes ``CronTriggerTimetable("30 18 * * 1,3,5",
timezone="America/Los_Angeles")``, which stays at 18:30 local time across daylight-saving
changes. A disabled schedule yields no timetable (no scheduled runs; manual runs still
work, which pausing the DAG would block).

How a saved change reaches Airflow: the DAG file calls :func:`dag_schedule_args` when the
dag-processor parses it (every ``[dag_processor] min_file_process_interval``, 30 s by
default, and at once when the configuration page asks for a re-parse). That reads the
``casemis_config`` Variable through the Task SDK, so the page, the Variables screen, the
REST API and the CLI all change the schedule the same way, without restarting anything.

No run for a past slot: the timetable has ``run_immediately=timedelta(0)`` and the DAG's
``start_date`` is the settings' ``schedule_since`` (stamped whenever the schedule is
switched on or changed). Airflow never schedules a slot before the start date, so
switching the schedule on at 19:00 does not start the 18:30 run that was missed.
"""

from __future__ import annotations

import datetime as dt
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from casemis.settings import WEEKDAYS, ImportSettings, load_settings

if TYPE_CHECKING:
    from airflow.sdk import CronTriggerTimetable
    from airflow.timetables.trigger import CronTriggerTimetable as CoreCronTriggerTimetable

log = logging.getLogger(__name__)

_CRON_DAY = {day: str(i) for i, day in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}


def cron_expression(days: list[str], time: str) -> str:
    """``["mon","wed","fri"], "18:30"`` -> ``"30 18 * * 1,3,5"`` (every day: ``"30 18 * * *"``)."""
    if not days:
        raise ValueError("choose at least one day of the week")
    hour, minute = (int(p) for p in time.split(":"))
    ordered = [d for d in WEEKDAYS if d in days]
    day_field = "*" if len(ordered) == 7 else ",".join(sorted((_CRON_DAY[d] for d in ordered), key=int))
    return f"{minute} {hour} * * {day_field}"


def is_scheduled(settings: ImportSettings) -> bool:
    """Whether the settings ask for scheduled runs at all."""
    return settings.enabled and bool(settings.days)


def build_timetable(settings: ImportSettings) -> CronTriggerTimetable | None:
    """The DAG's timetable for ``settings`` (None when the schedule is disabled or has no day)."""
    if not is_scheduled(settings):
        return None
    from airflow.sdk import CronTriggerTimetable

    return CronTriggerTimetable(
        cron_expression(list(settings.days), settings.time),
        timezone=settings.timezone,
        run_immediately=timedelta(0),
    )


def core_timetable(settings: ImportSettings) -> CoreCronTriggerTimetable | None:
    """The scheduler's own timetable object for ``settings`` (it computes run times)."""
    if not settings.days:
        return None
    from airflow.timetables.trigger import CronTriggerTimetable as Core

    return Core(
        cron_expression(list(settings.days), settings.time),
        timezone=settings.timezone,
        run_immediately=timedelta(0),
    )


def describe(settings: ImportSettings) -> str:
    """``At 18:30, only on Monday, Wednesday, and Friday (America/Los_Angeles)``.

    Describes the chosen days and time whether or not the schedule is enabled; the text is
    the one Airflow shows for the DAG's timetable, plus the time zone.
    """
    timetable = core_timetable(settings)
    if timetable is None:
        return "No day of the week is chosen"
    return f"{timetable.description} ({settings.timezone})"


def next_run_times(settings: ImportSettings, after: dt.datetime, count: int = 1) -> list[dt.datetime]:
    """The next ``count`` scheduled run times (UTC) at or after ``after`` (and ``schedule_since``).

    Empty when the schedule is disabled. Computed by Airflow's own timetable, so the page
    shows exactly what the scheduler will do, daylight-saving changes included.
    """
    timetable = core_timetable(settings) if is_scheduled(settings) else None
    if timetable is None or count < 1:
        return []
    import pendulum
    from airflow.timetables.base import TimeRestriction

    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    earliest = max(after, settings.schedule_since) if settings.schedule_since else after
    restriction = TimeRestriction(earliest=pendulum.instance(earliest), latest=None, catchup=True)
    out: list[dt.datetime] = []
    last = None
    while len(out) < count:
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        if info is None or info.logical_date is None:
            break
        out.append(dt.datetime.fromtimestamp(info.run_after.timestamp(), tz=dt.UTC))
        last = info.data_interval
    return out


def dag_schedule_args(settings: ImportSettings | None = None) -> dict[str, Any]:
    """``schedule`` and ``start_date`` for ``@dag(...)``.

    Reads the saved settings (the Variable, when parsed by the dag-processor) unless given.
    Invalid settings mean no schedule (the error is logged; the tasks and the page report
    it), so a bad hand edit cannot start imports. "Disabled" is expressed by the missing
    schedule, never by pausing the DAG (a paused DAG holds manual runs too).
    """
    if settings is None:
        try:
            settings = load_settings()
        except ValueError as exc:
            log.error("CASEMIS schedule not applied: %s", exc)
            return {"schedule": None, "start_date": None}
    timetable = build_timetable(settings)
    start = settings.schedule_since if timetable is not None else None
    return {"schedule": timetable, "start_date": start}


def timetable_from_env() -> CronTriggerTimetable | None:
    """The timetable from settings readable without Airflow's metadata (defaults + environment)."""
    return build_timetable(load_settings(use_variable=False))
