"""Drift statistic on hand-made distributions: identical is ~0, a shift is flagged, small samples are not judged."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.report.drift import PSI_THRESHOLD, Sample, compare, histogram, psi


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
    ref = _sample([0.2] * 20, faces=[2] * 20, errors=1)
    fewer_faces = compare(ref, _sample([0.2] * 20, faces=[0] * 10 + [1] * 10, scan="b"))
    assert "face_count_shift" in fewer_faces.flags and fewer_faces.status == "drift"
    errors = compare(ref, _sample([0.2] * 20, faces=[2] * 20, errors=10, scan="b"))
    assert errors.flags == ["error_rate_rise"]
    assert errors.latest.error_rate == pytest.approx(10 / 30)
    new_model = compare(ref, _sample([0.2] * 20, faces=[2] * 20, scan="b", model="v4"))
    assert new_model.status == "ok" and new_model.flags == ["model_changed"]


def test_compare_does_not_judge_too_few_objects_or_no_history():
    few = compare(_sample([0.1] * 3), _sample([0.9] * 3, scan="b"))
    assert few.status == "insufficient" and few.psi is None and "too few" in few.message
    alone = compare(Sample(), _sample([0.5] * 10))
    assert alone.status == "insufficient" and "no earlier scan" in alone.message
