"""The score stage's second half, aggregate: per-face probabilities → per-track scores → one score and label per video.

Tracks shorter than the card's ``min_track_frames`` give no verdict (``long_tracks``) beside a long one; when
every track is short, all faces are judged if they are found in half the sampled frames, else the object is NO_FACE."""

from __future__ import annotations

import math
from typing import Callable, Literal

import numpy as np

from pipeline.batch import Batch, batch_size, errors_of, object_column

Strategy = Literal["mean", "confident", "track_max"]


def mean_score(scores: np.ndarray, tracks: np.ndarray | None = None) -> float:
    """Plain mean over every face of every sampled frame."""
    return float(np.mean(scores))


def confident_score(scores: np.ndarray, tracks: np.ndarray | None = None, high: float = 0.8, low: float = 0.2) -> float:
    """The DFDC winner's rule (Seferbekov, 2020): trust the confident faces when there are enough of them.

    If many faces are confidently fake (more than n/2.5, and at least 11 of every 32), average only
    those; else if over 90% are confidently real, average only those; else the plain mean.
    """
    scores = np.asarray(scores, np.float64)
    n = len(scores)
    fakes = scores > high
    if fakes.sum() > n / 2.5 and fakes.sum() >= max(1, round(n * 11 / 32)):
        return float(scores[fakes].mean())
    reals = scores < low
    if reals.sum() > 0.9 * n:
        return float(scores[reals].mean())
    return float(scores.mean())


def track_scores(scores: np.ndarray, tracks: np.ndarray) -> dict[int, float]:
    """Mean score of each track (person)."""
    return {int(t): float(np.mean(scores[tracks == t])) for t in np.unique(tracks)}


def track_max_score(scores: np.ndarray, tracks: np.ndarray | None = None) -> float:
    """A video is as fake as its most fake person: max over per-track means."""
    if tracks is None or len(tracks) != len(scores):
        return mean_score(scores)
    return max(track_scores(np.asarray(scores), np.asarray(tracks)).values())


STRATEGIES: dict[str, Callable[..., float]] = {
    "mean": mean_score,
    "confident": confident_score,
    "track_max": track_max_score,
}


def counted_faces(n: int, tracks: np.ndarray | None, min_frames: int, frames_sampled: int | None = None,
                  face_frame: np.ndarray | None = None) -> np.ndarray:
    """Which of ``n`` faces the verdict counts (``long_tracks``' rule, as a mask the result shows per person).
    ``face_frame``: each face's sampled frame (the montage rule counts frames; None: records without them,
    where each face counts as a frame)."""
    if tracks is None or min_frames <= 1 or len(tracks) != n:
        return np.ones(n, bool)
    tracks = np.asarray(tracks)
    ids, counts = np.unique(tracks, return_counts=True)
    keep = np.isin(tracks, ids[counts >= min_frames])
    # no long track: a montage is judged only when faces fill at least half the sampled frames (a few scattered
    # false detections in a long video stay NO_FACE; four faces in one frame are one frame)
    filled = n if face_frame is None else len(np.unique(np.asarray(face_frame)))
    montage = filled >= max(min_frames, (frames_sampled or 0) // 2)
    return keep if keep.any() or not montage else np.ones(n, bool)


def long_tracks(scores: np.ndarray, tracks: np.ndarray | None, min_frames: int, frames_sampled: int | None = None,
                face_frame: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Only the faces of tracks seen in at least ``min_frames`` sampled frames.

    A face glimpsed in two frames (a passer-by, a false detection) is too little evidence to decide a
    video on: with ``track_max`` it used to. Callers cap ``min_frames`` at the frames sampled, so a photo
    (one frame) or a short clip can still be scored. When no track is long enough but faces are found in at
    least half of the ``frames_sampled`` (jump cuts, a montage: each face unlinked to the next; ``face_frame``
    says which), all of them are kept: a face in every sampled frame must not read as NO_FACE."""
    if tracks is None or min_frames <= 1 or len(tracks) != len(scores):
        return scores, tracks
    keep = counted_faces(len(scores), tracks, min_frames, frames_sampled, face_frame)
    return scores[keep], np.asarray(tracks)[keep]


def video_score(scores: np.ndarray, tracks: np.ndarray | None, strategy: Strategy, min_track_frames: int = 1,
                frames_sampled: int | None = None, face_frame: np.ndarray | None = None) -> float | None:
    """Aggregate face scores with ``strategy`` over tracks of at least ``min_track_frames`` faces;
    None when no face (or no long-enough track) is left."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown aggregation {strategy!r}; choose one of {sorted(STRATEGIES)}")
    scores, tracks = long_tracks(np.asarray(scores, np.float64), tracks, min_track_frames, frames_sampled, face_frame)
    if len(scores) == 0:
        return None
    return STRATEGIES[strategy](scores, tracks)


def effective_min_track(min_track_frames: int, frames_sampled: int | None) -> int:
    """The rule never asks for more frames than were sampled (images: 1)."""
    if frames_sampled is None or frames_sampled <= 0:
        return min_track_frames
    return max(1, min(min_track_frames, int(frames_sampled)))


def label_for(score: float | None, threshold: float, error: str = "") -> str:
    if error:
        return "ERROR"
    if score is None:
        return "NO_FACE"
    return "FAKE" if score >= threshold else "REAL"


class AggregateStage:
    """Batch stage: ``face_scores``, ``face_track``, ``face_frame`` → ``score``, ``label``, ``threshold``,
    ``model_version``."""

    def __init__(self, threshold: float, strategy: Strategy, model_version: str, min_track_frames: int = 1):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown aggregation {strategy!r}; choose one of {sorted(STRATEGIES)}")
        self.threshold = threshold
        self.strategy = strategy
        self.model_version = model_version
        self.min_track_frames = min_track_frames

    def __call__(self, batch: Batch) -> Batch:
        n = batch_size(batch)
        errors = errors_of(batch)
        scores, labels, counted = [], [], []
        sampled = batch.get("frames_sampled")
        for i in range(n):
            frames = None if sampled is None else int(sampled[i])
            min_frames = effective_min_track(self.min_track_frames, frames)
            face_frame = batch["face_frame"][i]
            value = None if errors[i] else video_score(batch["face_scores"][i], batch["face_track"][i], self.strategy,
                                                       min_frames, frames, face_frame)
            scores.append(math.nan if value is None else value)
            labels.append(label_for(value, self.threshold, errors[i]))
            faces = len(batch["face_scores"][i]) if batch["face_scores"][i] is not None else 0
            counted.append(counted_faces(faces, batch["face_track"][i], min_frames, frames, face_frame))
        out = dict(batch)
        out.update(
            score=np.array(scores, np.float64),
            label=object_column(labels),
            threshold=np.full(n, self.threshold, np.float64),
            model_version=object_column([self.model_version] * n),
            aggregation=object_column([self.strategy] * n),
            face_counted=object_column(counted),
        )
        return out
