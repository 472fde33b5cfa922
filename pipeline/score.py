"""Stage 3 — score: face crops → fake probability per face (classify) → one verdict per object (aggregate).

One stage, not two: the verdict needs the network's card (version, threshold) and nothing else needs the
per-face scores alone, so every front end would otherwise wire the same pair.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.aggregate import AggregateStage, Strategy
from pipeline.batch import Batch, object_column
from pipeline.card import ModelCard
from pipeline.classify import ClassifyStage, FaceClassifier
from pipeline.config import set_torch_threads
from pipeline.graph import verdict_rule
from pipeline.runtime import Runtime
from pipeline.thumbs import MAX_PX, top_face_thumbnails


class ScoreStage:
    """Batch stage: ``crops`` → ``face_scores`` → ``score``, ``label``, ``threshold``, ``model_version``.

    The network comes from ``classifier`` when given (training, tests), else from ``checkpoint`` (or its
    ``packed`` card and bytes, so a Ray worker needs no copy of the file). With ``thumbnails`` > 0 it also
    keeps ``face_thumbs``: JPEGs of each object's top-scoring faces (None for the others), made here
    because this is the last place the crops exist. ``threshold``, ``aggregation`` and ``min_track_frames``
    left unset are the card's (``pipeline.graph.verdict_rule``).
    """

    def __init__(self, checkpoint: Path, threshold: float | None = None, aggregation: Strategy | None = None,
                 min_track_frames: int | None = None,
                 device: str = "auto", batch_size: int = 32, tta_flip: bool | None = None, torch_threads: int = 0,
                 packed: tuple[ModelCard, bytes] | None = None, classifier: FaceClassifier | None = None,
                 thumbnails: int = 0, thumbnail_px: int = MAX_PX, runtime: Runtime = "auto",
                 onnx_cache: Path | None = None):
        set_torch_threads(torch_threads)
        classifier = classifier or FaceClassifier.from_checkpoint(checkpoint, device, batch_size, tta_flip, packed, runtime,
                                                                   onnx_cache)
        self.classify = ClassifyStage(classifier)
        threshold, aggregation, min_track_frames = verdict_rule(classifier.card, threshold, aggregation,
                                                                min_track_frames)
        self.aggregate = AggregateStage(threshold, aggregation, classifier.card.version, min_track_frames)
        self.thumbnails, self.thumbnail_px = thumbnails, thumbnail_px

    @property
    def classifier(self) -> FaceClassifier:
        return self.classify.classifier

    @property
    def card(self) -> ModelCard:
        return self.classify.card

    def __call__(self, batch: Batch) -> Batch:
        crops = batch.get("crops") if self.thumbnails else None
        out = self.aggregate(self.classify(batch))
        if crops is not None:
            out["face_thumbs"] = object_column([
                top_face_thumbnails(c, s, self.thumbnails, self.thumbnail_px) if len(c) else []
                for c, s in zip(crops, out["face_scores"])])
        return out
