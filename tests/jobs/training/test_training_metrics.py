"""Metrics against scikit-learn and hand-made scores (jobs/training/metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from jobs.training.metrics import (balanced_auc, balanced_weights, binary_metrics, calibration, own_sources, threshold_for_fpr,
                                   tpr_at_fpr)


def test_metrics_match_scikit_learn():
    labels = np.array([0, 0, 1, 1, 0, 1, 1, 0, 1, 0])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.9, 0.6, 0.2, 0.55, 0.05])
    m = binary_metrics(labels, scores, 0.5)
    predicted = (scores >= 0.5).astype(int)
    assert m["f1"] == pytest.approx(skm.f1_score(labels, predicted))
    assert m["precision"] == pytest.approx(skm.precision_score(labels, predicted))
    assert m["recall"] == pytest.approx(skm.recall_score(labels, predicted))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    assert m["log_loss"] == pytest.approx(skm.log_loss(labels, scores))
    assert m["confusion"] == {"tn": 4, "fp": 1, "fn": 1, "tp": 4}
    assert binary_metrics(np.array([1, 1]), np.array([0.2, 0.9]), 0.5)["roc_auc"] is None


def test_tpr_at_fpr_and_calibration_on_hand_made_scores():
    labels = np.array([0] * 10 + [1] * 10)
    scores = np.concatenate([np.arange(10) / 10, [0.95] * 5 + [0.5] * 5])
    assert tpr_at_fpr(labels, scores, (0.0, 0.1, 0.5)) == {"tpr_at_fpr_0": 0.5, "tpr_at_fpr_0.1": 0.5, "tpr_at_fpr_0.5": 1.0}
    # all scores 0.25 while half are fakes: off by 0.25 everywhere
    assert calibration(np.array([0, 1] * 5), np.full(10, 0.25))["ece"] == pytest.approx(0.25)
    # scores that equal the fake share of their bin are perfectly calibrated
    cal = calibration(np.array([0, 0, 0, 1] + [1, 1, 1, 0]), np.array([0.25] * 4 + [0.75] * 4))
    assert cal["ece"] == pytest.approx(0.0) and [b["n"] for b in cal["bins"]] == [4, 4]
    assert threshold_for_fpr(np.array([0.1, 0.2, 0.3]), 0.5) > 0.2  # 1 of 3 may pass


@pytest.mark.parametrize("highest_real", [0.5539214527234436, 0.5539206, 0.553921, 0.1 + 0.2, 0.9999996, 0.500002])
def test_threshold_at_card_precision_still_clears_the_highest_real(highest_real):
    # v22's fit rounded 0.55392145 to nearest (0.553921) and so called its highest validation real FAKE
    reals = np.array([0.05, 0.1, highest_real])
    threshold = threshold_for_fpr(reals, 0.05)
    assert threshold > highest_real and threshold == round(threshold, 6)
    assert threshold - highest_real <= 1.0000001e-6  # the smallest such number, not a looser one
    assert not (reals >= threshold).any()


def test_balanced_weights_give_each_real_source_equal_say():
    labels = np.array([0] * 100 + [0] * 2 + [1] * 4)
    sources = ["photos"] * 100 + ["videos"] * 2 + ["videos"] * 4
    w = balanced_weights(labels, sources)
    assert w[:100].sum() == pytest.approx(0.5) and w[100:102].sum() == pytest.approx(0.5) and w[102:].sum() == pytest.approx(1)


def test_balanced_auc_is_the_mean_of_the_fakes_auc_against_each_real_source():
    # fakes 0.5, 0.9; videos' real 0.3 is below both (AUC 1); photos 0.1, 0.2, 0.6, 0.95: 5 of 8 pairs (0.625)
    labels = np.array([0, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.3, 0.5, 0.9, 0.1, 0.2, 0.6, 0.95])
    sources = ["videos"] * 3 + ["photos"] * 4
    assert balanced_auc(labels, scores, sources) == pytest.approx((1 + 0.625) / 2)
    assert skm.roc_auc_score(labels, scores) == pytest.approx(0.7)  # pooled: the four photos outweigh the one video
    assert balanced_auc(np.zeros(3, int), scores[:3], sources[:3]) is None


def test_own_sources_are_the_sources_with_fakes_reals_and_fakes_alike():
    names, mask = own_sources(np.array([0, 1, 0, 1, 0]), ["ffpp", "ffpp", "photos", "dfdc", "dfdc"])
    assert names == ["dfdc", "ffpp"] and mask.tolist() == [True, True, False, True, True]
    assert own_sources(np.array([0]), ["photos"])[1].tolist() == [False]


def test_auc_interval_brackets_the_auc_and_narrows_with_more_objects():
    from jobs.training.metrics import auc_interval

    rng = np.random.default_rng(3)
    def sample(n):  # overlapping classes: AUC about 0.76
        return np.r_[np.zeros(n), np.ones(n)].astype(int), np.r_[rng.normal(0, 1, n), rng.normal(1, 1, n)]
    small, large = sample(20), sample(2000)
    lo, hi = auc_interval(*small)
    auc = skm.roc_auc_score(*small)
    assert lo < auc < hi and 0.15 < hi - lo < 0.5
    lo2, hi2 = auc_interval(*large)
    assert lo2 < skm.roc_auc_score(*large) < hi2 and hi2 - lo2 < 0.05  # shrinks like 1/sqrt(n)
    labels, scores = small
    assert auc_interval(labels, scores) == auc_interval(labels, scores)  # seeded: a report reproduces
    assert auc_interval(np.ones(5, int), np.arange(5.0)) is None  # one class: undefined, not 0.5
    tied = auc_interval(np.array([0, 0, 1, 1]), np.full(4, 0.5))
    assert tied == [0.5, 0.5]  # ties count half, as in roc_auc_score


def test_metrics_call_a_score_at_the_threshold_fake_as_label_for_does():
    assert binary_metrics(np.array([0, 1]), np.array([0.2, 0.5]), 0.5)["confusion"]["tp"] == 1


def test_no_track_long_enough_for_the_minimum_is_a_coded_refusal_not_an_empty_metric():
    from jobs.training.metrics import NothingScoredError, video_scores

    glimpse = {"label": "REAL", "error": "", "frames_sampled": 32, "face_scores": [0.3] * 3, "face_track": [0, 0, 0]}
    with pytest.raises(NothingScoredError, match="none of the 1 objects with faces") as caught:
        video_scores([glimpse], "mean", 4)
    assert caught.value.code == "nothing_scored"
    labels, scores, kept = video_scores([glimpse], "mean", 3)  # long enough for a shorter minimum
    assert labels.tolist() == [0] and kept == [glimpse]
    assert video_scores([{**glimpse, "face_scores": [], "face_track": []}], "mean", 4)[0].size == 0  # no face: evaluate says


def test_the_montage_rule_reads_the_frames_evaluate_records():
    """16 one-frame faces in 4 of 32 frames: no verdict (``pipeline.aggregate``); the same faces on 16 frames: one."""
    from jobs.training.metrics import NothingScoredError, video_scores

    crowd = {"label": "REAL", "error": "", "frames_sampled": 32, "face_scores": [0.3] * 16, "face_track": list(range(16)),
             "face_frame": [f for f in (0, 8, 16, 24) for _ in range(4)]}
    with pytest.raises(NothingScoredError):
        video_scores([crowd], "mean", 4)
    assert video_scores([{**crowd, "face_frame": list(range(0, 32, 2))}], "mean", 4)[1].tolist() == [0.3]
