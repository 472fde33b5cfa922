"""What a score depends on, as one short key: the weights' bytes and the settings that change a face's score,
and optionally those that turn face scores into a verdict. Results with the same key may be reused: evaluation's
face-score cache (``jobs/training/evaluate.py``) and the scan's skip rule (``jobs/scan/incremental.py``).
A version string alone is not enough: every ``train`` run is ``dev`` unless told otherwise, and a card re-fitted
for a new threshold keeps its version."""

from __future__ import annotations

import hashlib
import json

from pipeline.card import ModelCard
from pipeline.config import Settings

VERDICT = ("threshold", "aggregation", "min_track_frames")  # applied to the face scores afterwards
# how the graph runs, not what it computes (ONNX Runtime and PyTorch agree to 1e-5)
ENGINE = {"decode": ("threads",), "detect": ("batch_size",), "classify": ("runtime",)}
NEVER = ("checkpoint", "onnx_cache", "batch_size")  # the weights' bytes count, not their path; batching; a cache
# what is refused, not how what is taken is scored: raising a limit must not rescan a bucket (--retry-errors takes
# the objects it refused). Left in evaluation's key, whose caches were keyed with them
LIMITS = {"decode": ("max_duration_s", "max_pixels", "max_bytes", "max_frames", "max_decoded_pixels")}
# limits added after evaluation's caches were keyed: in no key, so those keys stay as they were written
UNKEYED = {"decode": ("max_decoded_pixels",)}
CARD = {"architecture", "normalisation", "threshold", "aggregation", "min_track_frames", "tta_flip"}
# The scoring code's revision: bump it with any change to decoding, detection, tracking, aggregation or
# classification that moves a score or a verdict for the same weights and settings, so outputs scored by the old code
# rescan once, and evaluation's cached records (jobs/training/evaluate.py) are scored again (the keys alone missed
# 6c69ca8's tracking fix: its outputs and caches kept the old verdicts and tracks). 2: that fix.
SCAN_REVISION = 2


def weights_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def scoring_key(settings: Settings, weights: str, *, verdict: bool, engine: bool, tta_flip: bool | None = None,
                card: ModelCard | None = None, shrink_frames: bool | None = None, revision: int | None = None) -> str:
    """16 hex digits over ``weights`` (``weights_digest``) and the decode, detect and classify settings.

    ``verdict``: the threshold, aggregation and minimum track length count too (the scan's rows carry a verdict;
    evaluation's cache holds face scores only). ``engine``: the device, decoder threads, detector batch and
    classifier runtime count, and the decode limits (``LIMITS``) (evaluation's caches were keyed with them; a scan
    must not rescore a bucket because one night ran on a GPU or allowed larger files). ``tta_flip``: the flip setting
    as resolved from the card. ``card``: the card fields that feed the graph or decide a verdict (a card re-fitted
    with the same weights changes the key). ``shrink_frames``: the scan's option (crops cut from shrunk frames).
    ``revision``: the code's (``SCAN_REVISION``). Left out (None), a part of the key is not in the hash at all: evaluation's keys stay as they were written.
    """
    graph = settings.model_dump(mode="json", include={"device", "decode", "detect", "classify"})
    for key in NEVER + (() if verdict else VERDICT):
        graph["classify"].pop(key, None)
    for section, keys in UNKEYED.items():
        for key in keys:
            graph[section].pop(key, None)
    if not engine:
        graph.pop("device")
        for section, keys in (*ENGINE.items(), *LIMITS.items()):
            for key in keys:
                graph[section].pop(key, None)
    if tta_flip is not None:
        graph["classify"]["tta_flip"] = tta_flip
    if card is not None:
        graph["card"] = card.model_dump(mode="json", include=CARD)
    if shrink_frames is not None:
        graph["scan"] = {"shrink_frames": shrink_frames}
    if revision is not None:
        graph["revision"] = revision
    return hashlib.sha256((weights + json.dumps(graph, sort_keys=True)).encode()).hexdigest()[:16]


__all__ = ["scoring_key", "weights_digest", "SCAN_REVISION", "VERDICT", "LIMITS"]
