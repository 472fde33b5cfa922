"""Drift statistic on hand-made distributions: identical is ~0, a shift is flagged, small samples are not judged,
and samples of one distribution are not flagged by chance (seeded simulations)."""

from __future__ import annotations

import numpy as np
import pytest

from datetime import datetime, timezone

from jobs.query.sql import connect
from jobs.report.drift import (ALPHA, MIN_OBJECTS, PSI_THRESHOLD, Sample, compare, error_rise_p, histogram, psi,
                               psi_noise_floor, scan_drift)
from report_fixtures import video_row, write_scan


def _sample(scores, faces=None, errors=0, scan="s1", model="v3"):
    faces = [1] * len(scores) if faces is None else faces
    return Sample(scan_ids=[scan], scores=list(scores), faces=faces, objects=len(scores) + errors, errors=errors,
                  model_versions=[model])


def test_histogram_puts_one_in_the_last_bin_and_clips():
    counts = histogram([0.0, 0.05, 0.5, 1.0, 1.2, -0.1])
    assert counts.tolist() == [3, 0, 0, 0, 0, 1, 0, 0, 0, 2]


def test_identical_distributions_have_zero_psi():
    scores = np.random.default_rng(0).beta(2, 5, 500)
    assert psi(scores, scores) == pytest.approx(0.0, abs=1e-12)


def test_two_draws_of_one_distribution_stay_under_the_threshold():
    rng = np.random.default_rng(1)
    value = psi(rng.beta(2, 5, 2000), rng.beta(2, 5, 2000))
    assert 0 < value < 0.05


def test_a_shifted_distribution_is_over_the_threshold_and_grows_with_the_shift():
    rng = np.random.default_rng(2)
    ref = rng.beta(2, 5, 2000)
    small, large = psi(ref, np.clip(ref + 0.05, 0, 1)), psi(ref, np.clip(ref + 0.3, 0, 1))
    assert small < PSI_THRESHOLD < large
    assert psi(ref, 1 - ref) > large  # mirrored: most mass moves furthest


def test_psi_is_finite_when_bins_are_empty():
    assert np.isfinite(psi([0.1] * 5, [0.9] * 5)) and psi([0.1] * 5, [0.9] * 5) > 1


def test_compare_flags_a_score_shift_and_names_it():
    rng = np.random.default_rng(3)
    ref = rng.beta(2, 5, 300)
    same = compare(_sample(ref, scan="a"), _sample(rng.beta(2, 5, 300), scan="b"))
    assert same.status == "ok" and same.flags == [] and not same.flagged
    shifted = compare(_sample(ref, scan="a"), _sample(np.clip(ref + 0.3, 0, 1), scan="b"))
    assert shifted.status == "drift" and shifted.flags == ["score_shift"] and shifted.flagged
    assert shifted.psi > PSI_THRESHOLD and "score_shift" in shifted.message


def test_compare_flags_face_counts_and_error_rate_but_not_a_model_change_alone():
    ref = _sample([0.2] * 120, faces=[2] * 120, errors=1)
    fewer_faces = compare(ref, _sample([0.2] * 120, faces=[0] * 60 + [1] * 60, scan="b"))
    assert "face_count_shift" in fewer_faces.flags and fewer_faces.status == "drift"
    errors = compare(ref, _sample([0.2] * 120, faces=[2] * 120, errors=40, scan="b"))
    assert errors.flags == ["error_rate_rise"]
    assert errors.latest.error_rate == pytest.approx(40 / 160)
    new_model = compare(ref, _sample([0.2] * 120, faces=[2] * 120, scan="b", model="v4"))
    assert new_model.status == "ok" and new_model.flags == ["model_changed"]


def test_a_face_count_from_or_to_zero_is_flagged():
    """A dead detector finds no face at all; the ratio to a trailing mean of 0 was never taken."""
    rng = np.random.default_rng(4)
    scores = rng.beta(2, 5, 150)
    alive, dead = list(rng.poisson(1.5, 150)), [0] * 150
    died = compare(_sample(scores, faces=alive, scan="a"), _sample(scores, faces=dead, scan="b"))
    assert died.flags == ["face_count_shift"] and died.status == "drift"
    back = compare(_sample(scores, faces=dead, scan="a"), _sample(scores, faces=alive, scan="b"))
    assert back.flags == ["face_count_shift"] and back.status == "drift"
    still_dead = compare(_sample(scores, faces=dead, scan="a"), _sample(scores, faces=dead, scan="b"))
    assert still_dead.flags == [] and still_dead.status == "ok"


