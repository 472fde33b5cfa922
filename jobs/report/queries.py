"""The report's SQL over the views of ``jobs/query/sql.py``, and how a failure while reading it is told: the
text report (``text.py``), the HTML report (``data.py``) and the notebook use these, so a prefix, a label count
or the fake rate means the same in all three."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Callable, TypeVar

from jobs.query.sql import connect, skip_unreadable
from pipeline.errors import one_line
from jobs.scan.schema import DELETED, PARTITION

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


# What the tables and plots hold, whatever the output's size and age: beyond these, `deepfakestream query` reads it all
TOP_PREFIXES = 20   # prefix tables: the prefixes with the most FAKE verdicts (then the most objects)
WINDOW_DAYS = 30    # per-day tables and plots, the page's runs: the last 30 days up to the latest run
DOTS_PER_DAY = 200  # the score plot's dots: a fixed sample of each day's objects (by a hash of the key)


def window_start(con, span: int = WINDOW_DAYS) -> date | None:
    """The first day of the report's window: ``span`` days up to the latest run's start, which is its scan day (the
    latest scan day where there are no run records; None: nothing ran)."""
    (last,) = con.execute("SELECT max(started_at)::DATE FROM runs").fetchone()
    if last is None:  # older outputs without run records: every part must be opened to find it
        (last,) = con.execute(f"SELECT max({PARTITION}) FROM videos_history").fetchone()
    return last - timedelta(days=span - 1) if last else None


def _since(since: date | None) -> str:
    return f"{PARTITION} >= DATE '{since.isoformat()}'" if since else "true"


def daily(since: date | None = None) -> str:
    """Each object's last verdict of each scan day from ``since`` on (a --retry-errors rerun the same day must not count
    it twice); "last" as the videos view has it: by scan_id, the driver's clock. A tombstone (``DELETED``: gone from
    the source) is no verdict: an object scanned, then found gone the same day, counts with its verdict. The day filter
    prunes partitions."""
    return f"""(SELECT * FROM videos_history WHERE {_since(since)} AND label <> '{DELETED}' QUALIFY row_number() OVER (
    PARTITION BY uri, {PARTITION} ORDER BY scan_id DESC, scanned_at DESC) = 1)"""


def prefixes(depth: int | None = None, per_day: bool = False, top: int = TOP_PREFIXES, since: date | None = None) -> str:
    """Label counts and fake rate of the ``top`` prefixes with the most FAKE verdicts, then objects: of the current
    verdicts (``videos``), or ``per_day`` of each scan day's verdicts from ``since`` on (``daily``, as ``days``), a row
    per prefix and day. Every row's ``_prefixes`` counts all the prefixes (``top_prefixes`` takes it off)."""
    if not per_day:
        return f"""SELECT {prefix_expr(depth)} AS prefix, {LABEL_COUNTS}, {FAKE_RATE}, count(*) OVER () AS _prefixes
            FROM videos GROUP BY prefix ORDER BY fakes DESC, objects DESC, prefix LIMIT {int(top)}"""
    return f"""WITH cells AS MATERIALIZED (
            SELECT {prefix_expr(depth)} AS prefix, {PARTITION} AS day, {LABEL_COUNTS}, {FAKE_RATE}
            FROM {daily(since)} GROUP BY prefix, day),
        ranked AS (
            SELECT prefix, sum(fakes) AS _fakes, sum(objects) AS _objects, count(*) OVER () AS _prefixes FROM cells
            GROUP BY prefix ORDER BY _fakes DESC, _objects DESC, prefix LIMIT {int(top)})
        SELECT cells.*, _prefixes FROM cells JOIN ranked USING (prefix) ORDER BY _fakes DESC, _objects DESC, prefix, day"""


PREFIXES = prefixes()  # per folder: the notebook's table


