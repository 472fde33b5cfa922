"""The model graph, defined once: Decode → Detect → Classify → Aggregate.

``ScoringPipeline`` runs the four stages in-process (CLI ``score``, tests, benchmarks). The batch scan
(Ray Data ``map_batches``) and the online service (Ray Serve deployments) wrap the very same stage
classes; ``build_stages`` is the one place that wires them from settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable


from pipeline.aggregate import AggregateStage
from pipeline.batch import Batch, object_column
from pipeline.classify import ClassifyStage, FaceClassifier
from pipeline.config import Settings
from pipeline.decode import DecodeStage
from pipeline.detect import DetectStage
from pipeline.result import ScoreResult, result_from_row

log = logging.getLogger(__name__)


def configure_torch(settings: Settings) -> None:
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)


def make_classify_stage(settings: Settings, classifier: FaceClassifier | None = None) -> ClassifyStage:
    """Load the detector named by the settings (raises NoTrainedModelError when there is none)."""
    return ClassifyStage(settings.classify, settings.device, classifier=classifier)


def make_aggregate_stage(settings: Settings, classify: ClassifyStage) -> AggregateStage:
    card = classify.card
    threshold = settings.classify.threshold if settings.classify.threshold is not None else card.threshold
    strategy = settings.classify.aggregation or card.aggregation
    min_track = settings.classify.min_track_frames or card.min_track_frames
    return AggregateStage(threshold, strategy, card.version, min_track)


def make_detect_stage(settings: Settings, crop_size: int) -> DetectStage:
    return DetectStage(settings.detect, settings.device, crop_size=settings.detect.crop_size or crop_size)


@dataclass
class Stages:
    decode: DecodeStage
    detect: DetectStage
    classify: ClassifyStage
    aggregate: AggregateStage


def build_stages(settings: Settings, classifier: FaceClassifier | None = None, storage_options: dict | None = None) -> Stages:
    configure_torch(settings)
    classify = make_classify_stage(settings, classifier)
    return Stages(
        decode=DecodeStage(settings.decode, storage_options),
        detect=make_detect_stage(settings, classify.classifier.input_size),
        classify=classify,
        aggregate=make_aggregate_stage(settings, classify),
    )


def rows_of(batch: Batch) -> list[dict]:
    n = len(batch["uri"])
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


class ScoringPipeline:
    """All four stages in one process, one item at a time (memory stays bounded by one video)."""

    def __init__(self, settings: Settings, classifier: FaceClassifier | None = None, storage_options: dict | None = None):
        self.settings = settings
        self.stages = build_stages(settings, classifier, storage_options)

    @property
    def card(self):
        return self.stages.classify.card

    def run_batch(self, batch: Batch) -> Batch:
        s = self.stages
        return s.aggregate(s.classify(s.detect(s.decode(batch))))

    def score(self, uri: str, data: bytes | None = None) -> ScoreResult:
        batch: Batch = {"uri": object_column([uri])}
        if data is not None:
            batch["data"] = object_column([data])
        return result_from_row(rows_of(self.run_batch(batch))[0])

    def score_many(self, uris: Iterable[str]) -> Iterable[ScoreResult]:
        for uri in uris:
            yield self.score(uri)


__all__ = ["ScoringPipeline", "Stages", "build_stages"]
