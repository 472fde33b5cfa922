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


def _scan_key(card: ModelCard | None = None, weights: bytes = b"w", **overrides) -> str:
    card = card or ModelCard(version="v1", architecture=ModelSpec())
    return scoring_key(Settings.model_validate(overrides), weights_digest(weights), verdict=True, engine=False, card=card)


def test_the_scans_key_follows_scores_and_verdicts_not_the_engine():
    base = _scan_key()
    changed = [_scan_key(weights=b"other"), _scan_key(classify={"threshold": 0.7}),
               _scan_key(classify={"aggregation": "track_max"}), _scan_key(classify={"min_track_frames": 3}),
               _scan_key(decode={"num_frames": 8}), _scan_key(detect={"min_face_px": 60}),
               _scan_key(ModelCard(version="v1", architecture=ModelSpec(), threshold=0.6))]  # re-fitted card
    assert base not in changed and len(set(changed)) == len(changed)
    same = [_scan_key(device="cuda"), _scan_key(decode={"threads": 4}), _scan_key(detect={"batch_size": 2}),
            _scan_key(classify={"batch_size": 2, "runtime": "torch", "onnx_cache": None, "checkpoint": "/elsewhere"}),
            _scan_key(torch_threads=3), _scan_key(scan={"commit_every": 5, "full": True}),
            _scan_key(ModelCard(version="v1", architecture=ModelSpec(), metrics={"auc": 0.9}))]  # not what scores
    assert set(same) == {base}