def top_prefixes(con, depth: int | None = None, per_day: bool = False, top: int = TOP_PREFIXES,
                 since: date | None = None) -> tuple[list[dict], int]:
    """The rows of ``prefixes`` and how many prefixes they leave out."""
    rows = dicts(con, prefixes(depth, per_day, top, since))
    total = rows[0]["_prefixes"] if rows else 0
    for row in rows:
        del row["_prefixes"]
    return rows, total - len({row["prefix"] for row in rows})


def days(since: date | None = None) -> str:
    """"Fake rate per day" of a nightly scan: what each scan day's scans found, so an object FAKE on day 1 and REAL
    after a rescan on day 2 counts on both days (once a day); the text report and the page alike."""
    return f"SELECT {PARTITION} AS day, {LABEL_COUNTS}, {FAKE_RATE} FROM {daily(since)} GROUP BY ALL ORDER BY day"


def score_days(since: date | None = None, dots: int = DOTS_PER_DAY) -> str:
    """Per scan day: how many objects got a score, the quartiles and Tukey whiskers (1.5 IQR, as matplotlib's boxplot)
    of their scores, and ``dots`` of them (a fixed sample: by a hash of the key), so the plot is drawn from a few
    numbers per day, not from every score ever written."""
    return f"""WITH s AS MATERIALIZED (
            SELECT {PARTITION} AS day, score, row_number() OVER (PARTITION BY {PARTITION} ORDER BY hash(uri), uri) AS k
            FROM {daily(since)} WHERE score IS NOT NULL AND NOT isnan(score)),
        q AS (SELECT day, count(*) AS n, quantile_cont(score, 0.25) AS q1, median(score) AS med,
                     quantile_cont(score, 0.75) AS q3 FROM s GROUP BY day)
        SELECT day, n, q1, med, q3, min(score) FILTER (score >= q1 - 1.5 * (q3 - q1)) AS whislo,
               max(score) FILTER (score <= q3 + 1.5 * (q3 - q1)) AS whishi,
               list(score ORDER BY score) FILTER (k <= {int(dots)}) AS dots
        FROM s JOIN q USING (day) GROUP BY ALL ORDER BY day"""


# ERROR verdicts by stable code, not by message (messages carry URIs and sizes: 500 access-denied objects would
# be 500 rows of 1); rows written before error_code existed count as 'error'
ERRORS = """SELECT coalesce(error_code, 'error') AS error_code, count(*) AS objects, min(error) AS example
    FROM videos WHERE label = 'ERROR' GROUP BY ALL ORDER BY objects DESC, error_code LIMIT 10"""


def suspects(top: int) -> str:
    """The ``top`` highest current scores (with the scan and day of each row: where its faces are); a NaN score is
    no score (DuckDB sorts NaN above every number: it would top the list)."""
    return f"""SELECT uri, score, label, faces, tracks, model_version, scan_id, {PARTITION} AS day FROM videos
        WHERE score IS NOT NULL AND NOT isnan(score) ORDER BY score DESC, uri LIMIT {int(top)}"""


def dicts(con, sql: str, params: list | None = None) -> list[dict]:
    """Rows as dicts keyed by column name."""
    result = con.execute(sql, params or [])
    names = [d[0] for d in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def read_report(output: str, storage_options: dict | None, read: Callable[..., T], con=None) -> T:
    """``read(con)`` over the output's views (``con``: one already open, so ``report --html`` lists the output and
    builds its views once for the text and the page). Parts whose data cannot be decoded are left out of the views,
    with a warning naming each, and ``read`` runs once more (``skip_unreadable``); any other failure (a storage
    error) is one ``QueryError`` line, as when the output cannot be opened at all."""
    con = con or connect(output, storage_options)
    skipped: dict[str, str] = {}
    while True:
        try:
            return read(con)
        except Exception as exc:  # noqa: BLE001 - duckdb, pyarrow, fsspec: all mean "cannot read"
            skip_unreadable(con, output, storage_options, exc, f"cannot report on {output}: {one_line(exc)}", skipped)
