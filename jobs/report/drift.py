"""Drift: does tonight's scan look like the nights before it?

A model swap, an upstream re-encode or a broken decoder moves every score at once while each verdict
still looks plausible on its own. We compare the latest scan's object scores with the pooled scores of
the trailing scans by the population stability index (PSI), and its faces per object and error rate
with theirs. Rule of thumb for PSI: < 0.1 stable, 0.1-0.25 moderate, > 0.25 a real shift.

Each flag also needs the move to be unlikely as sampling noise (``ALPHA``): a night of a few objects drawn from
an unchanged stream moves every statistic a lot by chance alone.
"""

from __future__ import annotations

import json
import math
from statistics import NormalDist
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, Field

from jobs.scan.schema import DELETED

BINS = 10                 # equal-width over [0, 1]: scores are probabilities, so the bins never move
PSI_THRESHOLD = 0.25
FACE_RATIO = 0.5          # faces per object moving by more than half (either way) is flagged
ERROR_RISE = 0.10         # error rate up by more than 10 points is flagged
# Fewer (scored) objects on either side: score and face-count shifts are not judged. Same-distribution samples
# of 5-50 objects put PSI over 0.25 on most nights (its noise is about (BINS - 1) * (1/n + 1/m)), and the
# chi-square law behind the noise floor below wants about 10 objects per bin.
MIN_OBJECTS = 100
ALPHA = 0.001             # chance of a flag on an unchanged stream, per statistic: ~1 false alarm in 3 years of nights


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
    psi_threshold: float = PSI_THRESHOLD  # what PSI had to exceed: PSI_THRESHOLD, or the noise floor if higher
    min_objects: int = MIN_OBJECTS
    alpha: float = ALPHA
    latest: Sample
    reference: Sample
    bins: int = BINS
    message: str = ""
    skipped: dict[str, str] = Field(default_factory=dict)  # newer scans passed over as no night's sample: scan_id → why

    @property
    def flagged(self) -> bool:
        return self.status == "drift"


def psi_noise_floor(n: int, m: int, bins: int = BINS, alpha: float = ALPHA) -> float:
    """The PSI two samples of ``n`` and ``m`` objects from one distribution exceed with chance ``alpha``.

    PSI * nm/(n+m) is about chi-square with ``bins - 1`` degrees of freedom (it is the chi-square statistic of
    the two histograms to second order); quantile by Wilson-Hilferty, exact enough at these tails.
    """
    k = bins - 1
    z = NormalDist().inv_cdf(1 - alpha)
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3 * (1 / n + 1 / m)


def _lchoose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def error_rise_p(reference: Sample, latest: Sample) -> float:
    """One-sided p-value of the latest error rate being above the trailing one by chance: Fisher's exact test
    (hypergeometric tail), exact for a night of any size."""
    total, errors, drawn = reference.objects + latest.objects, reference.errors + latest.errors, latest.objects
    log_all = _lchoose(total, drawn)
    p = 0.0
    for k in range(latest.errors, min(errors, drawn) + 1):
        term = math.exp(_lchoose(errors, k) + _lchoose(total - errors, drawn - k) - log_all)
        p += term
        if term < p * 1e-17 and k > errors * drawn / total:  # past the mode terms only shrink
            break
    return min(p, 1.0)


def face_shift_p(reference: Sample, latest: Sample) -> float:
    """Two-sided p-value of the faces-per-object means differing by chance (Welch's z; both sides >= MIN_OBJECTS)."""
    r, lt = np.asarray(reference.faces, np.float64), np.asarray(latest.faces, np.float64)
    se = math.sqrt(sum(x.var(ddof=1) / x.size for x in (r, lt) if x.size > 1))
    diff = abs(lt.mean() - r.mean())
    if se == 0:  # every object on both sides had the same count: any difference is no accident
        return 0.0 if diff else 1.0
    return math.erfc(diff / se / math.sqrt(2))


