"""Drift: does tonight's scan look like the nights before it?

A model swap, an upstream re-encode or a broken decoder moves every score at once while each verdict
still looks plausible on its own. We compare the latest scan's object scores with the pooled scores of
the trailing scans by the population stability index (PSI), and its faces per object and error rate
with theirs. Rule of thumb for PSI: < 0.1 stable, 0.1-0.25 moderate, > 0.25 a real shift.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, Field

BINS = 10                 # equal-width over [0, 1]: scores are probabilities, so the bins never move
PSI_THRESHOLD = 0.25
FACE_RATIO = 0.5          # faces per object moving by more than half (either way) is flagged
ERROR_RISE = 0.10         # error rate up by more than 10 points is flagged
MIN_OBJECTS = 5           # fewer scored objects on either side: too few to judge


def histogram(scores: Sequence[float], bins: int = BINS) -> np.ndarray:
    """Counts of ``scores`` in ``bins`` equal-width bins over [0, 1] (1.0 falls in the last)."""
    values = np.clip(np.asarray(scores, np.float64), 0.0, 1.0)
    return np.histogram(values, bins=bins, range=(0.0, 1.0))[0]


def psi(reference: Sequence[float], current: Sequence[float], bins: int = BINS) -> float:
    """Population stability index of ``current`` against ``reference`` (sum of (c - r) * ln(c / r)).

    Shares get half a count per bin (Laplace-style) so an empty bin costs a finite amount: identical
    samples give exactly 0 and nightly samples of a few objects do not explode to infinity.
    """
    ref, cur = histogram(reference, bins) + 0.5, histogram(current, bins) + 0.5
    r, c = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((c - r) * np.log(c / r)))


class Sample(BaseModel):
    """What one side of the comparison scanned: object scores, faces per scored object, object counts."""

    scan_ids: list[str] = Field(default_factory=list)
    scores: list[float] = Field(default_factory=list)
    faces: list[int] = Field(default_factory=list)      # faces per object that was not an ERROR
    objects: int = 0
    errors: int = 0
    model_versions: list[str] = Field(default_factory=list)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.objects if self.objects else None

    @property
    def faces_per_object(self) -> float | None:
        return float(np.mean(self.faces)) if self.faces else None

    @property
    def mean_score(self) -> float | None:
        return float(np.mean(self.scores)) if self.scores else None


Flag = Literal["score_shift", "face_count_shift", "error_rate_rise", "model_changed"]


class Drift(BaseModel):
    """The verdict of one comparison; ``flags`` name what moved (``model_changed`` explains, never alarms)."""

    status: Literal["ok", "drift", "insufficient"]
    flags: list[Flag] = Field(default_factory=list)
    psi: float | None = None
    psi_threshold: float = PSI_THRESHOLD
    latest: Sample
    reference: Sample
    bins: int = BINS
    message: str = ""

    @property
    def flagged(self) -> bool:
        return self.status == "drift"


def compare(reference: Sample, latest: Sample, psi_threshold: float = PSI_THRESHOLD, face_ratio: float = FACE_RATIO,
            error_rise: float = ERROR_RISE, min_objects: int = MIN_OBJECTS) -> Drift:
    """Compare ``latest`` with ``reference``; status ``drift`` when a statistic crosses its threshold."""
    base = dict(latest=latest, reference=reference, psi_threshold=psi_threshold)
    if not reference.scan_ids:
        return Drift(status="insufficient", message="no earlier scan to compare with", **base)
    flags: list[str] = []
    value = None
    if min(len(reference.scores), len(latest.scores)) >= min_objects:
        value = psi(reference.scores, latest.scores)
        if value > psi_threshold:
            flags.append("score_shift")
    rf, lf = reference.faces_per_object, latest.faces_per_object
    if rf and lf is not None and min(len(reference.faces), len(latest.faces)) >= min_objects \
            and abs(lf - rf) / rf > face_ratio:
        flags.append("face_count_shift")
    re_, le = reference.error_rate, latest.error_rate
    if re_ is not None and le is not None and latest.objects >= min_objects and le - re_ > error_rise:
        flags.append("error_rate_rise")
    alarms = list(flags)
    if set(latest.model_versions) - set(reference.model_versions):
        flags.append("model_changed")
    if alarms:
        status, message = "drift", "latest scan differs from the trailing scans: " + ", ".join(alarms)
    elif value is None:
        status = "insufficient"
        message = (f"too few scored objects to compare scores ({len(latest.scores)} latest, "
                   f"{len(reference.scores)} trailing; need {min_objects})")
    else:
        status, message = "ok", f"PSI {value:.3f} <= {psi_threshold}"
    return Drift(status=status, flags=flags, psi=value, message=message, **base)


def scan_drift(con, trailing: int = 7, **thresholds) -> Drift:
    """Drift of the latest scan that wrote rows against up to ``trailing`` scans before it.

    ``con`` is a DuckDB connection from ``jobs.query.connect`` (its ``videos_history`` view: each scan's
    own rows, so an incremental night is compared by the objects it scanned).
    """
    order = [sid for (sid,) in con.execute(
        "SELECT scan_id FROM videos_history GROUP BY scan_id ORDER BY min(scanned_at), scan_id").fetchall()]
    if not order:
        return Drift(status="insufficient", message="no scan has written rows yet", latest=Sample(), reference=Sample())
    return compare(_sample(con, order[-trailing - 1:-1]), _sample(con, order[-1:]), **thresholds)


def _sample(con, scan_ids: list[str]) -> Sample:
    if not scan_ids:
        return Sample()
    rows = con.execute("""
        SELECT score, faces, label, model_version FROM videos_history
        WHERE list_contains(?, scan_id)""", [scan_ids]).fetchall()
    return Sample(
        scan_ids=scan_ids,
        scores=[float(s) for s, _f, _l, _m in rows if s is not None and not math.isnan(s)],
        faces=[int(f or 0) for _s, f, label, _m in rows if label != "ERROR"],
        objects=len(rows), errors=sum(label == "ERROR" for _s, _f, label, _m in rows),
        model_versions=sorted({m for *_x, m in rows if m}),
    )


__all__ = ["psi", "histogram", "Sample", "Drift", "compare", "scan_drift", "PSI_THRESHOLD"]
