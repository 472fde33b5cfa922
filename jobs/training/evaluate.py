"""``deepfakestream evaluate``: score labelled sets through the full inference graph and report.

A report covers one split of a main labelled set (e.g. FaceForensics++) plus, with ``--extra``, the same
split of other labelled sets (e.g. real-only sets kept out of training as false-positive checks). Per
object the graph's face scores, tracks and frame count are kept, so every aggregation strategy and the
minimum-track rule can be compared on one run.

``--fit`` is for the *validation* split only. It picks the operating point of a scanner, not of F1: for
each aggregation strategy the threshold is the lowest at which every real source of the split stays within
``--target-fpr`` false positives; the strategy with the best (source-balanced) ROC AUC ships, ties to the
lower pooled false-positive rate. Both go into the model card. Reports on any other split use the card's
values unchanged, so no reported number is tuned on its own data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from jobs.training.datasets import DEFAULT_SPLIT, LabelledVideo, load_labelled_videos, split_by_group
from jobs.training.metrics import auc_interval, balanced_weights, binary_metrics, calibration, operating_threshold, tpr_at_fpr
from pipeline.aggregate import STRATEGIES, effective_min_track, video_score
from pipeline.card import card_path, read_card, write_card
from pipeline.config import Settings
from pipeline.graph import ScoringPipeline

log = logging.getLogger(__name__)

DEFAULT_TARGET_FPR = 0.05
DEFAULT_MIN_TRACK_FRAMES = 4  # of 32 sampled frames: a face must be seen in 1/8 of the video to count


def source_name(source: str | Path) -> str:
    path = Path(source)
    return path.stem if path.suffix == ".csv" else path.name


def select_videos(source: str | Path, split: str, seed: int = 0, fractions: dict | None = None) -> list[LabelledVideo]:
    videos = load_labelled_videos(source)
    if split == "all":
        return videos
    splits = split_by_group(videos, fractions or DEFAULT_SPLIT, seed)
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(splits)} or 'all'")
    return splits[split]


def scoring_key(settings: Settings, tta_flip: bool) -> str:
    """What a cached face score depends on: the weights' bytes and the settings that make face scores (not the
    threshold or aggregation, which are applied afterwards). A version string alone is not enough: every
    ``train`` run is ``dev`` unless told otherwise."""
    weights = hashlib.sha256(Path(settings.classify.checkpoint).read_bytes()).hexdigest()
    graph = settings.model_dump(mode="json", include={"device", "decode", "detect", "classify"})
    for key in ("checkpoint", "threshold", "aggregation", "min_track_frames", "onnx_cache", "batch_size"):
        graph["classify"].pop(key, None)
    graph["classify"]["tta_flip"] = tta_flip
    return hashlib.sha256((weights + json.dumps(graph, sort_keys=True)).encode()).hexdigest()[:16]


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
    only for the same weights and scoring settings)."""
    from tqdm import tqdm

    done = _cached(cache) if cache and cache.exists() else {}
    scorer = ScoringPipeline(settings)
    version = scorer.card.version
    key = scoring_key(settings, scorer.scorer.classifier.tta_flip)
    records = []
    for video in tqdm(videos, desc=f"evaluate {source}", unit="object"):
        if video.path in done and done[video.path].get("scoring_key") == key:
            records.append(done[video.path])
            continue
        # the faces per track (aggregation ignores their order); re-aggregated below for every strategy
        result = scorer.score(video.path)
        faces = [(box.score, track.track) for track in result.tracks for box in track.boxes]
        record = {"path": video.path, "label": video.label, "method": video.method, "group": video.group,
                  "source": source, "model_version": version, "scoring_key": key, "error": result.error or "",
                  "frames_sampled": result.media.frames_sampled if result.media else 0,
                  "face_scores": [score for score, _ in faces], "face_track": [track for _, track in faces]}
        records.append(record)
        if cache:
            with cache.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
    return records


def video_scores(records: list[dict], strategy: str, min_track_frames: int = 1) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Labels and scores of the objects that get a verdict (the others are counted, not scored)."""
    labels, scores, kept = [], [], []
    for record in records:
        if record["error"]:
            continue
        min_frames = effective_min_track(min_track_frames, record.get("frames_sampled"))
        value = video_score(np.array(record["face_scores"]), np.array(record["face_track"]), strategy, min_frames)
        if value is None:
            continue
        labels.append(int(record["label"] == "FAKE"))
        scores.append(value)
        kept.append(record)
    return np.array(labels, int), np.array(scores, np.float64), kept


def balanced_auc(labels: np.ndarray, scores: np.ndarray, sources: list[str]) -> float | None:
    """ROC AUC with every real source weighing the same (see ``jobs.training.metrics.balanced_weights``)."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, scores, sample_weight=balanced_weights(labels, sources)))


