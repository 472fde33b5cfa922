"""jobs/report/plots.py after weeks of nights: bars at their dates (a missed night is a gap), no forest of ticks
and numbers past a few dozen bars, a bounded sample of dots under the threshold line."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np

from jobs.query.sql import connect
from jobs.report import plots
from jobs.report.data import load
from jobs.report.queries import DOTS_PER_DAY
from report_fixtures import video_row, write_scan


def _centres(ax) -> list[float]:
    return [p.get_x() + p.get_width() / 2 for p in ax.patches]


def test_days_stand_at_their_dates_so_a_missed_night_is_a_gap():
    days = [{"day": date(2026, 1, d), "fakes": 1, "reals": 9, "fake_rate": 0.1} for d in (1, 2, 5)]
    ax = plots.fake_rate_plot(days).axes[0]
    assert np.diff(_centres(ax)).round(6).tolist() == [1.0, 3.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2026-01-01", "2026-01-02", "2026-01-05"]


def test_weeks_of_runs_get_dated_ticks_and_only_failures_are_annotated():
    start = datetime(2026, 1, 1, 2, tzinfo=timezone.utc)
    runs = [{"scan_id": f"s{i}", "started_at": start + timedelta(days=i), "scanned": 100, "exit_code": 0,
             "status": "succeeded"} for i in range(45)]
    runs[20].update(status="too_many_errors", exit_code=3)
    fig = plots.runs_plot(runs)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["100 scanned\ntoo_many_errors (3)"]
    assert 3 <= len(ax.get_xticks()) <= 11
    assert np.diff(_centres(ax)).round(6).tolist() == [1.0] * 44
    few = plots.runs_plot(runs[:5]).axes[0]
    assert len(few.texts) == 5 and len(few.get_xticks()) == 5  # a handful: each run named and numbered


def test_score_dots_are_a_fixed_bounded_sample_under_the_threshold(tmp_path):
    """300 objects a night: every one counts in the box, at most DOTS_PER_DAY are drawn, the same ones each time."""
    at, scan = datetime(2026, 1, 1, 2, tzinfo=timezone.utc), "20260101T020000Z-aaaaaa"
    rng = np.random.default_rng(0)
    write_scan(tmp_path / "out", scan, at, [video_row(scan, f"/u/{k}.mp4", "REAL", float(rng.beta(2, 5)), at)
                                            for k in range(300)])
    first = load(connect(str(tmp_path / "out")), str(tmp_path / "out")).score_days
    (day,) = first
    assert day["n"] == 300 and len(day["dots"]) == DOTS_PER_DAY
    assert load(connect(str(tmp_path / "out")), str(tmp_path / "out")).score_days == first
    ax = plots.score_days_plot(first, [0.5]).axes[0]
    (dots,) = ax.collections
    assert len(dots.get_offsets()) == DOTS_PER_DAY
    (threshold,) = [line for line in ax.get_lines() if line.get_label().startswith("threshold")]
    assert threshold.get_zorder() > dots.get_zorder()


def test_the_drift_sides_and_a_suspects_people_differ_by_more_than_colour():
    """Grey against red (or blue) alone is lost in greyscale and to a colour-blind reader: the sides differ in line
    style and hatching, the people in marker and line style, each named in the legend."""
    from jobs.report.drift import Drift, Sample

    drift = Drift(status="drift", psi=1.0, reference=Sample(scores=[0.1, 0.2, 0.3]), latest=Sample(scores=[0.8, 0.9]))
    ax = plots.drift_plot(drift, [0.5]).axes[0]
    trailing, latest = ax.patches
    assert trailing.get_hatch() and not latest.get_hatch()
    assert trailing.get_linestyle() != latest.get_linestyle()
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["trailing scans (3 objects)",
                                                                      "latest scan (2 objects)"]
    timeline = [(0, 0.0, 0.2), (0, 1.0, 0.3), (1, 0.0, 0.6), (1, 1.0, 0.7)]
    people = [line for line in plots.timeline_plot(timeline, [0.5]).axes[0].get_lines()
              if line.get_label().startswith("person")]
    assert len(people) == 2 and people[0].get_marker() != people[1].get_marker()
    assert people[0].get_linestyle() != people[1].get_linestyle()