def _night(rng, n: int, scan: str, shift: float = 0.0, error_rate: float = 0.03, faces: float = 1.5) -> Sample:
    """A scan of ``n`` objects from one stream: beta(2, 5) scores, Poisson face counts, binomial errors."""
    errors = int(rng.binomial(n, error_rate))
    return Sample(scan_ids=[scan], scores=list(np.clip(rng.beta(2, 5, n - errors) + shift, 0, 1)),
                  faces=list(rng.poisson(faces, n - errors)), objects=n, errors=errors, model_versions=["v3"])


@pytest.mark.parametrize("latest, trailing", [(5, 35), (20, 140), (50, 350)])
def test_small_nights_from_one_stream_are_never_flagged(latest, trailing):
    """Half-count smoothing and a fixed PSI > 0.25 flagged 94% of such pairs at 5 vs 35 objects, 12% at 50 vs 350."""
    rng = np.random.default_rng(latest)
    for _ in range(200):
        drift = compare(_night(rng, trailing, "a"), _night(rng, latest, "b"))
        assert drift.flags == [] and drift.status == "insufficient" and drift.psi is None, drift.message
        assert drift.message == (f"too few scored objects to judge scores ({len(drift.latest.scores)} latest, "
                                 f"{len(drift.reference.scores)} trailing; need {MIN_OBJECTS} on each side)")


@pytest.mark.parametrize("latest, trailing", [(120, 120), (150, 1050)])
def test_adequate_nights_from_one_stream_are_flagged_at_about_alpha(latest, trailing):
    rng = np.random.default_rng(latest)
    drifts = [compare(_night(rng, trailing, "a"), _night(rng, latest, "b")) for _ in range(400)]
    assert all(d.status in ("ok", "drift") for d in drifts)
    assert sum(d.flagged for d in drifts) <= 2  # 3 statistics at ALPHA each: ~1 in 300 nights at most


def test_one_error_in_a_small_night_is_no_error_rate_rise():
    ref = Sample(scan_ids=["a"], scores=[0.2] * 35, faces=[1] * 35, objects=35, model_versions=["v3"])
    one = Sample(scan_ids=["b"], scores=[0.2] * 4, faces=[1] * 4, objects=5, errors=1, model_versions=["v3"])
    assert error_rise_p(ref, one) == pytest.approx(5 / 40)  # 1 error in 40 objects lands in these 5 by chance
    assert compare(ref, one).flags == []
    all_five = one.model_copy(update={"scores": [], "faces": [], "errors": 5})
    assert compare(ref, all_five).flags == ["error_rate_rise"]  # p = 1 / C(40, 5): no chance


def test_real_shifts_of_adequate_nights_are_flagged():
    rng = np.random.default_rng(5)
    for _ in range(20):
        assert compare(_night(rng, 840, "a"), _night(rng, 120, "b", shift=0.3)).flags == ["score_shift"]
        assert compare(_night(rng, 840, "a"), _night(rng, 120, "b", error_rate=0.25)).flags == ["error_rate_rise"]
        assert compare(_night(rng, 840, "a"), _night(rng, 120, "b", faces=0.5)).flags == ["face_count_shift"]


def test_the_psi_noise_floor_is_the_chi_square_quantile_over_the_sample_sizes():
    assert psi_noise_floor(10**9, 10**9) * 10**9 / 2 == pytest.approx(27.877, rel=0.01)  # chi2(9) at 0.999
    rng = np.random.default_rng(6)
    values = [psi(rng.beta(2, 5, 700), rng.beta(2, 5, 100)) for _ in range(4000)]
    assert np.mean(np.array(values) > psi_noise_floor(100, 700)) < 5 * ALPHA
    assert psi_noise_floor(1000, 7000) < PSI_THRESHOLD < psi_noise_floor(100, 100)


