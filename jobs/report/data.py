"""What the HTML report and the notebook show, read from a scan output with DuckDB (``jobs.query.connect``).

Per day means per ``scan_date``: each object's last verdict of that day (``queries.DAILY``, ``DAYS``, as in the
text report), so the pictures show how nights differ; the suspects, prefixes and errors come from the ``videos`` view
(each object's current verdict).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobs.report.drift import Drift, scan_drift
from jobs.report.queries import DAILY, DAYS, ERRORS, TOTALS, dicts, prefixes, suspects
from pipeline.thumbs import THUMB_COLUMN


@dataclass
class Suspect:
    uri: str
    score: float
    label: str
    day: Any
    faces: int
    tracks: int
    model_version: str
    timeline: list[tuple[int, float, float]] = field(default_factory=list)  # (track, seconds, face score)
    thumbs: list[tuple[float, bytes]] = field(default_factory=list)        # (face score, JPEG), best first


@dataclass
class ReportData:
    output: str
    runs: list[dict]
    days: list[dict]
    prefixes: list[dict]
    day_scores: dict[Any, list[float]]
    thresholds: list[float]
    model_versions: list[str]
    suspects: list[Suspect]
    has_thumbs: bool
    drift: Drift
    totals: dict[str, Any]  # LABEL_COUNTS and fake_rate of the current verdicts
    errors: list[dict] = field(default_factory=list)  # ERROR verdicts per error_code, with an example message


def load(con, output: str, top: int = 8, thumbs_per_object: int = 4, trailing: int = 7,
         depth: int | None = None) -> ReportData:
    """Everything the report draws, from a ``jobs.query.connect`` connection; ``depth`` groups prefixes by the
    first N path levels instead of the parent folder (``report --depth``)."""
    runs = dicts(con, """
        SELECT scan_id, status, exit_code, started_at, ended_at, elapsed_s, scanned, skipped, fakes, reals, no_face,
               failed, error_rate, model_version, message
        FROM runs ORDER BY started_at, scan_id""")
    days = dicts(con, DAYS)
    day_scores: dict[Any, list[float]] = {}
    for day, score in con.execute(
            f"SELECT scan_date, score FROM {DAILY} WHERE score IS NOT NULL ORDER BY scan_date, score").fetchall():
        day_scores.setdefault(day, []).append(float(score))
    thresholds = [t for (t,) in con.execute(
        "SELECT DISTINCT threshold FROM videos_history WHERE threshold IS NOT NULL ORDER BY 1").fetchall()]
    models = [m for (m,) in con.execute("SELECT DISTINCT model_version FROM videos_history ORDER BY 1").fetchall()]
    (totals,) = dicts(con, TOTALS)
    # older outputs read the column as nulls (jobs/query/sql.py), as do scans with thumbnails off: the page says so
    has_thumbs = con.execute(f"SELECT EXISTS (SELECT 1 FROM faces WHERE {THUMB_COLUMN} IS NOT NULL)").fetchone()[0]
    top_suspects = [Suspect(**row) for row in dicts(con, suspects(top))]
    for s in top_suspects:
        s.timeline = [(int(t or 0), float(ts or 0.0), float(sc)) for t, ts, sc in con.execute(
            "SELECT track, timestamp, score FROM faces WHERE uri = ? ORDER BY track, frame", [s.uri]).fetchall()]
        if has_thumbs:
            s.thumbs = [(float(sc), bytes(j)) for sc, j in con.execute(f"""
                SELECT score, {THUMB_COLUMN} FROM faces WHERE uri = ? AND {THUMB_COLUMN} IS NOT NULL
                ORDER BY score DESC, face LIMIT {int(thumbs_per_object)}""", [s.uri]).fetchall()]
    return ReportData(output=output, runs=runs, days=days, prefixes=dicts(con, prefixes(depth)), day_scores=day_scores,
                      thresholds=thresholds, model_versions=models, suspects=top_suspects, has_thumbs=has_thumbs,
                      drift=scan_drift(con, trailing=trailing), totals=totals, errors=dicts(con, ERRORS))
