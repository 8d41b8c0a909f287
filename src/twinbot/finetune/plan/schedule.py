"""When the runs finish: `--start` parsed into a local time, durations and clock times as the plan prints
them, and each preset's finish time and time saved against baseline."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from datetime import datetime, timedelta

from twinbot.errors import TwinbotError
from twinbot.finetune.plan.records import PresetPlan

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_NAMES = {
    **{name: i for i, name in enumerate(_WEEKDAYS)},
    **{name: i for i, name in enumerate(_FULL_DAYS)},
    "tues": 1,
    "thur": 3,
    "thurs": 3,
}
_START_HELP = "expected now, HH:MM, 'fri 18:00', 'tomorrow 07:30' or an ISO date-time like 2026-11-27T18:00"


def parse_start(text: str, now: datetime | None = None) -> datetime:
    """`--start`: "now", "HH:MM" (today), "today/tomorrow HH:MM", "fri 18:00" (the next Friday at 18:00,
    today if that is still ahead) or an ISO date-time. Local time, naive."""
    now = (now or datetime.now()).replace(second=0, microsecond=0)
    cleaned = " ".join(text.strip().lower().split())
    if cleaned in ("", "now"):
        return now
    with contextlib.suppress(ValueError):
        moment = datetime.fromisoformat(text.strip())
        return moment.astimezone().replace(tzinfo=None) if moment.tzinfo else moment
    match = re.fullmatch(r"(?:([a-z]+)\s*)?(?:(\d{1,2})(?::(\d{2}))?)?", cleaned)
    if not match or not (match.group(1) or match.group(2)):
        raise TwinbotError(f"--start {text!r}: {_START_HELP}")
    day, hour, minute = match.group(1), match.group(2), match.group(3)
    if hour is not None and minute is None and day is None:
        raise TwinbotError(f"--start {text!r}: {_START_HELP}")
    hours, minutes = int(hour or 0), int(minute or 0)
    if hours > 23 or minutes > 59:
        raise TwinbotError(f"--start {text!r}: no such time of day; {_START_HELP}")
    at = now.replace(hour=hours, minute=minutes)
    if day is None or day == "today":
        return at
    if day == "tomorrow":
        return at + timedelta(days=1)
    weekday = _DAY_NAMES.get(day)
    if weekday is None:
        raise TwinbotError(f"--start {text!r}: unknown day {day!r}; {_START_HELP}")
    ahead = (weekday - now.weekday()) % 7
    moment = at + timedelta(days=ahead)
    return moment + timedelta(days=7) if moment < now else moment


def format_clock(moment: datetime, since: datetime | None = None) -> str:
    """`fri 18:00`; with the date once it is six days or more after `since` (or now)."""
    reference = since or datetime.now()
    clock = f"{_WEEKDAYS[moment.weekday()]} {moment:%H:%M}"
    return (
        clock
        if moment - reference < timedelta(days=6)
        else f"{_WEEKDAYS[moment.weekday()]} {moment:%Y-%m-%d %H:%M}"
    )


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def fill_times(plans: Sequence[PresetPlan], start: datetime) -> None:
    """Time saved against baseline, and each preset's finish time from `start`."""
    baseline = next((p for p in plans if p.preset == "baseline" and p.shown is not None), None)
    for plan in plans:
        shown = plan.shown
        if shown is None:
            continue
        plan.done = start + timedelta(seconds=shown.total_seconds)
        if baseline is not None and baseline.shown is not None:
            plan.time_saved = 1 - shown.total_seconds / baseline.shown.total_seconds


def schedule_line(preset: PresetPlan, start: datetime, width: int = 0) -> str:
    """`optimized: fri 18:00 -> sat 03:12`, or why there is no finish time."""
    name = f"{preset.preset}:".ljust(width)
    if preset.done is None:
        return (
            f"{name} {'out of memory' if preset.status == 'out_of_memory' else f'failed ({preset.detail})'}"
        )
    return f"{name} {format_clock(start, start)} -> {format_clock(preset.done, start)}"
