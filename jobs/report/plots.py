"""The report's pictures, as matplotlib ``Figure`` objects (no pyplot: no global state, no display needed).

Every plot answers one question in its title, labels both axes, counts in integers and marks the
decision threshold with a labelled line. Colours never encode the predicted label: that would only
restate the threshold.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from jobs.report.drift import Drift

INK, ACCENT, MUTED, ALERT = "#1f3b57", "#3b7dd8", "#9aa5b1", "#c0392b"


def plain(text: Any) -> str:
    """``text`` from the data (object keys, scan ids, statuses) drawn as it is: matplotlib reads a pair of ``$`` as
    mathtext (``cost_$100_$200.mp4`` fails to parse); an escaped ``\\$`` is drawn as ``$``. Escaping, unlike
    ``parse_math=False``, also holds for the tick labels matplotlib makes anew at draw time."""
    return str(text).replace("$", r"\$")


def png(fig: Figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def _threshold(ax, thresholds: Sequence[float], vertical: bool = False) -> None:
    for t in thresholds:
        line = ax.axvline if vertical else ax.axhline
        line(t, color=ALERT, linestyle="--", linewidth=1.2, label=f"threshold {t:.3f} (score ≥ it → FAKE)")


def _figure(width: float = 7.5, height: float = 3.2) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _day_labels(days: Sequence[Any]) -> list[str]:
    return [d.isoformat() if hasattr(d, "isoformat") else plain(d) for d in days]


def _ended(run: dict) -> str:
    """The run's status, with its exit code once it has one (a running scan has none yet)."""
    return plain(run["status"] if run["exit_code"] is None else f"{run['status']} ({run['exit_code']})")


def runs_plot(runs: list[dict]) -> Figure:
    """Objects each run scanned, in start order; failed runs' bars are outlined red with their exit code."""
    fig, ax = _figure()
    x = np.arange(len(runs))
    scanned = [r["scanned"] or 0 for r in runs]
    bad = [r["status"] not in ("succeeded", "running") for r in runs]
    ax.bar(x, scanned, color=ACCENT, edgecolor=[ALERT if b else ACCENT for b in bad], linewidth=2)
    for i, r in enumerate(runs):
        ax.annotate(f"{r['scanned'] or 0} scanned\n{_ended(r)}", (i, scanned[i]),
                    ha="center", va="bottom", fontsize=7, color=ALERT if bad[i] else INK)
    ax.set_xticks(x, [f"{r['started_at']:%m-%d %H:%M}" if r.get("started_at") else plain(r["scan_id"]) for r in runs],
                  rotation=30 if len(runs) > 6 else 0, fontsize=8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max(scanned + [1]) * 1.3)
    ax.set(title="Runs: objects scanned per run (exit status in brackets)", xlabel="run start (UTC)",
           ylabel="objects scanned")
    return fig


def fake_rate_plot(days: list[dict]) -> Figure:
    """FAKE share of the objects scored each day, with the counts written on the bars."""
    fig, ax = _figure()
    x = np.arange(len(days))
    rates = [d["fake_rate"] or 0.0 for d in days]
    ax.bar(x, rates, color=ACCENT)
    for i, d in enumerate(days):
        ax.annotate(f"{d['fakes']} of {d['fakes'] + d['reals']}", (i, rates[i]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, _day_labels([d["day"] for d in days]), fontsize=8)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(0, 1.05)
    ax.set(title="Fake rate per scan day (FAKE among FAKE + REAL)", xlabel="scan day (UTC)", ylabel="fake rate")
    return fig


def score_days_plot(day_scores: dict[Any, list[float]], thresholds: Sequence[float]) -> Figure:
    """Each day's object scores: a box for the spread, a dot per object, the threshold across."""
    fig, ax = _figure()
    days = list(day_scores)
    data = [day_scores[d] for d in days]
    if data:
        ax.boxplot(data, positions=range(len(days)), widths=0.5, showfliers=False,
                   medianprops={"color": INK}, boxprops={"color": MUTED}, whiskerprops={"color": MUTED},
                   capprops={"color": MUTED})
        rng = np.random.default_rng(0)  # fixed jitter: the same output draws the same picture
        for i, scores in enumerate(data):
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(scores)), scores, s=14, color=ACCENT, alpha=0.8, zorder=3,
                       label="one object" if i == 0 else None)
        ax.set_xticks(range(len(days)), [f"{lbl}\n(n={len(s)})" for lbl, s in zip(_day_labels(days), data)], fontsize=8)
    _threshold(ax, thresholds)
    ax.set_ylim(0, 1)
    ax.set(title="Object scores per scan day", xlabel="scan day (UTC)", ylabel="fake probability (object score)")
    ax.legend(loc="lower right", fontsize=7)
    return fig


def drift_plot(drift: Drift, thresholds: Sequence[float] = ()) -> Figure:
    """Share of objects per score bin: the latest scan against the trailing scans it is compared with."""
    fig, ax = _figure()
    edges = np.linspace(0, 1, drift.bins + 1)
    for sample, name, colour, style in ((drift.reference, "trailing scans", MUTED, "-"),
                                        (drift.latest, "latest scan", ALERT if drift.flagged else ACCENT, "-")):
        if not sample.scores:
            continue
        counts = np.histogram(np.clip(sample.scores, 0, 1), bins=edges)[0]
        ax.stairs(counts / counts.sum(), edges, color=colour, linestyle=style, linewidth=2,
                  label=f"{name} ({len(sample.scores)} objects)")
    _threshold(ax, thresholds, vertical=True)
    psi = "n/a" if drift.psi is None else f"{drift.psi:.2f}"
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlim(0, 1)
    ax.set(title=f"Score drift: PSI {psi} (flag above {drift.psi_threshold:.3g}) — {drift.status.upper()}",
           xlabel="fake probability (object score)", ylabel="share of objects")
    ax.legend(fontsize=7)
    return fig


def timeline_plot(timeline: list[tuple[int, float, float]], thresholds: Sequence[float], title: str = "") -> Figure:
    """Face scores over the video, one line per person (track); an image gets one dot per person."""
    fig, ax = _figure(4.6, 2.3)
    tracks = sorted({t for t, _s, _v in timeline})
    still = len({s for _t, s, _v in timeline}) <= 1  # an image (or one sampled frame): no time axis
    for i, track in enumerate(tracks):
        xs, ys = zip(*[(s, v) for t, s, v in timeline if t == track])
        if still:
            ax.scatter([i] * len(ys), ys, s=30, label=f"person {track}", zorder=3)
        else:
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, label=f"person {track}")
    _threshold(ax, thresholds)
    if still:
        ax.set_xticks(range(len(tracks)), [f"person {t}" for t in tracks])
        ax.set_xlim(-0.7, len(tracks) - 0.3)
    ax.set_ylim(0, 1)
    ax.set(title=plain(title) if title else "Face scores over time",
           xlabel="person (image)" if still else "time in video (s)", ylabel="face score")
    ax.title.set_fontsize(9)
    if tracks:
        ax.legend(fontsize=6, loc="lower right")
    return fig
