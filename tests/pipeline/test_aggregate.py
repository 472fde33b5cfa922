"""Aggregation strategies on hand-made face scores."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.aggregate import (AggregateStage, confident_score, counted_faces, effective_min_track, label_for, long_tracks,
                                mean_score, track_max_score, video_score)
from pipeline.batch import object_column


def test_mean():
    assert mean_score(np.array([0.1, 0.3, 0.8])) == pytest.approx(0.4)


def test_confident_uses_confident_fakes_when_many():
    scores = np.array([0.9] * 14 + [0.5] * 18)  # 14 of 32 > 0.8: more than n/2.5 and at least 11
    assert confident_score(scores) == pytest.approx(0.9)
    few = np.array([0.9] * 5 + [0.5] * 27)  # too few confident fakes → plain mean
    assert confident_score(few) == pytest.approx(few.mean())


def test_confident_uses_confident_reals_when_nearly_all():
    scores = np.array([0.05] * 30 + [0.6] * 2)  # 30/32 > 90% below 0.2
    assert confident_score(scores) == pytest.approx(0.05)


def test_track_max_flags_the_fake_person():
    scores = np.array([0.1, 0.1, 0.1, 0.9, 0.8, 0.1])
    tracks = np.array([0, 0, 0, 1, 1, 1])
    assert track_max_score(scores, tracks) == pytest.approx(0.6)
    assert mean_score(scores) == pytest.approx(2.1 / 6)


def test_no_faces_and_labels():
    assert video_score(np.array([]), np.array([]), "mean") is None
    assert label_for(None, 0.5) == "NO_FACE"
    assert label_for(0.7, 0.5) == "FAKE" and label_for(0.3, 0.5) == "REAL" and label_for(0.5, 0.5) == "FAKE"
    assert label_for(0.9, 0.5, error="boom") == "ERROR"
    with pytest.raises(ValueError):
        video_score(np.array([0.1]), None, "median")


def test_stage_rows():
    batch = {
        "uri": object_column(["a", "b", "c"]),
        "error": object_column(["", "", "corrupt"]),
        "face_scores": object_column([np.array([0.9, 0.7]), np.zeros(0), np.zeros(0)]),
        "face_track": object_column([np.array([0, 0]), np.zeros(0, int), np.zeros(0, int)]),
        "face_frame": object_column([np.array([0, 1]), np.zeros(0, int), np.zeros(0, int)]),
    }
    out = AggregateStage(0.5, "mean", "v1")(batch)
    assert out["label"].tolist() == ["FAKE", "NO_FACE", "ERROR"]
    assert out["score"][0] == pytest.approx(0.8) and np.isnan(out["score"][1])
    assert out["model_version"].tolist() == ["v1"] * 3


def test_short_tracks_give_no_verdict():
    scores = np.array([0.1] * 6 + [0.95] * 2)
    tracks = np.array([0] * 6 + [1] * 2)
    assert track_max_score(scores, tracks) == pytest.approx(0.95)             # a 2-frame side track decides
    assert video_score(scores, tracks, "track_max", min_track_frames=3) == pytest.approx(0.1)
    kept, kept_tracks = long_tracks(scores, tracks, 3)
    assert len(kept) == 6 and set(kept_tracks.tolist()) == {0}
    assert video_score(scores[6:], tracks[6:], "mean", min_track_frames=3) is None  # no track long enough
    assert effective_min_track(4, 1) == 1 and effective_min_track(4, 32) == 4 and effective_min_track(4, None) == 4


def test_a_montage_of_short_tracks_is_judged_not_no_face():
    """Jump cuts: a face in every sampled frame, no two linked. As many faces as one long track is evidence."""
    scores, tracks = np.array([0.9, 0.8, 0.7, 0.9, 0.6]), np.arange(5)
    assert video_score(scores, tracks, "mean", min_track_frames=4) == pytest.approx(0.78)
    assert video_score(scores[:3], tracks[:3], "mean", min_track_frames=4) is None  # three glimpses: too little
    kept, _ = long_tracks(np.r_[scores, [0.1] * 4], np.r_[tracks, [9] * 4], 4)
    assert kept.tolist() == [0.1] * 4  # beside a long track the short ones still give no verdict
    assert video_score(scores, tracks, "mean", 4, frames_sampled=10) == pytest.approx(0.78)  # faces in half the frames
    assert video_score(scores, tracks, "mean", 4, frames_sampled=32) is None  # five scattered glimpses in 32 frames


def test_the_montage_rule_counts_frames_with_a_face_not_faces():
    """16 one-frame faces, 4 in each of frames 0, 8, 16, 24 of 32: 4 frames are not half of 32 (NO_FACE);
    16 faces spread over 16 of the frames are."""
    scores, tracks = np.full(16, 0.9), np.arange(16)
    crowd = np.repeat([0, 8, 16, 24], 4)
    assert video_score(scores, tracks, "mean", 4, 32, face_frame=crowd) is None
    assert not counted_faces(16, tracks, 4, 32, crowd).any()
    assert video_score(scores, tracks, "mean", 4, 32, face_frame=np.arange(0, 32, 2)) == pytest.approx(0.9)
    batch = {"uri": object_column(["crowd"]), "error": object_column([""]), "frames_sampled": np.array([32]),
             "face_scores": object_column([scores]), "face_track": object_column([tracks]),
             "face_frame": object_column([crowd])}
    out = AggregateStage(0.5, "mean", "v", min_track_frames=4)(batch)
    assert out["label"].tolist() == ["NO_FACE"] and not out["face_counted"][0].any()


def test_the_stage_says_which_faces_its_verdict_counted():
    """A passer-by's two frames beside a long track are shown, but not counted: the result marks that person."""
    batch = {"uri": object_column(["video", "montage"]), "error": object_column(["", ""]),
             "frames_sampled": np.array([32, 8]),
             "face_scores": object_column([np.array([0.2] * 6 + [0.95] * 2), np.array([0.9, 0.8, 0.7, 0.6])]),
             "face_track": object_column([np.array([0] * 6 + [1] * 2), np.arange(4)]),
             "face_frame": object_column([np.r_[np.arange(6), 6, 7], np.arange(4)])}
    out = AggregateStage(0.5, "track_max", "v", min_track_frames=4)(batch)
    assert out["face_counted"][0].tolist() == [True] * 6 + [False] * 2
    assert out["face_counted"][1].tolist() == [True] * 4  # a montage over half its 8 frames: every face counts
    assert counted_faces(3, np.arange(3), 4).tolist() == [False] * 3  # three glimpses: none counts (NO_FACE)


