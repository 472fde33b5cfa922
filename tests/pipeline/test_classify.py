"""The classify stage: batching, and horizontal-flip test-time augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.card import ModelCard
from pipeline.classify import FaceClassifier
from pipeline.card import ModelSpec
from pipeline.model import DeepfakeDetector


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    spec = ModelSpec(input_size=64)
    return DeepfakeDetector(spec), ModelCard(version="t", architecture=spec)


def test_flip_tta_makes_scores_mirror_invariant(network):
    model, card = network
    crops = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    mirrored = np.ascontiguousarray(crops[:, :, ::-1])
    plain = FaceClassifier(model, card, "cpu", batch_size=2)
    tta = FaceClassifier(model, card, "cpu", batch_size=2, tta_flip=True)
    assert not np.allclose(plain.predict(crops), plain.predict(mirrored), atol=1e-4)  # the network alone is not
    assert np.allclose(tta.predict(crops), tta.predict(mirrored), atol=1e-5)
    assert np.allclose(tta.predict(crops), (plain.predict(crops) + plain.predict(mirrored)) / 2, atol=1e-5)
    # the card decides by default; a setting overrides it
    assert FaceClassifier(model, card.model_copy(update={"tta_flip": True}), "cpu").tta_flip is True
    assert FaceClassifier(model, card.model_copy(update={"tta_flip": True}), "cpu", tta_flip=False).tta_flip is False


def test_batches_do_not_change_scores(network):
    model, card = network
    crops = np.random.default_rng(1).integers(0, 256, (7, 64, 64, 3), dtype=np.uint8)
    one = FaceClassifier(model, card, "cpu", batch_size=1).predict(crops)
    seven = FaceClassifier(model, card, "cpu", batch_size=7).predict(crops)
    assert one.shape == (7,) and np.allclose(one, seven, atol=1e-5)
    assert FaceClassifier(model, card, "cpu").predict(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0,)