def compare(reference: Sample, latest: Sample, psi_threshold: float = PSI_THRESHOLD, face_ratio: float = FACE_RATIO,
            error_rise: float = ERROR_RISE, min_objects: int = MIN_OBJECTS, alpha: float = ALPHA) -> Drift:
    """Compare ``latest`` with ``reference``; status ``drift`` when a statistic crosses its threshold and the
    move is unlikely (< ``alpha``) to be sampling noise; shifts are judged only on ``min_objects`` per side."""
    base = dict(latest=latest, reference=reference, min_objects=min_objects, alpha=alpha)
    if not reference.scan_ids:
        return Drift(status="insufficient", message="no earlier scan to compare with", psi_threshold=psi_threshold,
                     **base)
    flags: list[str] = []
    value, threshold, unjudged = None, psi_threshold, []
    n, m = len(latest.scores), len(reference.scores)
    if min(n, m) >= min_objects:
        value = psi(reference.scores, latest.scores)
        threshold = max(psi_threshold, psi_noise_floor(n, m, alpha=alpha))
        if value > threshold:
            flags.append("score_shift")
    else:
        unjudged.append(f"too few scored objects to judge scores ({n} latest, {m} trailing; "
                        f"need {min_objects} on each side)")
    rf, lf = reference.faces_per_object, latest.faces_per_object
    if min(len(reference.faces), len(latest.faces)) >= min_objects:
        # from or to 0 faces is a shift of its own (a dead detector finds none): no ratio to take
        moved = lf > 0 if rf == 0 else abs(lf - rf) / rf > face_ratio
        if moved and face_shift_p(reference, latest) < alpha:
            flags.append("face_count_shift")
    re_, le = reference.error_rate, latest.error_rate
    if re_ is not None and le is not None and le - re_ > error_rise and error_rise_p(reference, latest) < alpha:
        flags.append("error_rate_rise")
    alarms = list(flags)
    if set(latest.model_versions) - set(reference.model_versions):
        flags.append("model_changed")
    if alarms:
        status = "drift"
        message = "; ".join(["latest scan differs from the trailing scans: " + ", ".join(alarms), *unjudged])
    elif value is None:
        status, message = "insufficient", "; ".join(unjudged)
    else:
        status, message = "ok", f"PSI {value:.3f} <= {threshold:.3g}"
    return Drift(status=status, flags=flags, psi=value, psi_threshold=threshold, message=message, **base)


# a scan that did all the work it chose; any other status stopped part-way (or is still going: "running"), and its
# rows are a biased slice of the night (a scan takes the largest objects first)
COMPLETE = ("succeeded", "too_many_errors")


def _partial(record: dict | None, fresh: int) -> str | None:
    """Why a scan's rows are not a night's sample (None when they are): still running or stopped part-way, a rerun
    whose every row rescanned an object last seen as ERROR (``fresh``: its rows that did not; ``--retry-errors``), or
    a ``--max-objects`` run that left work for later. A scan without a run record (older outputs) is judged."""
    status = record["status"] if record else None
    if status == "running":
        return "in progress"
    if status is not None and status not in COMPLETE:
        return f"ended {status} part-way"
    if fresh == 0:
        return "rescanned only objects whose last verdict was ERROR (--retry-errors)"
    if record and record["options"].get("max_objects") and record["deferred"]:
        return f"was capped by --max-objects ({record['deferred']} objects left for later)"
    return None


def _records(con) -> dict[str, dict]:
    """scan_id → status, options and objects deferred, from the ``runs`` view (the run records)."""
    return {sid: {"status": status, "options": json.loads(options or "{}"), "deferred": deferred or 0}
            for sid, status, options, deferred in con.execute(
                "SELECT scan_id, status, options, deferred FROM runs").fetchall()}


# every row a scan scored or failed: its tombstones (label DELETED, an object gone from the source) are no sample
SCORED = f"(SELECT * FROM videos_history WHERE label <> '{DELETED}')"
# ``retry``: the row rescans an object whose previous row was ERROR (what --retry-errors rescans)
RETRY = "coalesce(lag(label) OVER (PARTITION BY uri ORDER BY scan_id, scanned_at) = 'ERROR', false) AS retry"
# every scan that wrote rows, in the videos view's order, with its rows that are not such retries
SCANS = f"""SELECT scan_id, count(*) FILTER (NOT retry) FROM (SELECT scan_id, {RETRY} FROM {SCORED})
    GROUP BY scan_id ORDER BY scan_id"""
