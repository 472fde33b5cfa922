"""Binary classification metrics, computed by scikit-learn (one definition for train, evaluate, tests), and the
per-object labels and scores they are computed on."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm

from pipeline.aggregate import effective_min_track, video_score
from pipeline.errors import DeepfakeStreamError


class NothingScoredError(DeepfakeStreamError, ValueError):
    """No object of the split has a verdict (every file unreadable or faceless, the split empty, or no track long
    enough for the minimum-track rule): there is no report to make, and an empty one would read as a broken metric."""

    code = "nothing_scored"


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """F1, precision, recall, accuracy, ROC AUC, log loss and confusion matrix at ``threshold``.

    AUC is None when only one class is present (it is undefined there, not 0.5).
    """
    labels = np.asarray(labels, int)
    scores = np.clip(np.asarray(scores, np.float64), 1e-6, 1 - 1e-6)
    predicted = (scores >= threshold).astype(int)
    both = len(np.unique(labels)) == 2
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    return {
        "n": int(len(labels)), "positives": int(labels.sum()), "threshold": float(threshold),
        "f1": float(skm.f1_score(labels, predicted, zero_division=0)),
        "precision": float(skm.precision_score(labels, predicted, zero_division=0)),
        "recall": float(skm.recall_score(labels, predicted, zero_division=0)),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "roc_auc": float(skm.roc_auc_score(labels, scores)) if both else None,
        "log_loss": float(skm.log_loss(labels, scores, labels=[0, 1])),
        "confusion": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }


def auc_interval(labels: np.ndarray, scores: np.ndarray, level: float = 0.95, draws: int = 1000,
                 seed: int = 0) -> list[float] | None:
    """Percentile bootstrap interval of ROC AUC, reals and fakes resampled separately (each draw keeps both
    classes' counts). With 20 fakes an AUC moves by 0.05 per object: the interval says how much a report's
    AUC can be read into. Objects are drawn independently, so videos sharing a person make it too narrow."""
    labels = np.asarray(labels, int)
    scores = np.asarray(scores, np.float64)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return None
    rng = np.random.default_rng(seed)
    aucs = np.empty(draws)
    for i in range(draws):  # Mann-Whitney: the share of (fake, real) pairs in the right order, ties half
        p, n = rng.choice(pos, len(pos)), np.sort(rng.choice(neg, len(neg)))
        below, at_or_below = np.searchsorted(n, p, "left"), np.searchsorted(n, p, "right")
        aucs[i] = (below + at_or_below).sum() / (2.0 * len(p) * len(n))
    tail = (1 - level) / 2 * 100
    return [float(v) for v in np.percentile(aucs, [tail, 100 - tail])]


THRESHOLD_DECIMALS = 6  # what a model card stores


def threshold_for_fpr(real_scores: np.ndarray, target_fpr: float) -> float:
    """Smallest threshold at which at most ``target_fpr`` of these real scores are called FAKE (score >= t).

    With n reals, floor(target * n) of them may lie at or above it; with few reals that is zero and the
    threshold sits just above the highest real score: small validation sets make a cautious scanner.
    Returned at the card's precision, rounded *up*: rounding to nearest could land under the real score
    it must clear and call that real FAKE (it did, v22)."""
    real_scores = np.sort(np.asarray(real_scores, np.float64))
    if len(real_scores) == 0:
        raise ValueError("no real scores to choose a threshold on")
    allowed = int(np.floor(target_fpr * len(real_scores) + 1e-9))
    highest_allowed_real = real_scores[len(real_scores) - allowed - 1]
    step = 10.0 ** -THRESHOLD_DECIMALS
    threshold = round(float(np.floor(highest_allowed_real / step) + 1) * step, THRESHOLD_DECIMALS)
    if threshold <= highest_allowed_real:  # float error at the last digit
        threshold = round(threshold + step, THRESHOLD_DECIMALS)
    return float(min(1.0, threshold))


def operating_threshold(labels: np.ndarray, scores: np.ndarray, sources: list[str], target_fpr: float) -> tuple[float, dict[str, float]]:
    """The threshold meeting ``target_fpr`` on *every* real source (the max of their own thresholds),
    so a set of many easy photos cannot hide a set of hard real videos. Returns it and the per-source ones."""
    labels = np.asarray(labels, int)
    per_source = {}
    for source in sorted({s for s, y in zip(sources, labels) if y == 0}):
        members = np.array([s == source and y == 0 for s, y in zip(sources, labels)])
        per_source[source] = threshold_for_fpr(np.asarray(scores)[members], target_fpr)
    if not per_source:
        raise ValueError("no real objects to choose a threshold on")
    return max(per_source.values()), per_source


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fprs: tuple[float, ...] = (0.01, 0.05, 0.10)) -> dict[str, float | None]:
    """True-positive rate at each false-positive rate, read off the ROC curve (None with one class)."""
    labels = np.asarray(labels, int)
    if len(np.unique(labels)) < 2:
        return {f"tpr_at_fpr_{f:g}": None for f in fprs}
    fpr, tpr, _ = skm.roc_curve(labels, np.asarray(scores, np.float64))
    # the best TPR among operating points whose FPR does not exceed the target
    return {f"tpr_at_fpr_{f:g}": float(tpr[fpr <= f + 1e-12].max()) for f in fprs}


def calibration(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Expected calibration error over equal-width score bins, and the bins (for a reliability plot)."""
    labels = np.asarray(labels, int)
    scores = np.clip(np.asarray(scores, np.float64), 0, 1)
    which = np.minimum((scores * bins).astype(int), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        members = which == b
        if not members.any():
            continue
        confidence, accuracy = float(scores[members].mean()), float(labels[members].mean())
        ece += members.mean() * abs(confidence - accuracy)
        table.append({"bin": [b / bins, (b + 1) / bins], "n": int(members.sum()), "mean_score": confidence, "fake_share": accuracy})
    return {"ece": float(ece), "bins": table}


def balanced_weights(labels: np.ndarray, sources: list[str]) -> np.ndarray:
    """Sample weights giving every real source the same total weight, and all fakes as much as all reals,
    so thousands of validation photos cannot drown the few real validation videos."""
    labels = np.asarray(labels)
    weights = np.ones(len(labels), np.float64)
    real_sources = sorted({s for s, y in zip(sources, labels) if y == 0})
    for source in real_sources:
        members = np.array([s == source and y == 0 for s, y in zip(sources, labels)])
        weights[members] = 1.0 / members.sum() / len(real_sources)
    fakes = labels == 1
    if fakes.any():
        weights[fakes] = 1.0 / fakes.sum()
    return weights


def balanced_auc(labels: np.ndarray, scores: np.ndarray, sources: list[str]) -> float | None:
    """ROC AUC with every real source weighing the same (``balanced_weights``); None with one class. The
    checkpoint-selection metric of training (``validate``) and the fit's choice of aggregation (``evaluate``)."""
    labels = np.asarray(labels, int)
    if len(np.unique(labels)) < 2:
        return None
    return float(skm.roc_auc_score(labels, np.asarray(scores, np.float64), sample_weight=balanced_weights(labels, sources)))


def own_sources(labels: np.ndarray, sources: list[str]) -> tuple[list[str], np.ndarray]:
    """The sources that hold fakes (e.g. FF++, sorted) and the mask of the objects, real or fake, from them:
    the fakes judged against their own set's reals only, without the real-only sets (photos, other videos)."""
    names = sorted({s for s, y in zip(sources, np.asarray(labels)) if y == 1})
    return names, np.array([s in names for s in sources], bool)


def video_scores(records: list[dict], strategy: str, min_track_frames: int = 1) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Labels and scores of the scored objects (``evaluate.score_videos`` records) that get a verdict under ``strategy``
    and the minimum-track rule (the others are counted, not scored); the report and the fit both read these."""
    labels, scores, kept = [], [], []
    for record in records:
        if record["error"]:
            continue
        min_frames = effective_min_track(min_track_frames, record.get("frames_sampled"))
        frames = record.get("face_frame")  # absent from records cached before it was kept: each face a frame
        value = video_score(np.array(record["face_scores"]), np.array(record["face_track"]), strategy, min_frames,
                            record.get("frames_sampled"), None if frames is None else np.array(frames))
        if value is None:
            continue
        labels.append(int(record["label"] == "FAKE"))
        scores.append(value)
        kept.append(record)
    faced = sum(1 for r in records if r["face_scores"] and not r["error"])
    if faced and not kept:  # evaluate says so first when no object has a face at all
        raise NothingScoredError(f"none of the {faced} objects with faces has a person seen in {min_track_frames}+ sampled "
                                 "frames (the minimum-track rule; --min-track-frames): no verdict to report or fit")
    return np.array(labels, int), np.array(scores, np.float64), kept
