"""How the ``buckethead`` command shows sizes, times and tables to a person.

JSON output carries the raw values (bytes, ISO 8601 times) instead; these
helpers exist only so that every subcommand words them the same way.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from django.template.defaultfilters import filesizeformat
from django.utils.timesince import timesince, timeuntil

_NBSP = "\xa0"


def size(nbytes: int) -> str:
    """``12.1 KB``: Django's wording, with plain spaces so it lines up in a terminal."""
    return str(filesizeformat(nbytes)).replace(_NBSP, " ")


def utc(moment: dt.datetime | float) -> dt.datetime:
    """An aware UTC datetime from a datetime or a Unix time (the lease stores Unix times)."""
    if isinstance(moment, dt.datetime):
        return moment.astimezone(dt.UTC) if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(moment, tz=dt.UTC)


def when(moment: dt.datetime | float, now: dt.datetime | None = None) -> str:
    """``2024-05-01 12:00:03 UTC (3 minutes ago)``: an exact time, and how far it is from now."""
    moment = utc(moment)
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC ({relative(moment, now)})"


def relative(moment: dt.datetime | float, now: dt.datetime | None = None) -> str:
    """``3 minutes ago``, ``in 4 minutes``, ``just now``; seconds below a minute, where Django says ``0 minutes``."""
    moment = utc(moment)
    now = now or dt.datetime.now(dt.UTC)
    seconds = (now - moment).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    if abs(seconds) < 60:
        n = round(abs(seconds))
        amount = f"{n} second{'' if n == 1 else 's'}"
    elif seconds > 0:
        amount = timesince(moment, now, depth=1)
    else:
        amount = timeuntil(moment, now, depth=1)
    amount = amount.replace(_NBSP, " ")
    return f"{amount} ago" if seconds >= 0 else f"in {amount}"


def duration(seconds: float) -> str:
    """``90 seconds``, ``2 hours``, ``1 day, 12 hours``: a length of time, for settings given in seconds."""
    if seconds < 60:
        n = round(seconds)
        return f"{n} second{'' if n == 1 else 's'}"
    now = dt.datetime.now(dt.UTC)
    return timesince(now - dt.timedelta(seconds=seconds), now, depth=2).replace(_NBSP, " ")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns under ``headers``; the last column is not padded."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=False)).rstrip()
        for line in (headers, *rows)
    ]


_AGE = re.compile(r"^-(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str, *, now: float) -> float:
    """Unix time from an ISO 8601 time (UTC unless it names a zone) or an age like ``-10m``; ValueError if neither."""
    text = text.strip()
    if match := _AGE.match(text):
        return now - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give an ISO 8601 time such as 2026-11-30T14:05:00Z, or an age such as "
            "-90s, -10m, -2h or -1d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()