def test_the_latest_scan_is_the_latest_scan_id_whatever_the_workers_clocks_say(tmp_path):
    """The videos view orders scans by scan_id (the driver's clock); drift must pick the same latest scan."""
    ahead = datetime(2026, 1, 5, tzinfo=timezone.utc)  # the earlier scan's worker ran days ahead
    first, second = "20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb"
    write_scan(tmp_path / "out", first, ahead, [video_row(first, "/a.mp4", "REAL", 0.1, ahead)])
    at = datetime(2026, 1, 2, tzinfo=timezone.utc)
    write_scan(tmp_path / "out", second, at, [video_row(second, "/b.mp4", "REAL", 0.1, at)])
    drift = scan_drift(connect(str(tmp_path / "out")))
    assert drift.latest.scan_ids == [second] and drift.reference.scan_ids == [first]


def test_compare_does_not_judge_too_few_objects_or_no_history():
    few = compare(_sample([0.1] * 3), _sample([0.9] * 3, scan="b"))
    assert few.status == "insufficient" and few.psi is None and "too few" in few.message
    alone = compare(Sample(), _sample([0.5] * 10))
    assert alone.status == "insufficient" and "no earlier scan" in alone.message


def test_the_reference_is_the_seven_scans_before_the_latest():
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE videos_history (scan_id VARCHAR, uri VARCHAR, score DOUBLE, faces INT, label VARCHAR, "
                "model_version VARCHAR, scanned_at TIMESTAMPTZ)")
    con.execute("CREATE TABLE runs (scan_id VARCHAR, status VARCHAR, options VARCHAR, deferred BIGINT)")  # no records
    for i in range(10):
        con.executemany("INSERT INTO videos_history VALUES (?, ?, 0.3, 1, 'REAL', 'v', now())",
                        [[f"s{i:02d}", f"/{i}/{k}.mp4"] for k in range(3)])
    drift = scan_drift(con, trailing=7)
    assert drift.latest.scan_ids == ["s09"] and drift.reference.scan_ids == [f"s{i:02d}" for i in range(2, 9)]


def test_a_face_count_move_that_chance_explains_is_not_flagged():
    scores = np.random.default_rng(0).beta(2, 5, 100)
    drift = compare(_sample(scores), _sample(scores, faces=[1] * 97 + [20] * 3, scan="b"))  # mean 1 -> 1.57, p ~ 0.08
    assert "face_count_shift" not in drift.flags


def test_exactly_min_objects_a_side_is_judged():
    rng = np.random.default_rng(0)
    drift = compare(_sample(rng.beta(2, 5, MIN_OBJECTS)), _sample(rng.beta(5, 2, MIN_OBJECTS), scan="b"))
    assert drift.status == "drift" and "score_shift" in drift.flags


def _nights(dest, n: int = 3, objects: int = 120, start: datetime = datetime(2026, 3, 1, 2, tzinfo=timezone.utc)):
    """``n`` finished nightly scans of one stream: beta(2, 5) scores, 1-2 faces, 2 objects in 100 ERROR."""
    from datetime import timedelta

    rng = np.random.default_rng(7)
    scans, errors = [], []
    for night in range(n):
        at = start + timedelta(days=night)
        sid = f"{at:%Y%m%dT%H%M%SZ}-{night:06x}"
        rows = []
        for k in range(objects):
            uri = f"s3://b/up/{night}/{k}.mp4"
            if k % 50 == 0:
                errors.append(uri)
                rows.append(video_row(sid, uri, "ERROR", None, at, error="not media", error_code="unsupported_media"))
            else:
                rows.append(video_row(sid, uri, "REAL", float(rng.beta(2, 5)), at, faces=int(rng.integers(1, 3))))
        write_scan(dest, sid, at, rows)
        scans.append(sid)
    return scans, errors


