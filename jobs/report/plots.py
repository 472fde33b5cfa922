"""The report's pictures, as matplotlib ``Figure`` objects (no pyplot: no global state, no display needed).

Every plot answers one question in its title, labels both axes, counts in integers and marks the
decision threshold with a labelled line, drawn above the data. Days and runs stand at their dates (a missed night
is a gap), and weeks of them stay legible: dated ticks and no per-bar numbers past a few dozen bars, a fixed sample of
each day's scores as dots. Colours never encode the predicted label (that would only restate the threshold), and no
signal is colour alone: failed runs carry their status in words, the drift histogram's two sides and a suspect's
people differ by line style, hatching or marker as well, each named in a legend.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any, Sequence

import numpy as np
from matplotlib import dates as mdates
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from jobs.report.drift import Drift, histogram
from jobs.report.queries import DOTS_PER_DAY

INK, ACCENT, MUTED, ALERT = "#1f3b57", "#3b7dd8", "#9aa5b1", "#c0392b"
TICKED = 15     # bars up to this many get a tick each; beyond, dated ticks as many as fit
ANNOTATED = 30  # bars up to this many carry their numbers (turned upright past TICKED); beyond, only failed runs
# a suspect's people told apart without colour: marker and line style per track, in turn (no plain dashes: the
# threshold's); 8 markers and 3 styles pair differently for the first 24 people
MARKERS, LINES = "osD^v<>p", ("-", ":", "-.")


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
    for t in thresholds:  # above the dots and boxes: a cloud of objects must not hide where FAKE starts
        line = ax.axvline if vertical else ax.axhline
        line(t, color=ALERT, linestyle="--", linewidth=1.2, zorder=4, label=f"threshold {t:.3f} (score ≥ it → FAKE)")


def _figure(width: float = 7.5, height: float = 3.2) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _day_labels(days: Sequence[Any]) -> list[str]:
    return [d.isoformat() if hasattr(d, "isoformat") else plain(d) for d in days]


def _when(value: Any) -> float:
    """A day or a time as matplotlib's date number (days): bars stand at their dates, a missed night is a gap."""
    return float(mdates.date2num(value if isinstance(value, datetime) else np.datetime64(value, "D")))


def _date_axis(ax, x: Sequence[float], labels: Sequence[str], pad: float = 0.7) -> None:
    """A tick under each of up to ``TICKED`` bars, else as many dated ticks as fit; the axis spans the bars' dates."""
    if len(x) <= TICKED:
        ax.set_xticks(list(x), list(labels), rotation=30 if len(x) > 6 else 0, fontsize=8)
    else:
        locator = mdates.AutoDateLocator(minticks=3, maxticks=10)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    if len(x):
        ax.set_xlim(min(x) - pad, max(x) + pad)


def _width(x: Sequence[float], most: float = 0.6) -> float:
    """Bars no wider than the closest two are apart (runs a few hours apart do not overlap), nor thinner than 30 min."""
    gaps = np.diff(np.sort(np.asarray(x, np.float64)))
    gaps = gaps[gaps > 0]
    return float(np.clip(0.8 * gaps.min(), 1 / 48, most)) if gaps.size else most


def failed(run: dict) -> bool:
    """A run that ended otherwise than succeeded (a running one has not ended)."""
    return run["status"] not in ("succeeded", "running")


def still(timeline: list[tuple[int, float, float]]) -> bool:
    """An image (or one sampled frame): no time axis, one dot per person."""
    return len({s for _t, s, _v in timeline}) <= 1


def _ended(run: dict) -> str:
    """The run's status, with its exit code once it has one (a running scan has none yet)."""
    return plain(run["status"] if run["exit_code"] is None else f"{run['status']} ({run['exit_code']})")


def runs_plot(runs: list[dict]) -> Figure:
    """Objects each run scanned, at its start time; failed runs' bars are outlined red with their exit code. Up to
    ``ANNOTATED`` runs each carry their numbers; beyond, only the failed ones."""
    fig, ax = _figure()
    x = [_when(r["started_at"]) for r in runs]
    scanned = [r["scanned"] or 0 for r in runs]
    bad = [failed(r) for r in runs]
    width = _width(x)
    ax.bar(x, scanned, width=width, color=ACCENT, edgecolor=[ALERT if b else ACCENT for b in bad], linewidth=2)
    for i, r in enumerate(runs):
        if len(runs) <= ANNOTATED or bad[i]:
            ax.annotate(f"{r['scanned'] or 0} scanned\n{_ended(r)}", (x[i], scanned[i]), ha="center", va="bottom",
                        fontsize=7, rotation=90 if len(runs) > TICKED else 0, color=ALERT if bad[i] else INK)
    _date_axis(ax, x, [f"{r['started_at']:%m-%d %H:%M}" for r in runs], pad=max(width, 0.3))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max(scanned + [1]) * (1.3 if len(runs) <= TICKED else 1.6))
    ax.set(title="Runs: objects scanned per run (exit status in brackets)", xlabel="run start (UTC)",
           ylabel="objects scanned")
    return fig


