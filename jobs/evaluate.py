"""``deepfakestream evaluate``: score a labelled video set through the full inference graph and report.

Per video, the graph's face scores are kept so every aggregation strategy can be compared on the same
run. The report (JSON + Markdown) gives F1, precision, recall, accuracy, ROC AUC, log loss and the
confusion matrix, overall and per manipulation method (each method's fakes against all reals).

``--fit`` is for a *validation* split only: it picks the aggregation strategy (best ROC AUC, then log
loss) and the F1-maximising threshold there and writes both into the checkpoint's model card. Reports on
any other split use the card's threshold unchanged, so no reported number is tuned on its own data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from jobs.datasets import DEFAULT_SPLIT, LabelledVideo, load_labelled_videos, split_by_group
from jobs.metrics import best_f1_threshold, binary_metrics
from pipeline.aggregate import STRATEGIES, video_score
from pipeline.checkpoint import ModelCard, card_path
from pipeline.config import Settings
from pipeline.graph import ScoringPipeline, rows_of
from pipeline.batch import object_column

log = logging.getLogger(__name__)


def select_videos(source: str | Path, split: str, seed: int = 0, fractions: dict | None = None) -> list[LabelledVideo]:
    videos = load_labelled_videos(source)
    if split == "all":
        return videos
    splits = split_by_group(videos, fractions or DEFAULT_SPLIT, seed)
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(splits)} or 'all'")
    return splits[split]


def score_videos(videos: list[LabelledVideo], settings: Settings, cache: Path | None = None) -> list[dict[str, Any]]:
    """Run the graph on every video; returns per-video face scores + tracks (cached as JSON Lines)."""
    from tqdm import tqdm

    done: dict[str, dict] = {}
    if cache and cache.exists():
        for line in cache.read_text().splitlines():
            record = json.loads(line)
            done[record["path"]] = record
    scorer = ScoringPipeline(settings)
    version = scorer.card.version
    records = []
    for video in tqdm(videos, desc="evaluate", unit="video"):
        if video.path in done and done[video.path].get("model_version") == version:
            records.append(done[video.path])
            continue
        s = scorer.stages
        row = rows_of(s.classify(s.detect(s.decode({"uri": object_column([video.path])}))))[0]
        record = {"path": video.path, "label": video.label, "method": video.method, "group": video.group,
                  "model_version": version, "error": str(row["error"] or ""),
                  "face_scores": np.asarray(row["face_scores"], float).round(6).tolist(),
                  "face_track": np.asarray(row["face_track"], int).tolist()}
        records.append(record)
        if cache:
            with cache.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
    return records


def video_scores(records: list[dict], strategy: str) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Labels and scores of the videos that have faces (the others are counted, not scored)."""
    labels, scores, kept = [], [], []
    for record in records:
        value = None if record["error"] else video_score(np.array(record["face_scores"]), np.array(record["face_track"]), strategy)
        if value is None:
            continue
        labels.append(int(record["label"] == "FAKE"))
        scores.append(value)
        kept.append(record)
    return np.array(labels), np.array(scores), kept


def report(records: list[dict], threshold: float, strategy: str) -> dict[str, Any]:
    labels, scores, kept = video_scores(records, strategy)
    methods = sorted({r["method"] for r in kept if r["label"] == "FAKE"})
    per_method = {}
    for method in methods:
        mask = np.array([r["label"] == "REAL" or r["method"] == method for r in kept])
        per_method[method] = binary_metrics(labels[mask], scores[mask], threshold)
    return {
        "aggregation": strategy, "threshold": threshold,
        "videos": len(records), "scored": len(kept),
        "no_face": sum(1 for r in records if not r["error"] and not r["face_scores"]),
        "errors": [{"path": r["path"], "error": r["error"]} for r in records if r["error"]],
        "overall": binary_metrics(labels, scores, threshold), "per_method": per_method,
        "per_video": [{"path": r["path"], "label": r["label"], "method": r["method"], "score": round(float(s), 6)}
                      for r, s in zip(kept, scores)],
    }


