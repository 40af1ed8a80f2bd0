"""
Volume quotas: L{Quota} (so many bytes per calendar period), L{parseQuota}
for C{--quota-per-user} and the rules file's C{quota}, L{parseSize}, and
the periods (L{periodOf}): hours, days, ISO weeks (Monday to Sunday) and
months, aligned on the calendar in UTC.

Nothing here does I/O: the bytes are counted by L{socksd.shared.quota}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

__all__ = ["Quota", "PERIODS", "parseQuota", "parseSize", "periodOf"]

#: The periods a quota may have.
PERIODS = ("hour", "day", "week", "month")

_SIZE_SUFFIXES = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}


@dataclass(frozen=True, slots=True)
class Quota:
    """
    A volume quota: at most C{size} bytes (both directions together) per
    calendar C{period}, counted per user (or per client address, for a
    rule's quota on requests without a user).

    @ivar size: bytes per period.
    @ivar period: C{"hour"}, C{"day"}, C{"week"} or C{"month"}.
    @ivar key: what the quota is counted under besides the user: C{"user"}
        for C{--quota-per-user}, C{"rule:NAME"} for a rule's quota.
    """

    size: int
    period: str
    key: str = "user"

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"a quota is a positive number of bytes, not {self.size!r}")
        if self.period not in PERIODS:
            raise ValueError(
                f"unknown quota period {self.period!r} (choose from {', '.join(PERIODS)})"
            )

    def __str__(self) -> str:
        return f"{self.size}/{self.period}"


def parseSize(text: str) -> int:
    """
    Parse a volume: C{"300000"}, C{"300k"}, C{"10G"}, C{"1.5T"} (decimal
    suffixes k, M, G, T) or C{"512Mi"}, C{"2GiB"} (binary ones); a trailing
    C{B} is allowed.

    @raise ValueError: not a positive size.
    """
    value = text.strip().lower().removesuffix("b")
    suffix = ""
    for candidate in ("ki", "mi", "gi", "ti", "k", "m", "g", "t"):
        if value.endswith(candidate):
            suffix = candidate
            break
    number = value[: len(value) - len(suffix)].strip()
    try:
        size = float(number) * _SIZE_SUFFIXES[suffix]
    except ValueError:
        raise ValueError(f"{text!r} is not a size (e.g. 300k, 10G, 512Mi)") from None
    if not (math.isfinite(size) and size >= 1):
        raise ValueError(f"{text!r} must be at least one byte")
    return int(size)


def parseQuota(text: str, key: str = "user") -> Quota:
    """
    Parse C{SIZE/PERIOD}: C{"10G/month"}, C{"300k/day"}, C{"1Gi/week"},
    C{"50M/hour"}.

    @raise ValueError: naming what is wrong.
    """
    if not isinstance(text, str):
        raise ValueError(f"a quota is text such as '10G/month', not {text!r}")
    size, slash, period = text.partition("/")
    if not slash:
        raise ValueError(
            f"{text!r} is not SIZE/PERIOD (e.g. 10G/month; periods: {', '.join(PERIODS)})"
        )
    period = period.strip().lower()
    if period not in PERIODS:
        raise ValueError(
            f"{text!r}: unknown period {period!r} (choose from {', '.join(PERIODS)})"
        )
    return Quota(parseSize(size), period, key)


def periodOf(period: str, now: float) -> tuple[str, float, float]:
    """
    The calendar period (UTC) that the POSIX time C{now} falls in.

    @return: C{(name, start, end)}: a name for the period (C{2025-06},
        C{2025-W24}, C{2025-06-09}, C{2025-06-09T14}), and its first and
        last-plus-one second as POSIX times.
    """
    moment = datetime.fromtimestamp(now, timezone.utc)
    if period == "hour":
        start = moment.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
        name = start.strftime("%Y-%m-%dT%H")
    elif period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
        name = start.strftime("%Y-%m-%d")
    elif period == "week":
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
        year, week, _ = start.isocalendar()
        name = f"{year}-W{week:02d}"
    elif period == "month":
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
        name = start.strftime("%Y-%m")
    else:
        raise ValueError(f"unknown quota period {period!r}")
    return name, start.timestamp(), end.timestamp()
