"""The operating point and the aggregation's fit on validation (jobs/training/fit.py)."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.training.evaluate import report
from jobs.training.fit import fit_on_validation

from training_fixtures import score_records


def test_operating_point_keeps_every_real_source_within_the_target_fpr():
    photos = score_records("p", "photos", "REAL", np.linspace(0.01, 0.20, 20))        # many easy reals
    videos = score_records("v", "videos", "REAL", [0.30, 0.35, 0.40, 0.45, 0.50])     # few hard reals
    fakes = score_records("f", "videos", "FAKE", [0.45, 0.6, 0.7, 0.8, 0.9])
    strategy, threshold, comparison = fit_on_validation(photos + videos + fakes, target_fpr=0.05)
    per_source = comparison[strategy]["per_source_threshold"]
    # 20 photos at 5%: one may be called FAKE → just above the 19th; 5 videos at 5%: none → just above the top
    # (at the card's precision: the next number of 6 decimals)
    assert per_source["photos"] == pytest.approx(0.190001, abs=1e-9)
    assert threshold == per_source["videos"] == pytest.approx(0.500001, abs=1e-9)
    # the pooled 5% quantile (what the photos alone would allow) would have called 4 real videos FAKE
    assert np.quantile([r["face_scores"][0] for r in photos + videos], 0.95) < 0.5
    assert comparison[strategy]["fpr"] == 0.0
    # a test split is reported at the validation threshold, untouched, with FPR per real source
    test = score_records("tp", "photos", "REAL", [0.1, 0.6]) + score_records("tf", "videos", "FAKE", [0.55, 0.4])
    result = report(test, threshold, strategy)
    assert result["threshold"] == threshold and result["real_sources"]["photos"]["fpr"] == 0.5
    assert result["overall"]["confusion"] == {"tn": 1, "fp": 1, "fn": 1, "tp": 1}


def test_aggregation_is_chosen_by_auc_with_the_min_track_rule():
    # one real video whose long main track is clean but a 2-frame side track looks fake: track_max would
    # call it FAKE; with the minimum-track rule (4 frames) the side track gives no verdict
    def video(path, label, main, side=None):
        scores, tracks = [main] * 8, [0] * 8
        if side is not None:
            scores, tracks = scores + [side] * 2, tracks + [1] * 2
        return {"path": path, "label": label, "method": "X", "source": "v", "error": "", "frames_sampled": 8,
                "face_scores": scores, "face_track": tracks}

    records = [video("r1", "REAL", 0.2, side=0.95), video("r2", "REAL", 0.3), video("f1", "FAKE", 0.7), video("f2", "FAKE", 0.8)]
    _, _, without_rule = fit_on_validation(records, 0.05, min_track_frames=1)
    assert without_rule["track_max"]["roc_auc"] < 1.0
    strategy, threshold, with_rule = fit_on_validation(records, 0.05, min_track_frames=4)
    assert with_rule["track_max"]["roc_auc"] == 1.0 and with_rule[strategy]["roc_auc"] == 1.0
    assert 0.3 < threshold < 0.7


def test_ties_go_to_the_lower_pooled_fpr(monkeypatch):
    import jobs.training.fit as fit

    reals = np.linspace(0.01, 0.20, 20)
    tied = reals.copy()
    tied[-2] = tied[-1]  # the same ranking (AUC 1), one more real at the highest score: a higher FPR at the threshold

    def video_scores(records, strategy, min_track):
        s = tied if strategy == "confident" else reals
        return np.r_[np.zeros(20, int), [1]], np.r_[s, [0.9]], [{"source": "v"}] * 21

    monkeypatch.setattr(fit, "video_scores", video_scores)
    strategy, _threshold, comparison = fit.fit_on_validation([], 0.05)
    assert comparison["mean"]["roc_auc_balanced"] == comparison["confident"]["roc_auc_balanced"] == 1.0
    assert strategy == "confident" and comparison["confident"]["fpr"] < comparison["mean"]["fpr"]


def test_fit_card_takes_the_settings_min_track_when_no_flag_says(tmp_path):
    from jobs.training.fit import fit_card
    from pipeline.card import ModelCard, ModelSpec
    from pipeline.config import load_settings

    records = [{"path": f"{label}{i}", "label": label, "method": "X", "source": "v", "error": "", "frames_sampled": 8,
                "face_scores": [score] * 8, "face_track": [0] * 8}
               for i, (label, score) in enumerate([("REAL", 0.1), ("REAL", 0.2), ("FAKE", 0.8), ("FAKE", 0.9)])]
    card = ModelCard(version="t", architecture=ModelSpec())
    fit_card(records, card, tmp_path / "d.safetensors", load_settings(**{"classify.min_track_frames": 6}), "validation", ["v"])
    assert card.min_track_frames == 6
