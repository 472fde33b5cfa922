"""The report's SQL over the views of ``jobs/query/sql.py``, and how a failure while reading it is told: the
text report (``text.py``), the HTML report (``data.py``) and the notebook use these, so a prefix, a label count
or the fake rate means the same in all three."""

from __future__ import annotations

from typing import Callable, TypeVar

from jobs.query.sql import QueryError, connect
from pipeline.errors import one_line
from jobs.scan.schema import PARTITION

T = TypeVar("T")


def prefix_expr(depth: int | None = None) -> str:
    """SQL for an object's prefix: its parent folder, or its first ``depth`` path levels."""
    if depth is None:
        return "regexp_replace(uri, '[^/]*$', '')"
    return f"regexp_extract(uri, '^((?:[A-Za-z0-9+.-]+://)?/?(?:[^/]+/){{0,{int(depth)}}})', 1)"


LABEL_COUNTS = """count(*) AS objects, count(*) FILTER (label = 'FAKE') AS fakes, count(*) FILTER (label = 'REAL') AS reals,
       count(*) FILTER (label = 'NO_FACE') AS no_face, count(*) FILTER (label = 'ERROR') AS errors"""

# FAKE among the objects that got a score (FAKE + REAL); null when none did
FAKE_RATE = "count(*) FILTER (label = 'FAKE') / nullif(count(*) FILTER (label IN ('FAKE', 'REAL')), 0) AS fake_rate"

TOTALS = f"SELECT {LABEL_COUNTS}, {FAKE_RATE} FROM videos"


# each object's last verdict of each scan day (a --retry-errors rerun the same day must not count it twice);
# "last" as the videos view has it: by scan_id, the driver's clock
DAILY = f"""(SELECT * FROM videos_history QUALIFY row_number() OVER (
    PARTITION BY uri, {PARTITION} ORDER BY scan_id DESC, scanned_at DESC) = 1)"""


def prefixes(depth: int | None = None, per_day: bool = False) -> str:
    """Label counts and fake rate per prefix: of the current verdicts (``videos``), or ``per_day`` of each scan
    day's verdicts (``DAILY``, as ``DAYS``)."""
    if per_day:
        return f"""SELECT {prefix_expr(depth)} AS prefix, {PARTITION} AS day, {LABEL_COUNTS}, {FAKE_RATE}
            FROM {DAILY} GROUP BY ALL ORDER BY prefix, day"""
    return f"""SELECT {prefix_expr(depth)} AS prefix, {LABEL_COUNTS}, {FAKE_RATE}
        FROM videos GROUP BY ALL ORDER BY prefix"""


PREFIXES = prefixes()  # per folder: the notebook's table

# "fake rate per day" of a nightly scan: what each scan day's scans found, so an object FAKE on day 1 and REAL
# after a rescan on day 2 counts on both days (once a day); the text report and the page alike
DAYS = f"""SELECT {PARTITION} AS day, {LABEL_COUNTS}, {FAKE_RATE} FROM {DAILY} GROUP BY ALL ORDER BY day"""

# ERROR verdicts by stable code, not by message (messages carry URIs and sizes: 500 access-denied objects would
# be 500 rows of 1); rows written before error_code existed count as 'error'
ERRORS = """SELECT coalesce(error_code, 'error') AS error_code, count(*) AS objects, min(error) AS example
    FROM videos WHERE label = 'ERROR' GROUP BY ALL ORDER BY objects DESC, error_code LIMIT 10"""


def suspects(top: int) -> str:
    """The ``top`` highest current scores."""
    return f"""SELECT uri, score, label, faces, tracks, model_version, {PARTITION} AS day FROM videos
        WHERE score IS NOT NULL ORDER BY score DESC, uri LIMIT {int(top)}"""


def dicts(con, sql: str, params: list | None = None) -> list[dict]:
    """Rows as dicts keyed by column name."""
    result = con.execute(sql, params or [])
    names = [d[0] for d in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def read_report(output: str, storage_options: dict | None, read: Callable[..., T]) -> T:
    """``read(con)`` over the output's views; any failure (a part that breaks mid-read, a storage error) is one
    ``QueryError`` line, as when the output cannot be opened at all."""
    con = connect(output, storage_options)
    try:
        return read(con)
    except Exception as exc:  # noqa: BLE001 - duckdb, pyarrow, fsspec: all mean "cannot read"
        raise QueryError(f"cannot report on {output}: {one_line(exc)}") from None
