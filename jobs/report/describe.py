"""The report's pictures in words, from the data each one draws: its alt text (what a screen reader says in its
place) and, where cheap, its numbers as text. The page and the notebook both use these, so a plot and its words
never disagree; "face scores over time" under every suspect told a listener nothing."""

from __future__ import annotations

from typing import Sequence

from jobs.report.drift import Drift, Sample, histogram
from jobs.report.plots import failed, still

PEOPLE_LISTED = 5  # people of one suspect spelled out under its timeline; a crowd ends "and N more people"


def pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def num(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _n(count: int, word: str, plural: str = "") -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def thresholds_text(thresholds: Sequence[float]) -> str:
    if not thresholds:
        return "no threshold recorded"
    return ("threshold " if len(thresholds) == 1 else "thresholds ") + ", ".join(f"{t:.3f}" for t in thresholds)


def _above(scores: Sequence[float], thresholds: Sequence[float], named: bool = False) -> str:
    """How many scores reach the threshold (``named``: and which it is); under several, which one judged a face is
    not known here: only they are named."""
    if len(thresholds) != 1:
        return f" ({thresholds_text(thresholds)})" if named and thresholds else ""
    return f", {sum(s >= thresholds[0] for s in scores)} at or above the threshold" + (
        f" {thresholds[0]:.3f}" if named else "")


def _span(first, last, unit: str = "") -> str:
    return f"{first}{unit}" if first == last else f"{first} to {last}{unit}"


def _range(values: Sequence[float], word: str = "scores") -> str:
    low, high = min(values), max(values)
    if len(values) == 1:
        return f"score {low:.2f}"
    return f"{word} all {low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{word} {low:.2f} to {high:.2f}"


def thumb_alt(score: float) -> str:
    return f"face crop, score {score:.2f}"


def timeline_alt(name: str, timeline: list[tuple[int, float, float]], thresholds: Sequence[float]) -> str:
    """One suspect's face-score plot: who, how many faces, over what span, how many reach the threshold."""
    seconds, scores = [s for _t, s, _v in timeline], [v for *_, v in timeline]
    span = "" if still(timeline) else f" over {min(seconds):.1f} to {max(seconds):.1f} s of video"
    return (f"Face scores of {name}{span}: {_n(len({t for t, *_ in timeline}), 'person', 'people')}, "
            f"{_n(len(scores), 'face')}, {_range(scores)}{_above(scores, thresholds, named=True)}.")


def timeline_people(timeline: list[tuple[int, float, float]], thresholds: Sequence[float]) -> list[str]:
    """The same plot person by person (track by track), the first ``PEOPLE_LISTED`` of them."""
    tracks = sorted({t for t, *_ in timeline})
    lines = []
    for track in tracks[:PEOPLE_LISTED]:
        seconds = [s for t, s, _v in timeline if t == track]
        scores = [v for t, _s, v in timeline if t == track]
        span = "" if still(timeline) else f", {min(seconds):.1f} to {max(seconds):.1f} s"
        lines.append(f"person {track}: {_n(len(scores), 'face')}, {_range(scores)}{_above(scores, thresholds)}{span}")
    if len(tracks) > PEOPLE_LISTED:
        lines.append(f"and {_n(len(tracks) - PEOPLE_LISTED, 'more person', 'more people')}")
    return lines


def runs_alt(runs: list[dict]) -> str:
    """The runs plot: how many runs over what span, how much they scanned, which did not succeed."""
    scanned = [r["scanned"] or 0 for r in runs]
    bad = [f"{r['scan_id']} {r['status']}" for r in runs if failed(r)]
    at = [f"{r['started_at']:%Y-%m-%d %H:%M}" for r in (runs[0], runs[-1])]
    return (f"Objects scanned per run: {_n(len(runs), 'run')}, {_span(*at, ' UTC')}, "
            f"{_span(min(scanned), max(scanned))} {'object' if max(scanned) == 1 else 'objects'} "
            f"{'each' if len(runs) > 1 else 'scanned'}; "
            + (f"{_n(len(bad), 'run')} did not succeed ({', '.join(bad[:5])}{', …' if len(bad) > 5 else ''})"
               if bad else "none failed") + ". The runs table lists each run.")


def fake_rate_alt(days: list[dict]) -> str:
    """The fake-rate plot: the span, the lowest and highest day, the latest day's count."""
    rated, last = [d for d in days if d["fake_rate"] is not None], days[-1]
    spread = ""
    if len(rated) > 1:
        low, high = min(rated, key=lambda d: d["fake_rate"]), max(rated, key=lambda d: d["fake_rate"])
        spread = f"lowest {pct(low['fake_rate'])} on {low['day']}, highest {pct(high['fake_rate'])} on {high['day']}; "
    latest = f"{last['day']}: " if len(days) > 1 else ""  # one day: named once
    return (f"Fake rate per scan day, {_n(len(days), 'day')}, {_span(days[0]['day'], last['day'])}: {spread}"
            f"{latest}{pct(last['fake_rate'])}, {last['fakes']} fake of {last['fakes'] + last['reals']} scored.")


def score_days_alt(score_days: list[dict], thresholds: Sequence[float]) -> str:
    """The scores-per-day plot: the span, where the medians lie, the latest day's middle half."""
    meds, last = [d["med"] for d in score_days], score_days[-1]
    spread = f"daily medians {min(meds):.2f} to {max(meds):.2f}; " if len(meds) > 1 else ""
    return (f"Object scores per scan day, {_n(len(score_days), 'day')}, {_span(score_days[0]['day'], last['day'])}, "
            f"with the {thresholds_text(thresholds)}: {spread}{last['day']}: {_n(last['n'], 'object')}, median "
            f"{last['med']:.2f}, middle half {last['q1']:.2f} to {last['q3']:.2f}. Each day in numbers below the plot.")


def _side(name: str, s: Sample) -> str:
    return f"{name}: {_n(len(s.scores), 'scored object')}, mean score {s.mean_score:.3f}" if s.scores else f"{name}: none"


def drift_alt(drift: Drift) -> str:
    """The drift histogram: both sides' sizes and means, PSI and the verdict."""
    verdict = {"drift": "flagged as drift", "ok": "no drift"}.get(drift.status, "drift not judged")
    psi = "not computed" if drift.psi is None else f"{drift.psi:.2f} (flag above {drift.psi_threshold:.3g})"
    return (f"Share of objects per score bin, {drift.bins} bins over 0 to 1: {_side('latest scan', drift.latest)}; "
            f"{_side('trailing scans', drift.reference)}. PSI {psi}: {verdict}. Each bin in numbers below the plot.")


def drift_bins(drift: Drift) -> list[tuple[str, str, str]]:
    """Per score bin: its range and each side's share of objects, as the histogram draws them."""
    shares = []
    for sample in (drift.reference, drift.latest):
        counts = histogram(sample.scores, drift.bins)
        shares.append([pct(c / counts.sum()) if counts.sum() else "—" for c in counts])
    return [(f"{i / drift.bins:.2f} to {(i + 1) / drift.bins:.2f}", trailing, latest)
            for i, (trailing, latest) in enumerate(zip(*shares))]
