"""The model graph, composed once: decode → detect → score.

``stage_specs`` is the one place the stages are wired: it resolves each stage's constructor arguments from
the settings and the model card (crop size, threshold, aggregation, device, torch threads). Front ends only
choose how to run the list, never re-wire it:

- ``Graph`` builds the specs and runs them in one process: ``ScoringPipeline`` (CLI ``score``, evaluation),
  or, mapped as one Ray Data actor class, the scan's fused plan (decode → score → rows per actor);
- the scan's split plan maps a ``Graph`` of one or two specs onto each pool (``jobs/scan/plan.py``);
- the Serve deployments each hold one built stage.

``upto`` runs a prefix of the graph (dataset preparation stops after ``detect``). Reading the card does not
load the network; only building ``ScoreStage`` does.

``crop_geometry`` and ``verdict_rule`` are the one rule for what the card supplies; a stage built by hand with
those arguments unset (``DetectStage()``, ``ScoreStage(checkpoint)``) applies the same rule to its card.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.batch import Batch, object_column
from pipeline.card import ModelCard, read_card
from pipeline.config import Settings, set_torch_threads
from pipeline.crop import DEFAULT_CROP_SIZE, DEFAULT_MARGIN
from pipeline.errors import CheckpointError
from pipeline.heap import pin_mmap_threshold, release_heap
from pipeline.result import ScoreResult
from pipeline.thumbs import MAX_PX

if TYPE_CHECKING:
    from pipeline.aggregate import Strategy
    from pipeline.classify import FaceClassifier
    from pipeline.score import ScoreStage

STAGES = ("decode", "detect", "score")


@dataclass(frozen=True)
class StageSpec:
    """One stage of the graph: its class and the constructor arguments resolved from the settings.

    The graph's own stages name their class as ``"module:Class"``, imported on ``build``: the scan's driver
    ships specs to its actors and so never imports torch (about 4.5 s of its start-up on 2 cores)."""

    name: str
    cls: type | str
    kwargs: dict[str, Any]

    def resolve(self) -> type:
        if isinstance(self.cls, str):
            module, _, name = self.cls.partition(":")
            return getattr(importlib.import_module(module), name)
        return self.cls

    def build(self) -> Any:
        return self.resolve()(**self.kwargs)


def card_or_none(checkpoint: Path | str) -> ModelCard | None:
    """The checkpoint's card, or None where there is no model (crops then take the defaults)."""
    try:
        return read_card(checkpoint)
    except CheckpointError:
        return None


def crop_geometry(crop_size: int | None, margin: float | None, card: ModelCard | None) -> tuple[int, float]:
    """(crop size, margin) of the face crops: the ones given, else the card's (the crops its weights were trained
    on: a fake cropped otherwise can score REAL), else the card's defaults where there is no model."""
    size = crop_size or (card.architecture.input_size if card else DEFAULT_CROP_SIZE)
    return size, margin if margin is not None else (card.architecture.crop_margin if card else DEFAULT_MARGIN)


def verdict_rule(card: ModelCard, threshold: float | None = None, aggregation: Strategy | None = None,
                 min_track_frames: int | None = None) -> tuple[float, Strategy, int]:
    """(threshold, aggregation, min_track_frames): the ones given, else the card's (calibrated with its weights)."""
    return (card.threshold if threshold is None else threshold, aggregation or card.aggregation,
            min_track_frames or card.min_track_frames)


