"""What the HTML report and the notebook show, read from a scan output with DuckDB (``jobs.query.sql.connect``).

Per day means per ``scan_date``: each object's last verdict of that day (``queries.daily``, ``days``, as in the
text report), so the pictures show how nights differ; the suspects, prefixes and errors come from the ``videos`` view
(each object's current verdict). Runs and days cover the report's window (``queries.WINDOW_DAYS``), runs at most the
latest ``RUNS_SHOWN``, prefixes the ``queries.TOP_PREFIXES`` with the most fakes: the page's size follows neither the
objects, the months scanned nor how often a scan was started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from jobs.report.drift import Drift, scan_drift
from jobs.report.queries import ERRORS, TOTALS, days, dicts, score_days, suspects, top_prefixes, window_start
from jobs.scan.schema import PARTITION
from pipeline.logsafe import redact_uri
from pipeline.thumbs import THUMB_COLUMN

# the page's runs (table and plot): the latest of the window. Thousands of runs (a cron that finds the lease held
# every minute writes a `busy` record each time) made a 6 MB page and a plot of minutes; the runs card counts them all
RUNS_SHOWN = 200


@dataclass
class Suspect:
    uri: str
    score: float
    label: str
    day: Any
    faces: int
    tracks: int
    model_version: str
    scan_id: str
    timeline: list[tuple[int, float, float]] = field(default_factory=list)  # (track, seconds, face score)
    thumbs: list[tuple[float, bytes]] = field(default_factory=list)        # (face score, JPEG), best first


@dataclass
class ReportData:
    output: str  # as the page names it: no credentials (pipeline.logsafe.redact_uri), whatever was typed
    runs: list[dict]
    days: list[dict]
    prefixes: list[dict]
    score_days: list[dict]  # queries.score_days: per day n, quartiles, whiskers and a fixed sample of scores (dots)
    thresholds: list[float]
    model_versions: list[str]
    suspects: list[Suspect]
    has_thumbs: bool
    drift: Drift
    totals: dict[str, Any]  # LABEL_COUNTS and fake_rate of the current verdicts
    errors: list[dict] = field(default_factory=list)  # ERROR verdicts per error_code, with an example message
    since: date | None = None  # the window's first day (runs and per-day data)
    more_prefixes: int = 0     # prefixes left out of ``prefixes``
    more_runs: int = 0         # the window's earlier runs left out of ``runs``


def load(con, output: str, top: int = 8, thumbs_per_object: int = 4, trailing: int = 7,
         depth: int | None = None) -> ReportData:
    """Everything the report draws, from a ``jobs.query.sql.connect`` connection; ``depth`` groups prefixes by the
    first N path levels instead of the parent folder (``report --depth``)."""
    since = window_start(con)
    in_window = "FROM runs WHERE ? IS NULL OR started_at::DATE >= ?"
    runs = dicts(con, f"""
        SELECT scan_id, status, exit_code, started_at, ended_at, elapsed_s, scanned, skipped, deleted, fakes, reals,
               no_face, failed, error_rate, model_version, message
        {in_window} ORDER BY started_at DESC, scan_id DESC LIMIT {RUNS_SHOWN}""", [since, since])[::-1]
    (more_runs,) = con.execute(f"SELECT count(*) - {len(runs)} {in_window}", [since, since]).fetchone()
    thresholds = [t for (t,) in con.execute(
        "SELECT DISTINCT threshold FROM videos_history WHERE threshold IS NOT NULL ORDER BY 1").fetchall()]
    models = [m for (m,) in con.execute("SELECT DISTINCT model_version FROM videos_history ORDER BY 1").fetchall()]
    (totals,) = dicts(con, TOTALS)
    top_suspects = [Suspect(**row) for row in dicts(con, suspects(top))]
    _faces_of(con, top_suspects, thumbs_per_object)
    prefixes, more = top_prefixes(con, depth, since=None)  # current verdicts: whenever last scanned
    return ReportData(output=redact_uri(output), runs=runs, days=dicts(con, days(since)), prefixes=prefixes,
                      score_days=dicts(con, score_days(since)), thresholds=thresholds, model_versions=models,
                      suspects=top_suspects, has_thumbs=any(s.thumbs for s in top_suspects),
                      drift=scan_drift(con, trailing=trailing), totals=totals, errors=dicts(con, ERRORS), since=since,
                      more_prefixes=more, more_runs=more_runs)


def _faces_of(con, suspects: list[Suspect], thumbs_per_object: int) -> None:
    """Fill each suspect's timeline and best thumbnails in one read of ``faces_history``, filtered on the suspects'
    scan days, scans and keys: only their partitions are read (the ``faces`` view would join every row ever written)."""
    if not suspects:
        return
    by_key = {(s.scan_id, s.uri): s for s in suspects}
    marks = ", ".join("?" * len(suspects))
    rows = con.execute(f"""
        SELECT scan_id, uri, track, timestamp, score, face,
               CASE WHEN row_number() OVER (PARTITION BY scan_id, uri, {THUMB_COLUMN} IS NULL ORDER BY score DESC, face)
                         <= {int(thumbs_per_object)} THEN {THUMB_COLUMN} END AS thumb
        FROM faces_history
        WHERE {PARTITION} IN ({marks}) AND scan_id IN ({marks}) AND uri IN ({marks})
        ORDER BY scan_id, uri, track, frame""",
                       [s.day for s in suspects] + [s.scan_id for s in suspects] + [s.uri for s in suspects]).fetchall()
    for scan_id, uri, track, at, score, face, thumb in rows:
        s = by_key.get((scan_id, uri))  # the IN lists also match another suspect's scan: not this one's faces
        if s is None:
            continue
        s.timeline.append((int(track or 0), float(at or 0.0), float(score)))
        if thumb is not None:
            s.thumbs.append((float(score), face, bytes(thumb)))
    for s in suspects:  # best first, as the scan chose them
        s.thumbs = [(score, jpeg) for score, _face, jpeg in sorted(s.thumbs, key=lambda t: (-t[0], t[1]))]
