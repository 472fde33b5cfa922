"""``deepfakestream evaluate``: score labelled sets through the full inference graph and report.

A report covers one split of a main labelled set (e.g. FaceForensics++) plus, with ``--extra``, the same
split of other labelled sets (e.g. real-only sets kept out of training as false-positive checks). Per
object the graph's face scores, tracks and frame count are kept, so every aggregation strategy and the
minimum-track rule can be compared on one run.

``--fit`` (validation split only) and ``--record`` write the model card (``jobs.training.fit``); the Markdown
report and its reliability plot are ``jobs.training.report_md``'s.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from jobs.training.datasets import DEFAULT_SPLIT, LabelledVideo, load_labelled_videos, split_by_group
from jobs.training.fit import DEFAULT_TARGET_FPR, fit_card, record_summary
from jobs.training.metrics import (NothingScoredError, auc_interval, balanced_auc, binary_metrics, calibration, own_sources,
                                   tpr_at_fpr, video_scores)
from jobs.training.report_md import markdown, reliability_plot
from pipeline.aggregate import STRATEGIES
from pipeline.card import read_card
from pipeline.config import Settings
from pipeline.graph import ScoringPipeline, stage_specs
from pipeline.result import shown_score
from pipeline.scoring_key import SCAN_REVISION, scoring_key as pipeline_scoring_key, weights_digest

log = logging.getLogger(__name__)


def source_name(source: str | Path) -> str:
    path = Path(source)
    return path.stem if path.suffix.lower() == ".csv" else path.name


def select_videos(source: str | Path, split: str, seed: int = 0, fractions: dict | None = None) -> list[LabelledVideo]:
    videos = load_labelled_videos(source)
    if split == "all":
        return videos
    splits = split_by_group(videos, fractions or DEFAULT_SPLIT, seed)
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(splits)} or 'all'")
    return splits[split]


def scoring_key(settings: Settings, tta_flip: bool) -> str:
    """The cache key of face scores (``pipeline/scoring_key.py``): the threshold and aggregation are applied
    afterwards, so they do not count; the engine settings do, as they always have here (old caches stay valid)."""
    weights = weights_digest(Path(settings.classify.checkpoint).read_bytes())
    return pipeline_scoring_key(settings, weights, verdict=False, engine=True, tta_flip=tta_flip)


def _cached(cache: Path) -> dict[str, dict]:
    """path -> record of the cache file; a line cut off by an interrupted run is skipped (it is scored again)."""
    done: dict[str, dict] = {}
    for number, line in enumerate(cache.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
            done[record["path"]] = record
        except (ValueError, KeyError, TypeError):
            log.warning("%s line %d is not a whole record (an interrupted run?): that object is scored again", cache, number)
    return done


def score_videos(videos: list[LabelledVideo], settings: Settings, cache: Path | None = None, source: str = "") -> list[dict[str, Any]]:
    """Run the graph on every object; per-object face scores, tracks and frames (cached as JSON Lines, reused
    only for the same weights, scoring settings and scoring code: ``SCAN_REVISION``, which the key leaves out so
    that it stays the one old caches hold; a record of older code is scored again)."""
    from tqdm import tqdm

    done = _cached(cache) if cache and cache.exists() else {}
    scorer = ScoringPipeline(settings)
    version = scorer.card.version
    key = scoring_key(settings, scorer.scorer.classifier.tta_flip)
    records = []
    for video in tqdm(videos, desc=f"evaluate {source}", unit="object"):
        cached = done.get(video.path, {})
        if cached.get("scoring_key") == key and cached.get("revision") == SCAN_REVISION:  # same weights, settings, code
            # the scores are the weights'; what the object is, is the labels' as they read now
            records.append({**done[video.path], "label": video.label, "method": video.method, "group": video.group,
                            "source": source})
            continue
        # the faces per track with their frames (aggregation ignores their order); re-aggregated per strategy
        # (metrics.video_scores)
        result = scorer.score(video.path)
        faces = [(box.score, track.track, box.frame) for track in result.tracks for box in track.boxes]
        record = {"path": video.path, "label": video.label, "method": video.method, "group": video.group,
                  "source": source, "model_version": version, "scoring_key": key, "revision": SCAN_REVISION,
                  "error": result.error or "",
                  "frames_sampled": result.media.frames_sampled if result.media else 0,
                  "face_scores": [score for score, _, _ in faces], "face_track": [track for _, track, _ in faces],
                  "face_frame": [frame for _, _, frame in faces]}
        records.append(record)
        if cache:
            with cache.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
    return records


def _quantiles(values: np.ndarray, threshold: float) -> dict[str, float]:
    names = ("min", "p25", "median", "p75", "p95", "max")
    return {n: shown_score(float(q), threshold, 4) for n, q in zip(names, np.quantile(values, [0, 0.25, 0.5, 0.75, 0.95, 1]))}


def _at_card(overall: dict[str, Any]) -> dict[str, Any]:
    """A strategy's row at the card's threshold, with its false-positive rate over every real (as the fit gives it)."""
    reals = overall["confusion"]["tn"] + overall["confusion"]["fp"]
    return {**overall, "fpr": overall["confusion"]["fp"] / reals if reals else 0.0}


def report(records: list[dict], threshold: float, strategy: str, min_track_frames: int = 1) -> dict[str, Any]:
    labels, scores, kept = video_scores(records, strategy, min_track_frames)
    sources = [r.get("source", "") for r in kept]
    fake_sources, own = own_sources(labels, sources)
    methods = sorted({r["method"] for r in kept if r["label"] == "FAKE"})
    per_method = {}
    for method in methods:  # each method's fakes against the reals of the sources that have fakes
        mask = np.array([(r["label"] == "REAL" and from_own) or r["method"] == method for r, from_own in zip(kept, own)])
        per_method[method] = {**binary_metrics(labels[mask], scores[mask], threshold),
                              "roc_auc_ci95": auc_interval(labels[mask], scores[mask])}
    real_sources = {}
    for source in sorted({s for s, y in zip(sources, labels) if y == 0}):
        members = np.array([s == source and y == 0 for s, y in zip(sources, labels)])
        real_sources[source] = {"n": int(members.sum()), "false_positives": int((scores[members] >= threshold).sum()),
                                "fpr": float((scores[members] >= threshold).mean()), "scores": _quantiles(scores[members], threshold)}
    result = {
        "aggregation": strategy, "threshold": threshold, "min_track_frames": min_track_frames,
        "videos": len(records), "scored": len(kept),
        "no_face": sum(1 for r in records if not r["error"]) - len(kept),
        "errors": [{"path": r["path"], "error": r["error"]} for r in records if r["error"]],
        "overall": {**binary_metrics(labels, scores, threshold), **tpr_at_fpr(labels, scores),
                    "roc_auc_ci95": auc_interval(labels, scores),
                    "roc_auc_balanced": balanced_auc(labels, scores, sources)},
        "calibration": calibration(labels, scores),
        "per_method": per_method, "real_sources": real_sources,
        # rounded as `score --json` shows it, never across the threshold: a real just under it must not read as on it
        "per_video": [{"path": r["path"], "label": r["label"], "method": r["method"], "source": r.get("source", ""),
                       "score": shown_score(float(s), threshold)} for r, s in zip(kept, scores)],
    }
    if own.any() and own.sum() < len(own):
        result["own_sources"] = {"sources": fake_sources, **binary_metrics(labels[own], scores[own], threshold),
                                 "roc_auc_ci95": auc_interval(labels[own], scores[own])}
    return result


def evaluate(source: str | Path, split: str, settings: Settings, out_dir: Path, fit: bool = False, seed: int = 0,
             record: bool = False, extra: list[Path] | None = None, target_fpr: float = DEFAULT_TARGET_FPR,
             min_track_frames: int | None = None) -> dict[str, Any]:
    """Score ``split`` of ``source`` (+ ``extra`` sets) and write report-SPLIT.json/.md/.png. The model
    card is written only when asked: ``fit`` stores the validation operating point, ``record`` the summary."""
    if fit and split != "val":  # the shipped threshold is tuned on validation only, never on what it is judged on
        raise ValueError(f"--fit chooses the operating point on the validation split only (--split val, not {split})")
    if fit and record:
        raise ValueError("--fit writes the operating point and --record a report's summary: run them as two commands "
                         "(fit on val, then --record on test)")
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(settings.classify.checkpoint)
    card = read_card(checkpoint)  # before any scoring: a missing detector is said as every command says it
    records = []
    for src in [source, *(extra or [])]:
        name = source_name(src)
        records += score_videos(select_videos(src, split, seed), settings, out_dir / f"scores-{split}-{name}.jsonl", name)
    sources = [source_name(s) for s in [source, *(extra or [])]]
    if not any(r["face_scores"] and not r["error"] for r in records):
        errors = sum(1 for r in records if r["error"])
        raise NothingScoredError(f"nothing to report on the {split} split of {', '.join(sources)}: {len(records)} objects, "
                                 f"{errors} unreadable, {len(records) - errors} without a face; no report or card written")
    strategies = {}
    if fit:
        strategies = fit_card(records, card, checkpoint, settings, split, sources, target_fpr, min_track_frames)
        source_note = f"fitted on this split ({split}) for {target_fpr:.0%} FPR per real source — optimistic here"
    else:
        source_note = "from the model card, fixed on the validation split"
    if fit:  # the report is at what was just fitted (the fit's own min-track choice: flag > settings > 4)
        strategy, threshold, min_track = card.aggregation, card.threshold, card.min_track_frames
    else:  # at the scanner's verdict: the graph's one rule for settings over the card
        verdict = stage_specs(settings, card=card)[-1].kwargs
        strategy, threshold, min_track = verdict["aggregation"], verdict["threshold"], verdict["min_track_frames"]
    result = {"model_version": card.version, "split": split, "threshold_source": source_note, "sources": sources,
              **report(records, threshold, strategy, min_track)}
    result["strategies"] = strategies or {name: _at_card(report(records, threshold, name, min_track)["overall"])
                                          for name in STRATEGIES}
    plot = reliability_plot(result, out_dir / f"reliability-{split}.png", f"{card.version} — {split}")
    result["plot"] = plot.name if plot else None
    (out_dir / f"report-{split}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"report-{split}.md").write_text(markdown(result, f"Evaluation report — {split} split"))
    if record and not fit:
        record_summary(card, checkpoint, split, result)
    return result
