"""jobs/report/describe.py: each plot's words say what that plot shows for this output (names, counts, scores
against the threshold), so a screen reader hears the numbers, not "a plot"."""

from __future__ import annotations

from datetime import date, datetime, timezone

from jobs.report import describe
from jobs.report.drift import Drift, Sample

# two people over 2 s of video: person 0 crosses the 0.5 threshold twice, person 1 never
VIDEO = [(0, 0.0, 0.40), (0, 1.0, 0.70), (0, 2.0, 0.90), (1, 0.5, 0.20), (1, 1.5, 0.30)]


def test_a_suspects_timeline_is_described_by_its_own_faces():
    assert describe.timeline_alt("clip.mp4", VIDEO, [0.5]) == (
        "Face scores of clip.mp4 over 0.0 to 2.0 s of video: 2 people, 5 faces, scores 0.20 to 0.90, "
        "2 at or above the threshold 0.500.")
    assert describe.timeline_people(VIDEO, [0.5]) == [
        "person 0: 3 faces, scores 0.40 to 0.90, 2 at or above the threshold, 0.0 to 2.0 s",
        "person 1: 2 faces, scores 0.20 to 0.30, 0 at or above the threshold, 0.5 to 1.5 s"]
    assert describe.timeline_people([(0, 0.0, 0.5)], [0.5]) == [  # a score at the threshold is at or above it
        "person 0: 1 face, score 0.50, 1 at or above the threshold"]
    # an image: no time span; several thresholds: named, no count (which one judged a face is not known)
    assert describe.timeline_alt("a.jpg", [(0, 0.0, 0.8)], [0.5, 0.6]) == (
        "Face scores of a.jpg: 1 person, 1 face, score 0.80 (thresholds 0.500, 0.600).")


def test_a_crowd_is_listed_up_to_a_bound():
    crowd = [(t, 0.0, 0.1) for t in range(describe.PEOPLE_LISTED + 3)]
    lines = describe.timeline_people(crowd, [0.5])
    assert len(lines) == describe.PEOPLE_LISTED + 1 and lines[-1] == "and 3 more people"
    exactly = describe.timeline_people(crowd[:describe.PEOPLE_LISTED], [0.5])  # no "and 0 more people"
    assert len(exactly) == describe.PEOPLE_LISTED and exactly[-1].startswith(f"person {describe.PEOPLE_LISTED - 1}:")


def test_the_page_plots_are_described_by_their_data():
    at = datetime(2026, 1, 1, 2, tzinfo=timezone.utc)
    runs = [{"scan_id": "s1", "started_at": at, "scanned": 10, "status": "succeeded", "exit_code": 0},
            {"scan_id": "s2", "started_at": at.replace(day=2), "scanned": 0, "status": "too_many_errors",
             "exit_code": 3}]
    assert describe.runs_alt(runs) == (
        "Objects scanned per run: 2 runs, 2026-01-01 02:00 to 2026-01-02 02:00 UTC, 0 to 10 objects each; "
        "1 run did not succeed (s2 too_many_errors). The runs table lists each run.")
    days = [{"day": date(2026, 1, 1), "fakes": 1, "reals": 9, "fake_rate": 0.1},
            {"day": date(2026, 1, 2), "fakes": 3, "reals": 1, "fake_rate": 0.75}]
    assert describe.fake_rate_alt(days) == (
        "Fake rate per scan day, 2 days, 2026-01-01 to 2026-01-02: lowest 10.0% on 2026-01-01, highest 75.0% on "
        "2026-01-02; 2026-01-02: 75.0%, 3 fake of 4 scored.")
    unrated = [{**d, "fakes": 0, "reals": 0, "fake_rate": None} for d in days]  # nothing scored: no lowest, highest
    assert describe.fake_rate_alt(unrated) == (
        "Fake rate per scan day, 2 days, 2026-01-01 to 2026-01-02: 2026-01-02: —, 0 fake of 0 scored.")
    failed = [{"scan_id": f"s{i}", "started_at": at, "scanned": 1, "status": "failed", "exit_code": 1} for i in range(6)]
    assert "6 runs did not succeed (s0 failed, s1 failed, s2 failed, s3 failed, s4 failed, …)." in describe.runs_alt(failed)
    score_days = [{"day": date(2026, 1, 1), "n": 40, "q1": 0.1, "med": 0.2, "q3": 0.3}]
    assert describe.score_days_alt(score_days, [0.5]) == (
        "Object scores per scan day, 1 day, 2026-01-01, with the threshold 0.500: 2026-01-01: 40 objects, median "
        "0.20, middle half 0.10 to 0.30. Each day in numbers below the plot.")


def test_the_drift_histogram_is_described_side_by_side_and_bin_by_bin():
    drift = Drift(status="drift", psi=1.234, psi_threshold=0.25, flags=["score_shift"],
                  reference=Sample(scores=[0.05, 0.15, 0.15, 0.95]), latest=Sample(scores=[0.95, 0.95]))
    assert describe.drift_alt(drift) == (
        "Share of objects per score bin, 10 bins over 0 to 1: latest scan: 2 scored objects, mean score 0.950; "
        "trailing scans: 4 scored objects, mean score 0.325. PSI 1.23 (flag above 0.25): flagged as drift. "
        "Each bin in numbers below the plot.")
    bins = describe.drift_bins(drift)
    assert bins[0] == ("0.00 to 0.10", "25.0%", "0.0%") and bins[1] == ("0.10 to 0.20", "50.0%", "0.0%")
    assert bins[-1] == ("0.90 to 1.00", "25.0%", "100.0%") and len(bins) == 10
    first = Drift(status="insufficient", latest=Sample(scores=[0.5]), reference=Sample())
    assert "trailing scans: none. PSI not computed: drift not judged." in describe.drift_alt(first)
    assert describe.drift_bins(first)[5] == ("0.50 to 0.60", "—", "100.0%")


def test_one_of_a_kind_reads_as_one():
    """A review read "1 objects scanned", a one-day report's date twice, and "scores 0.80 to 0.80"."""
    at = datetime(2026, 1, 1, 2, tzinfo=timezone.utc)
    one = [{"scan_id": "s1", "started_at": at, "scanned": 1, "status": "succeeded", "exit_code": 0}]
    assert "1 object scanned; none failed" in describe.runs_alt(one)
    day = [{"day": date(2026, 1, 1), "fake_rate": 1.0, "fakes": 1, "reals": 0}]
    assert describe.fake_rate_alt(day) == "Fake rate per scan day, 1 day, 2026-01-01: 100.0%, 1 fake of 1 scored."
    assert "2 faces, scores all 0.80" in describe.timeline_alt("a.mp4", [(0, 0.0, 0.8), (0, 1.0, 0.8)], [0.5])
