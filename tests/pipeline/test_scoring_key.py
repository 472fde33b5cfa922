"""The scoring key (pipeline/scoring_key.py): evaluation's cache keys stay what they were; the scan's key follows
what changes a score or a verdict and nothing that only changes how the graph runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.card import ModelCard, ModelSpec
from pipeline.config import Settings
from pipeline.scoring_key import scoring_key, weights_digest


def _evaluate_key_before(settings: Settings, tta_flip: bool) -> str:
    """jobs/training/evaluate.py's key as it was written before it moved here: caches written then must hit."""
    weights = hashlib.sha256(Path(settings.classify.checkpoint).read_bytes()).hexdigest()
    graph = settings.model_dump(mode="json", include={"device", "decode", "detect", "classify"})
    graph["decode"].pop("max_decoded_pixels", None)  # a setting added since: the settings of then had no such field
    for key in ("checkpoint", "threshold", "aggregation", "min_track_frames", "onnx_cache", "batch_size"):
        graph["classify"].pop(key, None)
    graph["classify"]["tta_flip"] = tta_flip
    return hashlib.sha256((weights + json.dumps(graph, sort_keys=True)).encode()).hexdigest()[:16]


@pytest.mark.parametrize("overrides", [{}, {"device": "cpu", "decode": {"num_frames": 8, "threads": 2}},
                                       {"classify": {"threshold": 0.7, "aggregation": "track_max", "batch_size": 4},
                                        "detect": {"batch_size": 4, "margin": 0.2}}])
@pytest.mark.parametrize("tta_flip", [False, True])
def test_evaluations_cache_keys_are_unchanged(tmp_path, overrides, tta_flip):
    from jobs.training.evaluate import scoring_key as evaluate_key

    checkpoint = tmp_path / "w.safetensors"
    checkpoint.write_bytes(b"some weights")
    settings = Settings.model_validate({**overrides, "classify": {**overrides.get("classify", {}), "checkpoint": checkpoint}})
    assert evaluate_key(settings, tta_flip) == _evaluate_key_before(settings, tta_flip)


def test_the_shipped_detectors_evaluation_key_is_the_one_its_caches_hold():
    """``evaluate --split val`` of the shipped detector under the default settings wrote this key into its caches
    (2026-12-07): a new setting must not make every cached score miss."""
    from jobs.training.evaluate import scoring_key as evaluate_key

    assert evaluate_key(Settings(), False) == "ef9d273da701501e"


def _scan_key(card: ModelCard | None = None, weights: bytes = b"w", shrink_frames: bool = False, **overrides) -> str:
    card = card or ModelCard(version="v1", architecture=ModelSpec())
    return scoring_key(Settings.model_validate(overrides), weights_digest(weights), verdict=True, engine=False, card=card,
                       shrink_frames=shrink_frames)


def test_the_scans_key_follows_scores_and_verdicts_not_the_engine():
    base = _scan_key()
    changed = [_scan_key(weights=b"other"), _scan_key(classify={"threshold": 0.7}),
               _scan_key(classify={"aggregation": "track_max"}), _scan_key(classify={"min_track_frames": 3}),
               _scan_key(decode={"num_frames": 8}), _scan_key(detect={"min_face_px": 60}),
               _scan_key(ModelCard(version="v1", architecture=ModelSpec(), threshold=0.6)),  # re-fitted card
               _scan_key(shrink_frames=True)]  # crops cut from frames shrunk to the detector's size
    assert base not in changed and len(set(changed)) == len(changed)
    same = [_scan_key(device="cuda"), _scan_key(decode={"threads": 4}), _scan_key(detect={"batch_size": 2}),
            _scan_key(classify={"batch_size": 2, "runtime": "torch", "onnx_cache": None, "checkpoint": "/elsewhere"}),
            _scan_key(torch_threads=3), _scan_key(scan={"commit_every": 5, "full": True}),
            _scan_key(ModelCard(version="v1", architecture=ModelSpec(), metrics={"auc": 0.9})),  # not what scores
            # limits refuse objects, they do not score the others differently: raising one rescans nothing
            _scan_key(decode={"max_bytes": 2**40, "max_pixels": 2**30, "max_duration_s": 1e6, "max_frames": 10**6})]
    assert set(same) == {base}


def test_every_decode_limit_is_left_out_of_the_scans_key():
    """A limit added to the decode settings later must be named in LIMITS, or raising it would rescan every bucket."""
    from pipeline.config import DecodeConfig
    from pipeline.scoring_key import LIMITS

    assert set(LIMITS) == {"decode"} and set(LIMITS["decode"]) == {f for f in DecodeConfig.model_fields if f.startswith("max_")}