def test_a_scan_still_running_is_not_judged_the_last_finished_one_is(tmp_path):
    """Tonight's scan has committed its first parts (the largest objects first: 20 faces each): judged, it was a
    face-count shift; it is passed over and said to be."""
    from datetime import timedelta

    scans, _ = _nights(tmp_path / "out", n=4)
    at = datetime(2026, 3, 5, 2, tzinfo=timezone.utc)
    running = f"{at:%Y%m%dT%H%M%SZ}-run"
    write_scan(tmp_path / "out", running, at + timedelta(minutes=1),
               [video_row(running, f"s3://b/up/4/{k}.mp4", "REAL", 0.3, at, faces=20) for k in range(150)],
               status="running", exit_code=None)
    drift = scan_drift(connect(str(tmp_path / "out")))
    assert drift.latest.scan_ids == [scans[-1]] and drift.reference.scan_ids == scans[:-1]
    assert drift.status == "ok" and drift.flags == [] and drift.skipped == {running: "in progress"}
    assert drift.message.startswith(f"latest scan {running} in progress, judged the last finished full scan "
                                    f"({scans[-1]}): PSI "), drift.message


def test_a_retry_errors_rerun_is_not_a_nights_sample(tmp_path):
    """``scan --retry-errors`` the morning after rescans only the ERROR objects, which fail again: judged, its error
    rate was 100% against 2%. It is passed over; a later --retry-errors night that also scanned new uploads is
    judged on those, not on its retries."""
    from datetime import timedelta

    dest = tmp_path / "out"
    scans, errors = _nights(dest, n=4)
    at = datetime(2026, 3, 4, 6, tzinfo=timezone.utc)
    rerun = f"{at:%Y%m%dT%H%M%SZ}-retry"
    write_scan(dest, rerun, at, [video_row(rerun, u, "ERROR", None, at, error="not media", error_code="unsupported_media")
                                 for u in errors], options={"retry_errors": True, "full": False})
    drift = scan_drift(connect(str(dest)))
    assert drift.latest.scan_ids == [scans[-1]] and rerun not in drift.reference.scan_ids
    assert "error_rate_rise" not in drift.flags and drift.status == "ok", drift.message
    assert drift.message.startswith(f"latest scan {rerun} rescanned only objects whose last verdict was ERROR")

    at += timedelta(days=1)
    night = f"{at:%Y%m%dT%H%M%SZ}-night"
    rng = np.random.default_rng(8)
    write_scan(dest, night, at,
               [video_row(night, u, "ERROR", None, at, error="not media", error_code="unsupported_media") for u in errors]
               + [video_row(night, f"s3://b/up/5/{k}.mp4", "REAL", float(rng.beta(2, 5)), at, faces=1)
                  for k in range(120)], options={"retry_errors": True})
    drift = scan_drift(connect(str(dest)))
    assert drift.latest.scan_ids == [night] and drift.latest.objects == 120 and drift.latest.errors == 0
    assert drift.flags == [] and rerun not in drift.reference.scan_ids


def test_a_capped_run_that_left_work_for_later_is_not_judged(tmp_path):
    dest = tmp_path / "out"
    scans, _ = _nights(dest, n=3)
    at = datetime(2026, 3, 4, 2, tzinfo=timezone.utc)
    capped = f"{at:%Y%m%dT%H%M%SZ}-capped"
    write_scan(dest, capped, at, [video_row(capped, f"s3://b/big/{k}.mp4", "FAKE", 0.9, at, faces=30) for k in range(120)],
               options={"max_objects": 120}, deferred=5000)
    drift = scan_drift(connect(str(dest)))
    assert drift.latest.scan_ids == [scans[-1]] and drift.flags == []
    assert drift.skipped == {capped: "was capped by --max-objects (5000 objects left for later)"}


def test_a_night_that_only_found_objects_gone_is_no_sample(tmp_path):
    """Tombstones (label DELETED: objects gone from the source) are no verdicts: a night whose only rows are tombstones
    is not the latest sample (it was, with no score and 0 faces an object), and none of them counts in a night's."""
    dest = tmp_path / "out"
    scans, _errors = _nights(dest, n=4)
    at = datetime(2026, 3, 4, 6, tzinfo=timezone.utc)
    quiet = f"{at:%Y%m%dT%H%M%SZ}-gone"
    write_scan(dest, quiet, at, [video_row(quiet, f"s3://b/up/1/{k}.mp4", "DELETED", None, at) for k in range(150)])
    drift = scan_drift(connect(str(dest)))
    assert drift.latest.scan_ids == [scans[-1]] and quiet not in drift.reference.scan_ids, drift.message
    assert drift.status == "ok" and drift.flags == [], drift.message