def stage_specs(settings: Settings, upto: str = "score", *, card: ModelCard | None = None,
                storage_options: dict | None = None, torch_threads: int | None = None,
                packed: tuple[ModelCard, bytes] | None = None,
                classifier: FaceClassifier | None = None, shrink_frames: bool = False, thumbnails: int = 0,
                thumbnail_px: int = MAX_PX, listed: bool = False) -> list[StageSpec]:
    """The stages ``decode`` … ``upto`` in order, each with its arguments.

    ``card`` defaults to the classifier's, else the checkpoint's card (read, not loaded); it is needed for
    ``score`` (raises NoTrainedModelError without one) and for the crop size, which falls back to the
    default when there is no model and ``detect.crop_size`` is unset. ``torch_threads`` overrides
    ``settings.torch_threads`` for the model stages (a front end that sizes its own workers).
    ``thumbnails``/``thumbnail_px``: face thumbnails kept per object by ``score`` (the scan's evidence).
    ``listed``: the URIs come from a listing (the scan), so decode reads them literally (S3 keys are literal).
    """
    names = STAGES[: STAGES.index(upto) + 1]
    card = card or (packed[0] if packed else None) or (classifier.card if classifier else None)
    if card is None:
        try:
            card = read_card(settings.classify.checkpoint)
        except CheckpointError:
            if "score" in names:
                raise
    threads = settings.torch_threads if torch_threads is None else torch_threads
    crop, margin = crop_geometry(settings.detect.crop_size, settings.detect.margin, card)
    if "score" in names and crop != card.architecture.input_size:  # else every face fails later, one by one
        raise CheckpointError(f"detect.crop_size {crop} does not match the detector's input size "
                              f"{card.architecture.input_size} (its model card): unset it, or use a detector trained at {crop} px")
    cls = settings.classify
    specs = {
        "decode": lambda: StageSpec("decode", "pipeline.decode:DecodeStage", {
            "config": settings.decode if settings.decode.threads is not None else settings.decode.model_copy(
                update={"threads": threads}), "storage_options": storage_options,
            "max_side": settings.detect.detect_max_side if shrink_frames else None, "literal_uris": listed}),
        "detect": lambda: StageSpec("detect", "pipeline.detect:DetectStage", {"config": settings.detect.model_copy(update={"margin": margin}),
                                                            "device": settings.device,
                                                            "crop_size": crop, "torch_threads": threads}),
        "score": lambda: StageSpec("score", "pipeline.score:ScoreStage", {
            "checkpoint": cls.checkpoint, "device": settings.device, "batch_size": cls.batch_size,
            "tta_flip": cls.tta_flip, "runtime": cls.runtime, "onnx_cache": cls.onnx_cache, "torch_threads": threads, "packed": packed,
            "classifier": classifier,
            **dict(zip(("threshold", "aggregation", "min_track_frames"),
                       verdict_rule(card, cls.threshold, cls.aggregation, cls.min_track_frames))),
            "thumbnails": thumbnails, "thumbnail_px": thumbnail_px,
        }),
    }
    return [specs[name]() for name in names]


class Graph:
    """Built stages run one after another in this process; a callable class, so Ray Data can map it whole."""

    def __init__(self, specs: list[StageSpec]):
        # frame buffers each get their own mapping, returned when freed: without it glibc's adaptive threshold
        # serves them from the heap, whose fragments raised an actor's peak by ~9% over two passes of FF++ (5% pinned)
        pin_mmap_threshold()
        self.stages = {spec.name: spec.build() for spec in specs}

    def __call__(self, batch: Batch) -> Batch:
        for stage in self.stages.values():
            batch = stage(batch)
        release_heap()  # the batch's frames are freed by now: keep this long-lived process's memory flat
        return batch


class ScoringPipeline:
    """The whole graph in one process, one item at a time (memory stays bounded by one video)."""

    def __init__(self, settings: Settings, classifier: FaceClassifier | None = None, storage_options: dict | None = None):
        set_torch_threads(settings.torch_threads)
        self.settings = settings
        self.graph = Graph(stage_specs(settings, storage_options=storage_options, classifier=classifier))
        self.scorer: ScoreStage = self.graph.stages["score"]

    @property
    def card(self) -> ModelCard:
        return self.scorer.card

    def run_batch(self, batch: Batch) -> Batch:
        return self.graph(batch)

    def score(self, uri: str, data: bytes | None = None) -> ScoreResult:
        batch: Batch = {"uri": object_column([uri])}
        if data is not None:
            batch["data"] = object_column([data])
        return ScoreResult.from_batch(self.run_batch(batch))[0]

    def error(self, uri: str, message: str) -> ScoreResult:
        """The result for an input the graph could not even start on."""
        return ScoreResult.failed(uri, message, self.scorer.aggregate.threshold, self.card.version)


__all__ = ["STAGES", "StageSpec", "stage_specs", "card_or_none", "crop_geometry", "verdict_rule", "Graph",
           "ScoringPipeline"]
