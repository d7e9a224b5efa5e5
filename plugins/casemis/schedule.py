"""Days of the week + time of day + time zone -> the DAG's timetable.

Mon/Wed/Fri 18:30 America/Los_Angeles becomes ``CronTriggerTimetable("30 18 * * 1,3,5",
timezone="America/Los_Angeles")``, which stays at 18:30 local time across daylight-saving
changes. A disabled schedule yields no timetable (no scheduled runs; manual runs still
work, which pausing the DAG would block). The timetable has no start date and
``run_immediately=timedelta(0)``, so enabling it never fires a run for a slot in the past.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from casemis.settings import WEEKDAYS, ImportSettings, load_settings

if TYPE_CHECKING:
    from airflow.sdk import CronTriggerTimetable

_CRON_DAY = {day: str(i) for i, day in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}


def cron_expression(days: list[str], time: str) -> str:
    """``["mon","wed","fri"], "18:30"`` -> ``"30 18 * * 1,3,5"``."""
    if not days:
        raise ValueError("choose at least one day of the week")
    hour, minute = (int(p) for p in time.split(":"))
    ordered = [d for d in WEEKDAYS if d in days]
    day_field = ",".join(sorted((_CRON_DAY[d] for d in ordered), key=int))
    return f"{minute} {hour} * * {day_field}"


def build_timetable(settings: ImportSettings) -> CronTriggerTimetable | None:
    """The timetable for ``settings`` (None when the schedule is disabled or has no day)."""
    if not settings.enabled or not settings.days:
        return None
    from airflow.sdk import CronTriggerTimetable

    return CronTriggerTimetable(
        cron_expression(list(settings.days), settings.time),
        timezone=settings.timezone,
        run_immediately=timedelta(0),
    )


def timetable_from_env() -> CronTriggerTimetable | None:
    """The timetable from settings readable at DAG-parse time without a database call."""
    return build_timetable(load_settings(use_variable=False))