def fit_on_validation(records: list[dict]) -> tuple[str, float, dict[str, Any]]:
    """Choose aggregation (ROC AUC, then lower log loss) and the F1-best threshold on validation records."""
    comparison = {}
    for strategy in STRATEGIES:
        labels, scores, _ = video_scores(records, strategy)
        threshold = best_f1_threshold(labels, scores)
        comparison[strategy] = {**binary_metrics(labels, scores, threshold), "fitted_threshold": threshold}
    best = max(comparison, key=lambda s: ((comparison[s]["roc_auc"] or 0), -comparison[s]["log_loss"]))
    return best, comparison[best]["fitted_threshold"], comparison


def markdown(result: dict[str, Any], title: str) -> str:
    lines = [f"# {title}", "", f"Model `{result['model_version']}`, split `{result['split']}`, "
             f"{result['videos']} videos ({result['scored']} scored, {result['no_face']} without a face, "
             f"{len(result['errors'])} errors). Aggregation `{result['aggregation']}`, threshold "
             f"{result['threshold']:.4f} ({result['threshold_source']}).", "",
             "| subset | videos | fakes | F1 | precision | recall | accuracy | ROC AUC | log loss | TN/FP/FN/TP |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def row(name: str, m: dict) -> str:
        auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
        c = m["confusion"]
        return (f"| {name} | {m['n']} | {m['positives']} | {m['f1']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
                f"{m['accuracy']:.3f} | {auc} | {m['log_loss']:.3f} | {c['tn']}/{c['fp']}/{c['fn']}/{c['tp']} |")

    lines.append(row("all", result["overall"]))
    for method, m in result["per_method"].items():
        lines.append(row(f"reals vs {method}", m))
    if result.get("strategies"):
        lines += ["", "Aggregation strategies on this split (each at the card threshold):", "",
                  "| strategy | ROC AUC | log loss | F1 |", "|---|---|---|---|"]
        for name, m in result["strategies"].items():
            auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
            lines.append(f"| {name} | {auc} | {m['log_loss']:.3f} | {m['f1']:.3f} |")
    return "\n".join(lines) + "\n"


def evaluate(source: str | Path, split: str, settings: Settings, out_dir: Path, fit: bool = False, seed: int = 0,
             record: bool = False) -> dict[str, Any]:
    """Score ``split`` and write report-SPLIT.json/.md. The model card is written only when asked:
    ``fit`` stores the validation-fitted aggregation and threshold, ``record`` stores this report's summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    videos = select_videos(source, split, seed)
    records = score_videos(videos, settings, cache=out_dir / f"scores-{split}.jsonl")
    checkpoint = Path(settings.classify.checkpoint)
    card = ModelCard.model_validate_json(card_path(checkpoint).read_text())
    if fit:
        strategy, threshold, comparison = fit_on_validation(records)
        card.aggregation, card.threshold = strategy, round(threshold, 6)
        card.metrics["validation_fit"] = {"split": split, "aggregation": strategy, "threshold": card.threshold,
                                          "strategies": {k: {m: v[m] for m in ("roc_auc", "log_loss", "f1", "fitted_threshold")}
                                                         for k, v in comparison.items()}}
        card_path(checkpoint).write_text(card.model_dump_json(indent=2) + "\n")
        source_note = f"fitted on this split ({split}) — optimistic for this split"
    else:
        source_note = "from the model card, fixed on the validation split"
    strategy = settings.classify.aggregation or card.aggregation
    threshold = settings.classify.threshold if settings.classify.threshold is not None else card.threshold
    result = {"model_version": card.version, "split": split, "threshold_source": source_note, **report(records, threshold, strategy)}
    result["strategies"] = {name: report(records, threshold, name)["overall"] for name in STRATEGIES}
    (out_dir / f"report-{split}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"report-{split}.md").write_text(markdown(result, f"Evaluation report — {split} split"))
    if record and not fit:
        card.metrics[f"{split}_report"] = {k: result["overall"][k] for k in ("n", "f1", "precision", "recall", "accuracy", "roc_auc", "log_loss")}
        card.metrics[f"{split}_report"]["per_method_auc"] = {m: v["roc_auc"] for m, v in result["per_method"].items()}
        card_path(checkpoint).write_text(card.model_dump_json(indent=2) + "\n")
    return result