def _quantiles(values: np.ndarray) -> dict[str, float]:
    names = ("min", "p25", "median", "p75", "p95", "max")
    return {n: round(float(q), 4) for n, q in zip(names, np.quantile(values, [0, 0.25, 0.5, 0.75, 0.95, 1]))}


def report(records: list[dict], threshold: float, strategy: str, min_track_frames: int = 1) -> dict[str, Any]:
    labels, scores, kept = video_scores(records, strategy, min_track_frames)
    sources = [r.get("source", "") for r in kept]
    fake_sources = sorted({s for s, y in zip(sources, labels) if y == 1})
    methods = sorted({r["method"] for r in kept if r["label"] == "FAKE"})
    per_method = {}
    for method in methods:  # each method's fakes against the reals of the sources that have fakes
        mask = np.array([(r["label"] == "REAL" and r.get("source", "") in fake_sources) or r["method"] == method for r in kept])
        per_method[method] = {**binary_metrics(labels[mask], scores[mask], threshold),
                              "roc_auc_ci95": auc_interval(labels[mask], scores[mask])}
    real_sources = {}
    for source in sorted({s for s, y in zip(sources, labels) if y == 0}):
        members = np.array([s == source and y == 0 for s, y in zip(sources, labels)])
        real_sources[source] = {"n": int(members.sum()), "false_positives": int((scores[members] >= threshold).sum()),
                                "fpr": float((scores[members] >= threshold).mean()), "scores": _quantiles(scores[members])}
    own = np.array([s in fake_sources for s in sources], bool)
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
        "per_video": [{"path": r["path"], "label": r["label"], "method": r["method"], "source": r.get("source", ""),
                       "score": round(float(s), 6)} for r, s in zip(kept, scores)],
    }
    if own.any() and own.sum() < len(own):
        result["own_sources"] = {"sources": fake_sources, **binary_metrics(labels[own], scores[own], threshold),
                                 "roc_auc_ci95": auc_interval(labels[own], scores[own])}
    return result


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