def fake_rate_plot(days: list[dict]) -> Figure:
    """FAKE share of the objects scored each day, at its date, with the counts written on up to ``ANNOTATED`` bars."""
    fig, ax = _figure()
    x = [_when(d["day"]) for d in days]
    rates = [d["fake_rate"] or 0.0 for d in days]
    ax.bar(x, rates, width=0.6, color=ACCENT)
    if len(days) <= ANNOTATED:
        for i, d in enumerate(days):
            ax.annotate(f"{d['fakes']} of {d['fakes'] + d['reals']}", (x[i], rates[i]), ha="center", va="bottom",
                        fontsize=8 if len(days) <= TICKED else 6, rotation=90 if len(days) > TICKED else 0)
    _date_axis(ax, x, _day_labels([d["day"] for d in days]))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(0, 1.05 if len(days) <= TICKED else 1.25)
    ax.set(title="Fake rate per scan day (FAKE among FAKE + REAL)", xlabel="scan day (UTC)", ylabel="fake rate")
    return fig


def score_days_plot(score_days: list[dict], thresholds: Sequence[float]) -> Figure:
    """Each day's object scores (``queries.score_days``): a box for the spread (of every score), a dot per object
    of a fixed sample of at most ``DOTS_PER_DAY``, the threshold across and above them."""
    fig, ax = _figure()
    if score_days:
        x = [_when(d["day"]) for d in score_days]
        ax.bxp([{"med": d["med"], "q1": d["q1"], "q3": d["q3"], "whislo": d["whislo"], "whishi": d["whishi"],
                 "fliers": []} for d in score_days], positions=x, widths=0.5, showfliers=False, manage_ticks=False,
               medianprops={"color": INK}, boxprops={"color": MUTED}, whiskerprops={"color": MUTED},
               capprops={"color": MUTED})
        sampled = any(len(d["dots"]) < d["n"] for d in score_days)
        many = sum(len(d["dots"]) for d in score_days) > 500
        rng = np.random.default_rng(0)  # fixed jitter: the same output draws the same picture
        for i, d in enumerate(score_days):
            label = None if i else "one object" + (f" (at most {DOTS_PER_DAY} a day drawn)" if sampled else "")
            ax.scatter(x[i] + rng.uniform(-0.15, 0.15, len(d["dots"])), d["dots"], s=6 if many else 14, color=ACCENT,
                       alpha=0.5 if many else 0.8, linewidths=0, zorder=3, label=label)
        _date_axis(ax, x, [f"{lbl}\n(n={d['n']})" for lbl, d in zip(_day_labels([d["day"] for d in score_days]),
                                                                   score_days)])
    _threshold(ax, thresholds)
    ax.set_ylim(0, 1)
    ax.set(title="Object scores per scan day", xlabel="scan day (UTC)", ylabel="fake probability (object score)")
    ax.legend(loc="lower right", fontsize=7)
    return fig


def drift_plot(drift: Drift, thresholds: Sequence[float] = ()) -> Figure:
    """Share of objects per score bin: the latest scan against the trailing scans it is compared with."""
    fig, ax = _figure()
    edges = np.linspace(0, 1, drift.bins + 1)
    # trailing: a hatched grey area under a dotted edge; latest: a bold solid line (told apart without colour)
    for sample, name, colour, hatch, style, width in (
            (drift.reference, "trailing scans", MUTED, "///", ":", 1.5),
            (drift.latest, "latest scan", ALERT if drift.flagged else ACCENT, None, "-", 2.4)):
        if not sample.scores:
            continue
        counts = histogram(sample.scores, drift.bins)
        ax.stairs(counts / counts.sum(), edges, fill=bool(hatch), hatch=hatch, facecolor="none", edgecolor=colour,
                  linestyle=style, linewidth=width, label=f"{name} ({len(sample.scores)} objects)")
    _threshold(ax, thresholds, vertical=True)
    psi = "n/a" if drift.psi is None else f"{drift.psi:.2f}"
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlim(0, 1)
    ax.set(title=f"Score drift: PSI {psi} (flag above {drift.psi_threshold:.3g}) — {drift.status.upper()}",
           xlabel="fake probability (object score)", ylabel="share of objects")
    ax.legend(fontsize=7)
    return fig


def timeline_plot(timeline: list[tuple[int, float, float]], thresholds: Sequence[float], title: str = "") -> Figure:
    """Face scores over the video, one line per person (track); an image gets one dot per person. People differ
    in marker and line style as well as colour."""
    fig, ax = _figure(4.6, 2.3)
    tracks = sorted({t for t, _s, _v in timeline})
    image = still(timeline)
    for i, track in enumerate(tracks):
        xs, ys = zip(*[(s, v) for t, s, v in timeline if t == track])
        marker = MARKERS[i % len(MARKERS)]
        if image:
            ax.scatter([i] * len(ys), ys, s=30, marker=marker, label=f"person {track}", zorder=3)
        else:
            ax.plot(xs, ys, marker=marker, markersize=3.5, linestyle=LINES[i % len(LINES)], linewidth=1.2,
                    label=f"person {track}")
    _threshold(ax, thresholds)
    if image:
        ax.set_xticks(range(len(tracks)), [f"person {t}" for t in tracks])
        ax.set_xlim(-0.7, len(tracks) - 0.3)
    ax.set_ylim(0, 1)
    ax.set(title=plain(title) if title else "Face scores over time",
           xlabel="person (image)" if image else "time in video (s)", ylabel="face score")
    ax.title.set_fontsize(9)
    if tracks:
        ax.legend(fontsize=6, loc="lower right")
    return fig