def test_stage_applies_the_rule_per_row_capped_at_frames_sampled():
    batch = {
        "uri": object_column(["video", "photo", "glimpse"]),
        "error": object_column(["", "", ""]),
        "frames_sampled": np.array([32, 1, 32]),
        "face_scores": object_column([np.array([0.2] * 10 + [0.9] * 2), np.array([0.8]), np.array([0.9, 0.9])]),
        "face_track": object_column([np.array([0] * 10 + [1] * 2), np.array([0]), np.array([0, 0])]),
        "face_frame": object_column([np.r_[np.arange(10), 10, 11], np.array([0]), np.array([0, 1])]),
    }
    out = AggregateStage(0.5, "track_max", "v", min_track_frames=4)(batch)
    assert out["label"].tolist() == ["REAL", "FAKE", "NO_FACE"]
    assert out["score"][0] == pytest.approx(0.2)


def test_confident_boundaries_are_strict():
    nine = np.array([0.1] * 9 + [0.6])  # 90% confident reals is not "over 90%"
    assert confident_score(nine) == pytest.approx(nine.mean())
    edge = np.array([0.8] * 14 + [0.5] * 18)  # 0.8 is not "> 0.8"
    assert confident_score(edge) == pytest.approx(edge.mean())


def test_track_max_without_tracks_is_the_mean():
    assert track_max_score(np.array([0.1, 0.9]), None) == pytest.approx(0.5)


def test_the_strategy_names_the_configuration_accepts_are_the_ones_implemented():
    from typing import get_args

    from pipeline.aggregate import STRATEGIES, Strategy

    assert sorted(get_args(Strategy)) == sorted(STRATEGIES)