# the rows of the scans $scans, with ``retry``
RETRIES = f"""(SELECT * FROM (
    SELECT *, {RETRY} FROM {SCORED}
    WHERE uri IN (SELECT uri FROM {SCORED} WHERE list_contains($scans, scan_id)))
    WHERE list_contains($scans, scan_id))"""


def scan_drift(con, trailing: int = 7, **thresholds) -> Drift:
    """Drift of the latest scan that is a night's sample against up to ``trailing`` such scans before it.

    ``con`` is a DuckDB connection from ``jobs.query.sql.connect`` (its ``videos_history`` view: each scan's
    own rows, so an incremental night is compared by the objects it scanned; its ``runs`` view: how each scan
    ended and with which options). A scan still running or stopped part-way, a ``--retry-errors`` rerun of only
    ERROR objects and a ``--max-objects`` run that left work for later are passed over (``_partial``); the retried
    rows of a ``--retry-errors`` scan that also scanned new objects are left out of its sample.
    """
    # scan_id starts with the driver's clock, as the videos view orders scans; scanned_at is each worker's own
    fresh = dict(con.execute(SCANS).fetchall())
    if not fresh:
        return Drift(status="insufficient", message="no scan has written rows yet", latest=Sample(), reference=Sample())
    records = _records(con)
    # a --retry-errors scan's retried rows are no sample of the night (they were ERROR before): left out
    retried = [sid for sid, r in records.items() if r["options"].get("retry_errors") and not r["options"].get("full")]
    nights: list[str] = []
    skipped: dict[str, str] = {}
    for sid in reversed(list(fresh)):
        why = _partial(records.get(sid), fresh[sid])
        if why is None:
            nights.append(sid)
            if len(nights) > trailing:
                break
        elif not nights:  # newer than the scan judged: said; older ones are only left out of the trailing pool
            skipped[sid] = why
    said = "; ".join(f"latest scan {sid} {why}" for sid, why in skipped.items())
    if not nights:
        return Drift(status="insufficient", message=f"{said}: no finished scan to judge", latest=Sample(),
                     reference=Sample(), skipped=skipped)
    drift = compare(_sample(con, nights[:0:-1], retried), _sample(con, nights[:1], retried), **thresholds)
    drift.skipped = skipped
    if skipped:
        drift.message = f"{said}, judged the last finished full scan ({nights[0]}): {drift.message}"
    return drift


def _sample(con, scan_ids: list[str], retried: list[str] = ()) -> Sample:
    """The rows of ``scan_ids``, less those that retried an ERROR object in the ``retried`` scans."""
    if not scan_ids:
        return Sample()
    source = RETRIES if set(scan_ids) & set(retried) else f"(SELECT *, false AS retry FROM {SCORED})"
    rows = con.execute(f"""
        SELECT score, faces, label, model_version FROM {source}
        WHERE list_contains($scans, scan_id) AND NOT (retry AND list_contains($retried, scan_id))""",
                       {"scans": scan_ids, "retried": list(retried)}).fetchall()
    return Sample(
        scan_ids=scan_ids,
        scores=[float(s) for s, _f, _l, _m in rows if s is not None and not math.isnan(s)],
        faces=[int(f or 0) for _s, f, label, _m in rows if label != "ERROR"],
        objects=len(rows), errors=sum(label == "ERROR" for _s, _f, label, _m in rows),
        model_versions=sorted({m for *_x, m in rows if m}),
    )


__all__ = ["psi", "histogram", "psi_noise_floor", "error_rise_p", "face_shift_p", "Sample", "Drift", "compare",
           "scan_drift", "PSI_THRESHOLD", "MIN_OBJECTS", "ALPHA"]
