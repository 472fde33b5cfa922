"""An evaluation report as Markdown (``report-SPLIT.md``) and its reliability diagram (``reliability-SPLIT.png``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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
