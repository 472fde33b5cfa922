"""The validation fit (``evaluate --fit``) and the model card's writes (``--fit``, ``--record``).

``--fit`` is for the *validation* split only. It picks the operating point of a scanner, not of F1: for
each aggregation strategy the threshold is the lowest at which every real source of the split stays within
``--target-fpr`` false positives; the strategy with the best (source-balanced) ROC AUC ships, ties to the
lower pooled false-positive rate. Both go into the model card. Reports on any other split use the card's
values unchanged, so no reported number is tuned on its own data. ``--record`` stores a report's summary.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from jobs.training.metrics import balanced_auc, binary_metrics, operating_threshold, video_scores
from pipeline.aggregate import STRATEGIES
from pipeline.card import ModelCard, card_path, write_card
from pipeline.config import Settings

log = logging.getLogger(__name__)

DEFAULT_TARGET_FPR = 0.05
DEFAULT_MIN_TRACK_FRAMES = 4  # of 32 sampled frames: a face must be seen in 1/8 of the video to count


def fit_on_validation(records: list[dict], target_fpr: float = DEFAULT_TARGET_FPR,
                      min_track_frames: int = 1) -> tuple[str, float, dict[str, Any]]:
    """Per strategy: the threshold keeping every real source within ``target_fpr``; the best balanced AUC
    ships, ties (to 3 decimals) to the lower pooled false-positive rate."""
    comparison = {}
    for strategy in STRATEGIES:
        labels, scores, kept = video_scores(records, strategy, min_track_frames)
        sources = [r.get("source", "") for r in kept]
        threshold, per_source = operating_threshold(labels, scores, sources, target_fpr)
        reals = labels == 0
        comparison[strategy] = {**binary_metrics(labels, scores, threshold),
                                "roc_auc_balanced": balanced_auc(labels, scores, sources),
                                "fpr": float((scores[reals] >= threshold).mean()) if reals.any() else 0.0,
                                "fitted_threshold": threshold, "per_source_threshold": per_source}
    best = max(comparison, key=lambda s: (round(comparison[s]["roc_auc_balanced"] or 0, 3), -comparison[s]["fpr"]))
    return best, comparison[best]["fitted_threshold"], comparison


def fit_card(records: list[dict], card: ModelCard, checkpoint: Path, settings: Settings, split: str, sources: list[str],
             target_fpr: float = DEFAULT_TARGET_FPR, min_track_frames: int | None = None) -> dict[str, Any]:
    """Fit the operating point on these (validation) records and write it into ``card`` beside ``checkpoint``;
    returns the strategies' comparison. The minimum track: ``min_track_frames`` (the flag) > the settings' > 4."""
    min_track = min_track_frames or settings.classify.min_track_frames or DEFAULT_MIN_TRACK_FRAMES
    strategy, threshold, strategies = fit_on_validation(records, target_fpr, min_track)
    card.aggregation, card.threshold = strategy, threshold  # already at the card's precision
    card.min_track_frames, card.target_fpr = min_track, target_fpr
    if settings.classify.tta_flip is not None:  # the scores were made with this setting: it ships with them
        card.tta_flip = settings.classify.tta_flip
    card.metrics["validation_fit"] = {
        "split": split, "sources": sources, "aggregation": strategy,
        "threshold": card.threshold, "target_fpr": target_fpr, "min_track_frames": min_track, "tta_flip": card.tta_flip,
        "strategies": {k: {m: v[m] for m in ("roc_auc", "roc_auc_balanced", "log_loss", "f1", "fpr", "fitted_threshold")}
                       for k, v in strategies.items()}}
    write_card(card, checkpoint)
    # said out loud: without --checkpoint this rewrites the shipped detector's card
    log.warning("model card %s: operating point fitted on %s (%s, threshold %.4f) written", card_path(checkpoint),
                split, strategy, card.threshold)
    return strategies


def record_summary(card: ModelCard, checkpoint: Path, split: str, result: dict[str, Any]) -> None:
    """Store a report's summary metrics (``evaluate.report``'s result) in ``card`` beside ``checkpoint``."""
    o = result["overall"]
    summary = {k: o[k] for k in ("n", "f1", "precision", "recall", "accuracy", "roc_auc", "roc_auc_balanced", "log_loss",
                                 "tpr_at_fpr_0.01", "tpr_at_fpr_0.05", "tpr_at_fpr_0.1")}
    summary["roc_auc_ci95"] = o["roc_auc_ci95"]  # small test sets: the interval says what the AUC is worth
    summary["ece"] = result["calibration"]["ece"]
    summary["per_method_auc"] = {m: v["roc_auc"] for m, v in result["per_method"].items()}
    summary["per_method_auc_ci95"] = {m: v["roc_auc_ci95"] for m, v in result["per_method"].items()}
    summary["real_fpr"] = {s: v["fpr"] for s, v in result["real_sources"].items()}
    if "own_sources" in result:
        summary["own_sources_auc"] = result["own_sources"]["roc_auc"]
        summary["own_sources_auc_ci95"] = result["own_sources"]["roc_auc_ci95"]
    card.metrics[f"{split}_report"] = summary
    write_card(card, checkpoint)
    log.warning("model card %s: %s report's summary written", card_path(checkpoint), split)