def reliability_plot(result: dict[str, Any], path: Path, title: str) -> Path | None:
    """Reliability diagram (mean score vs share of fakes per bin) as PNG; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (extra `train`): no reliability plot")
        return None
    bins = result["calibration"]["bins"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    ax.plot([b["mean_score"] for b in bins], [b["fake_share"] for b in bins], "o-", c="C3", label="this model")
    for b in bins:
        ax.annotate(str(b["n"]), (b["mean_score"], b["fake_share"]), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.axvline(result["threshold"], c="C0", lw=1, label=f"threshold {result['threshold']:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted fake probability (bin)", ylabel="share of fakes in bin",
           title=f"{title}\nECE {result['calibration']['ece']:.3f} (numbers: objects per bin)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _auc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _interval(value: list[float] | None) -> str:
    return "n/a" if value is None else f"{value[0]:.2f}–{value[1]:.2f}"


def markdown(result: dict[str, Any], title: str) -> str:
    o = result["overall"]
    lines = [f"# {title}", "", f"Model `{result['model_version']}`, split `{result['split']}`, sources "
             f"{', '.join(f'`{s}`' for s in result['sources'])}: {result['videos']} objects ({result['scored']} scored, "
             f"{result['no_face']} without a face or a track of {result['min_track_frames']}+ frames, {len(result['errors'])} errors). "
             f"Aggregation `{result['aggregation']}`, threshold {result['threshold']:.4f} ({result['threshold_source']}).", "",
             f"ROC AUC {_auc(o['roc_auc'])} (real sources weighed equally: {_auc(o['roc_auc_balanced'])}); "
             f"TPR at 1% / 5% / 10% FPR: {' / '.join(_auc(o[k]) for k in ('tpr_at_fpr_0.01', 'tpr_at_fpr_0.05', 'tpr_at_fpr_0.1'))}; "
             f"expected calibration error {result['calibration']['ece']:.3f}.", "",
             "| subset | objects | fakes | F1 | precision | recall | accuracy | ROC AUC | AUC 95% interval | log loss | TN/FP/FN/TP |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def row(name: str, m: dict) -> str:
        c = m["confusion"]
        return (f"| {name} | {m['n']} | {m['positives']} | {m['f1']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
                f"{m['accuracy']:.3f} | {_auc(m['roc_auc'])} | {_interval(m.get('roc_auc_ci95'))} | {m['log_loss']:.3f} | "
                f"{c['tn']}/{c['fp']}/{c['fn']}/{c['tp']} |")

    lines.append(row("all", o))
    if "own_sources" in result:
        lines.append(row(f"{'+'.join(result['own_sources']['sources'])} only", result["own_sources"]))
    for method, m in result["per_method"].items():
        lines.append(row(f"reals vs {method}", m))
    lines += ["", "AUC 95% interval: percentile bootstrap (1,000 draws, reals and fakes resampled separately). Videos "
              "that share a person are drawn as if independent, so the true interval is wider still.",
              "", "Real objects per source at the threshold (score quantiles show photos vs video frames):", "",
              "| real source | objects | called FAKE | FPR | min | p25 | median | p75 | p95 | max |", "|---|---|---|---|---|---|---|---|---|---|"]
    for source, r in result["real_sources"].items():
        q = r["scores"]
        lines.append(f"| {source} | {r['n']} | {r['false_positives']} | {r['fpr']:.3f} | {q['min']:.3f} | {q['p25']:.3f} | "
                     f"{q['median']:.3f} | {q['p75']:.3f} | {q['p95']:.3f} | {q['max']:.3f} |")
    lines += ["", "Calibration (equal-width bins):", "", "| bin | objects | mean score | share fake |", "|---|---|---|---|"]
    for b in result["calibration"]["bins"]:
        lines.append(f"| {b['bin'][0]:.1f}–{b['bin'][1]:.1f} | {b['n']} | {b['mean_score']:.3f} | {b['fake_share']:.3f} |")
    if result.get("plot"):
        lines += ["", f"![reliability]({result['plot']})"]
    if result.get("strategies"):
        lines += ["", "Aggregation strategies on this split (minimum-track rule applied; each at the card threshold "
                  "unless fitted here):", "", "| strategy | ROC AUC | balanced AUC | log loss | F1 | FPR | threshold |", "|---|---|---|---|---|---|---|"]
        for name, m in result["strategies"].items():
            lines.append(f"| {name} | {_auc(m['roc_auc'])} | {_auc(m.get('roc_auc_balanced'))} | {m['log_loss']:.3f} | {m['f1']:.3f} | "
                         f"{m.get('fpr', float('nan')):.3f} | {m['threshold']:.4f} |")
    return "\n".join(lines) + "\n"


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
    if fit:
        min_track = min_track_frames or settings.classify.min_track_frames or DEFAULT_MIN_TRACK_FRAMES
    else:
        min_track = settings.classify.min_track_frames or card.min_track_frames
    strategies = {}
    if fit:
        strategy, threshold, strategies = fit_on_validation(records, target_fpr, min_track)
        card.aggregation, card.threshold = strategy, threshold  # already at the card's precision
        card.min_track_frames, card.target_fpr = min_track, target_fpr
        if settings.classify.tta_flip is not None:  # the scores were made with this setting: it ships with them
            card.tta_flip = settings.classify.tta_flip
        card.metrics["validation_fit"] = {
            "split": split, "sources": [source_name(s) for s in [source, *(extra or [])]], "aggregation": strategy,
            "threshold": card.threshold, "target_fpr": target_fpr, "min_track_frames": min_track, "tta_flip": card.tta_flip,
            "strategies": {k: {m: v[m] for m in ("roc_auc", "roc_auc_balanced", "log_loss", "f1", "fpr", "fitted_threshold")}
                           for k, v in strategies.items()}}
        write_card(card, checkpoint)
        # said out loud: without --checkpoint this rewrites the shipped detector's card
        log.warning("model card %s: operating point fitted on %s (%s, threshold %.4f) written", card_path(checkpoint),
                    split, strategy, card.threshold)
        source_note = f"fitted on this split ({split}) for {target_fpr:.0%} FPR per real source — optimistic here"
    else:
        source_note = "from the model card, fixed on the validation split"
    strategy = settings.classify.aggregation or card.aggregation
    threshold = settings.classify.threshold if settings.classify.threshold is not None else card.threshold
    result = {"model_version": card.version, "split": split, "threshold_source": source_note,
              "sources": [source_name(s) for s in [source, *(extra or [])]],
              **report(records, threshold, strategy, min_track)}
    result["strategies"] = strategies or {name: {**report(records, threshold, name, min_track)["overall"], "fpr": float("nan")}
                                          for name in STRATEGIES}
    plot = reliability_plot(result, out_dir / f"reliability-{split}.png", f"{card.version} — {split}")
    result["plot"] = plot.name if plot else None
    (out_dir / f"report-{split}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"report-{split}.md").write_text(markdown(result, f"Evaluation report — {split} split"))
    if record and not fit:
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
    return result
