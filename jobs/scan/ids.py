"""Scan ids: ``<UTC start to the second>-<6 hex>``, in the order scans took an output, whatever their clocks say.

"Latest" (the skip rule, the ``videos`` view, the report) is the highest ``scan_id``. One scan whose clock ran a
day or a year ahead would stay latest until real time caught up: the next nights' rows would never win. So a scan,
once it holds DEST's lease, takes an id a second after every id already there (``after``), if its own is not.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterable

FORMAT = "%Y%m%dT%H%M%SZ"
_TIME = re.compile(r"(\d{8}T\d{6}Z)-")


def new_scan_id(at: datetime) -> str:
    return f"{at.strftime(FORMAT)}-{uuid.uuid4().hex[:6]}"


def id_time(scan_id: str) -> datetime | None:
    """The time an id starts with; None for an id of another shape (nothing to order by)."""
    match = _TIME.match(scan_id)
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def part_scan_id(name: str) -> str:
    """The scan id in a part's name, ``part-<scan_id>-<seq>.parquet``."""
    return name.removeprefix("part-").removesuffix(".parquet").rsplit("-", 1)[0]


def after(scan_id: str, known: Iterable[str]) -> tuple[str, str | None]:
    """(``scan_id``, None) when it comes after every id in ``known``; else (an id of the same suffix dated a second
    after the latest of them, that latest id)."""
    own = id_time(scan_id)
    dated = [(t, k) for k in known if (t := id_time(k)) is not None]
    if own is None or not dated:
        return scan_id, None
    last_at, last = max(dated)
    if last_at < own:
        return scan_id, None
    return f"{(last_at + timedelta(seconds=1)).strftime(FORMAT)}-{scan_id.rsplit('-', 1)[1]}", last


__all__ = ["new_scan_id", "id_time", "part_scan_id", "after"]
