"""The score stage's first half, classify: face crops → fake probability per face (SRM → EfficientNet → MLP head)."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.batch import Batch, batch_size, object_column
from pipeline.card import ModelCard
from pipeline.checkpoint import load_checkpoint
from pipeline.config import resolve_device
from pipeline.fold import fold_batchnorm
from pipeline.model import DeepfakeDetector
from pipeline.preprocess import crops_to_tensor
from pipeline.runtime import OnnxNetwork, Runtime, resolve_runtime

log = logging.getLogger(__name__)


class FaceClassifier:
    """A loaded detector network with its model card; scores uint8 crops in fixed-size batches.

    ``runtime`` picks the engine (``pipeline/runtime.py``); ``model`` stays the PyTorch module either way.
    """

    def __init__(self, model: DeepfakeDetector, card: ModelCard, device: str = "cpu", batch_size: int = 32,
                 tta_flip: bool | None = None, runtime: Runtime = "torch", onnx_cache: Path | None = None):
        self.device = resolve_device(device)
        # a folded copy: the caller's model (a training run's) keeps its BatchNorms
        model = copy.deepcopy(model).eval()
        fold_batchnorm(model)
        self.model = model.to(self.device).to(memory_format=torch.channels_last)
        self.card = card
        self.batch_size = batch_size
        self.tta_flip = card.tta_flip if tta_flip is None else tta_flip
        self.runtime = resolve_runtime(runtime, self.device)
        self.network = OnnxNetwork(self.model, self.input_size, onnx_cache) if self.runtime == "onnx" else self.model

    @classmethod
    def from_checkpoint(cls, path: Path | str, device: str = "auto", batch_size: int = 32,
                        tta_flip: bool | None = None, packed: tuple[ModelCard, bytes] | None = None,
                        runtime: Runtime = "auto", onnx_cache: Path | None = None) -> "FaceClassifier":
        model, card = load_checkpoint(path, device="cpu", packed=packed)
        return cls(model, card, device, batch_size, tta_flip, runtime, onnx_cache)

    @property
    def input_size(self) -> int:
        return self.card.architecture.input_size

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """Fake probability for each crop (N, S, S, 3 uint8) as float32 (N,)."""
        if len(crops) == 0:
            return np.zeros(0, np.float32)
        if crops.shape[1] != self.input_size:
            raise ValueError(f"crops are {crops.shape[1]} px but the model expects {self.input_size} px")
        scores = []
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                pixels = crops_to_tensor(crops[start:start + self.batch_size], self.device)
                probs = torch.sigmoid(self.network(pixels).float())
                if self.tta_flip:  # mirror images are equally real or fake: average both views (2x the cost)
                    probs = (probs + torch.sigmoid(self.network(pixels.flip(-1)).float())) / 2
                scores.append(probs.cpu().numpy())
        return np.concatenate(scores).astype(np.float32)


class ClassifyStage:
    """Batch stage: ``crops`` → ``face_scores``. All crops of the batch go through the network together."""

    def __init__(self, classifier: FaceClassifier):
        self.classifier = classifier

    @property
    def card(self) -> ModelCard:
        return self.classifier.card

    def __call__(self, batch: Batch) -> Batch:
        start = time.perf_counter()
        n = batch_size(batch)
        crops = [np.asarray(c, np.uint8) for c in batch["crops"]]
        counts = [len(c) for c in crops]
        nonempty = [c for c in crops if len(c)]
        flat = self.classifier.predict(np.concatenate(nonempty)) if nonempty else np.zeros(0, np.float32)
        splits = np.split(flat, np.cumsum(counts)[:-1]) if n else []
        out = {k: v for k, v in batch.items() if k != "crops"}
        out["face_scores"] = object_column(splits)
        per_row_ms = (time.perf_counter() - start) * 1000 / max(n, 1)
        out["classify_ms"] = np.full(n, per_row_ms, np.float64)
        return out
