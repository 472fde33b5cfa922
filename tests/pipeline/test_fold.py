"""Batch-norm folding (pipeline/fold.py): the shipped detector, folded, scores real face crops as unfolded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.checkpoint import load_checkpoint
from pipeline.classify import FaceClassifier
from pipeline.fold import fold_batchnorm
from pipeline.preprocess import crops_to_tensor
from helpers import photo_crops

ROOT = Path(__file__).resolve().parents[2]


def test_folded_classifier_scores_as_the_unfolded_network():
    model, card = load_checkpoint(ROOT / "pipeline" / "checkpoints" / "detector.safetensors")
    model.eval()
    crops = photo_crops(card.architecture.input_size)
    with torch.inference_mode():
        reference = torch.sigmoid(model(crops_to_tensor(crops, "cpu"))).numpy()
    classifier = FaceClassifier(model, card, "cpu", batch_size=4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in classifier.model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the caller's copy is untouched
    assert reference.std() > 0.01  # real, varied scores, so agreement means something
    np.testing.assert_allclose(classifier.predict(crops), reference, atol=1e-4)


def test_fold_counts_pairs_and_refuses_training_mode():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    with pytest.raises(ValueError):
        fold_batchnorm(net)
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    net.eval()
    x = torch.randn(2, 3, 8, 8)
    before = net(x)
    assert fold_batchnorm(net) == 1 and isinstance(net[1], torch.nn.Identity)
    torch.testing.assert_close(net(x), before, atol=1e-5, rtol=1e-5)
