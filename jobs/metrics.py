"""Binary classification metrics, computed by scikit-learn (one definition for train, evaluate, tests)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm


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


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold that maximises F1 on (validation) data: midpoint between neighbouring scores."""
    labels = np.asarray(labels, int)
    scores = np.asarray(scores, np.float64)
    candidates = np.unique(scores)
    if len(candidates) < 2 or len(np.unique(labels)) < 2:
        return 0.5
    cuts = np.concatenate([[candidates[0] - 1e-6], (candidates[:-1] + candidates[1:]) / 2])
    f1s = [skm.f1_score(labels, (scores >= c).astype(int), zero_division=0) for c in cuts]
    best = int(np.argmax(f1s))
    return float(np.clip(cuts[best], 0.0, 1.0))
