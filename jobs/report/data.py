"""What the HTML report and the notebook show, read from a scan output with DuckDB (``jobs.query.connect``).

Per day means per ``scan_date`` over ``videos_history`` (every scan's own rows), so the pictures show how
nights differ; the suspects and prefixes come from the ``videos`` view (each object's current verdict).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobs.report.drift import Drift, scan_drift
from pipeline.thumbs import THUMB_COLUMN

PREFIX = "regexp_replace(uri, '[^/]*$', '')"  # an object's folder


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
    totals: dict[str, int]


def _dicts(con, sql: str, params: list | None = None) -> list[dict]:
    result = con.execute(sql, params or [])
    names = [d[0] for d in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def has_column(con, view: str, column: str) -> bool:
    return column in {row[0] for row in con.execute(f"DESCRIBE {view}").fetchall()}


def load(con, output: str, top: int = 8, thumbs_per_object: int = 4, trailing: int = 7) -> ReportData:
    """Everything the report draws, from a ``jobs.query.connect`` connection."""
    runs = _dicts(con, """
        SELECT scan_id, status, exit_code, started_at, ended_at, elapsed_s, scanned, skipped, fakes, reals, no_face,
               failed, error_rate, model_version, message
        FROM runs ORDER BY started_at, scan_id""")
    days = _dicts(con, """
        SELECT scan_date AS day, count(*) AS objects, count(*) FILTER (label = 'FAKE') AS fakes,
               count(*) FILTER (label = 'REAL') AS reals, count(*) FILTER (label = 'NO_FACE') AS no_face,
               count(*) FILTER (label = 'ERROR') AS errors
        FROM videos_history GROUP BY ALL ORDER BY day""")
    prefixes = _dicts(con, f"""
        SELECT {PREFIX} AS prefix, count(*) AS objects, count(*) FILTER (label = 'FAKE') AS fakes,
               count(*) FILTER (label = 'REAL') AS reals, count(*) FILTER (label IN ('NO_FACE', 'ERROR')) AS unscored
        FROM videos GROUP BY ALL ORDER BY prefix""")
    for row in days + prefixes:
        scored = row["fakes"] + row["reals"]
        row["fake_rate"] = row["fakes"] / scored if scored else None
    day_scores: dict[Any, list[float]] = {}
    for day, score in con.execute(
            "SELECT scan_date, score FROM videos_history WHERE score IS NOT NULL ORDER BY scan_date, score").fetchall():
        day_scores.setdefault(day, []).append(float(score))
    thresholds = [t for (t,) in con.execute(
        "SELECT DISTINCT threshold FROM videos_history WHERE threshold IS NOT NULL ORDER BY 1").fetchall()]
    models = [m for (m,) in con.execute("SELECT DISTINCT model_version FROM videos_history ORDER BY 1").fetchall()]
    totals = con.execute("""
        SELECT count(*), count(*) FILTER (label = 'FAKE'), count(*) FILTER (label = 'REAL'),
               count(*) FILTER (label = 'NO_FACE'), count(*) FILTER (label = 'ERROR') FROM videos""").fetchone()
    # a column of nulls (scan --thumbnails 0 on a schema-3 output) has no pictures either: the page says so
    has_thumbs = has_column(con, "faces", THUMB_COLUMN) and con.execute(
        f"SELECT EXISTS (SELECT 1 FROM faces WHERE {THUMB_COLUMN} IS NOT NULL)").fetchone()[0]
    suspects = [Suspect(**row) for row in _dicts(con, f"""
        SELECT uri, score, label, scan_date AS day, faces, tracks, model_version FROM videos
        WHERE score IS NOT NULL ORDER BY score DESC, uri LIMIT {int(top)}""")]
    for s in suspects:
        s.timeline = [(int(t or 0), float(ts or 0.0), float(sc)) for t, ts, sc in con.execute(
            "SELECT track, timestamp, score FROM faces WHERE uri = ? ORDER BY track, frame", [s.uri]).fetchall()]
        if has_thumbs:
            s.thumbs = [(float(sc), bytes(j)) for sc, j in con.execute(f"""
                SELECT score, {THUMB_COLUMN} FROM faces WHERE uri = ? AND {THUMB_COLUMN} IS NOT NULL
                ORDER BY score DESC, face LIMIT {int(thumbs_per_object)}""", [s.uri]).fetchall()]
    return ReportData(output=output, runs=runs, days=days, prefixes=prefixes, day_scores=day_scores,
                      thresholds=thresholds, model_versions=models, suspects=suspects, has_thumbs=has_thumbs,
                      drift=scan_drift(con, trailing=trailing),
                      totals=dict(zip(("objects", "fakes", "reals", "no_face", "errors"), totals)))
