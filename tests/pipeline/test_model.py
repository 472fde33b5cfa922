"""SRM filters, the ImageNet weight mapping, the detector network and checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.card import ModelCard, ModelSpec, card_path
from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.errors import CheckpointError, NoTrainedModelError
from pipeline.imagenet import imagenet_classifier, load_imagenet_lite, map_lite_state_dict
from pipeline.model import DeepfakeDetector
from pipeline.preprocess import RGB_MEAN, RGB_STD, SRM_TRUNCATE, crops_to_tensor
from pipeline.srm import SRM_KERNELS, SRMFilter


def test_srm_is_zero_on_flat_images():
    flat = torch.full((1, 3, 32, 32), 123.0)
    out = SRMFilter(truncate=None)(flat)
    assert torch.allclose(out[..., 2:-2, 2:-2], torch.zeros(1), atol=1e-4)
    assert all(abs(float(k.sum())) < 1e-6 for k in SRM_KERNELS)


def test_srm_known_response_on_a_step_edge():
    step = torch.zeros(1, 3, 16, 16)
    step[..., 8:] = 1.0  # vertical edge between columns 7 and 8, height 1 per channel
    out = SRMFilter(truncate=None)(step)[0, :, 8]  # one row, far from the top/bottom border
    # edge filter (third kernel: [1, -2, 1] / 2 horizontally), summed over 3 channels: ±1.5 at the edge
    assert out[2, 7].item() == pytest.approx(1.5) and out[2, 8].item() == pytest.approx(-1.5)
    assert out[2, 3].item() == pytest.approx(0) and out[2, 12].item() == pytest.approx(0)
    # the two square kernels have zero column sums: a vertical edge gives them no response at all
    assert torch.allclose(out[:2], torch.zeros(1), atol=1e-6)
    # an impulse returns each kernel itself (flipped, i.e. unchanged: they are symmetric), times 3 channels
    impulse = torch.zeros(1, 3, 11, 11)
    impulse[..., 5, 5] = 1.0
    response = SRMFilter(truncate=None)(impulse)[0, :, 3:8, 3:8]
    assert torch.allclose(response, SRM_KERNELS * 3, atol=1e-6)
    # truncation clips strong residuals
    assert SRMFilter(truncate=0.5)(step)[0, 2, 8, 7].item() == pytest.approx(0.5)


@pytest.mark.parametrize("name,size", [("tf_efficientnet_lite0", 224), ("tf_efficientnet_lite1", 240),
                                       ("tf_efficientnet_lite2", 260)])
def test_imagenet_lite_mapping_classifies_real_photos(name, size):
    """The packaged EfficientNet-Lite0/1/2 weights, mapped onto timm by position, recognise skimage's photos
    (a wrong mapping that still fits every shape gives noise, not a cat)."""
    import cv2
    import skimage.data

    model = imagenet_classifier(name)

    def top5(image):
        x = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        x = torch.from_numpy((x - 0.5) / 0.5).permute(2, 0, 1)[None]
        with torch.inference_mode():
            return model(x).softmax(1)[0].topk(5).indices.tolist()

    cat = top5(skimage.data.chelsea())
    assert cat[0] in (281, 282, 283, 284, 285, 286, 287)  # ImageNet's domestic/wild cat classes
    assert {281, 282, 285} <= set(cat)
    assert 967 in top5(skimage.data.coffee()) or 504 in top5(skimage.data.coffee())  # espresso / coffee mug


def test_mapping_refuses_mismatches():
    target = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    with pytest.raises(CheckpointError, match="count"):
        map_lite_state_dict({"x": torch.zeros(2, 3)}, target)
    with pytest.raises(CheckpointError, match="does not fit"):
        map_lite_state_dict({"x": torch.zeros(3, 2), "y": torch.zeros(4)}, target)


@pytest.mark.parametrize("mode", ["srm", "rgb+srm", "rgb"])
def test_detector_forward_and_imagenet_init(mode):
    model = DeepfakeDetector(ModelSpec(input_mode=mode, input_size=64)).eval()
    imagenet = load_imagenet_lite()
    model.load_encoder_imagenet(imagenet)
    crops = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    pixels = crops_to_tensor(crops)
    out = model(pixels)
    assert out.shape == (3,) and torch.isfinite(out).all()
    stem = model.encoder.conv_stem.weight
    assert stem.shape[1] == (6 if mode == "rgb+srm" else 3)
    inputs = model.normalise(pixels)
    rgb = (pixels / 255 - torch.tensor(RGB_MEAN).view(1, 3, 1, 1)) / torch.tensor(RGB_STD).view(1, 3, 1, 1)
    if mode == "rgb+srm":  # ImageNet's filters, halved, for both halves
        assert torch.equal(stem, torch.cat([imagenet["conv_stem.weight"]] * 2, dim=1) * 0.5)
    if mode == "rgb":  # ImageNet's own stem on the RGB channels alone
        assert torch.equal(stem, imagenet["conv_stem.weight"]) and torch.allclose(inputs, rgb, atol=1e-5)
    else:  # the SRM residuals are there (last three channels), and RGB before them
        assert torch.allclose(inputs[:, -3:], model.srm(pixels) / SRM_TRUNCATE)
        assert mode == "srm" or torch.allclose(inputs[:, :3], rgb, atol=1e-5)


def _saved(tmp_path, **card_fields):
    torch.manual_seed(0)
    model = DeepfakeDetector(ModelSpec(input_size=64)).eval()
    card = ModelCard(version="t1", architecture=model.spec, threshold=0.42, **card_fields)
    return model, save_checkpoint(model, card, tmp_path / "m.safetensors")


def test_checkpoint_round_trip(tmp_path):
    model, path = _saved(tmp_path)
    loaded, card = load_checkpoint(path)
    assert card.version == "t1" and card.threshold == 0.42 and card.architecture == model.spec
    x = crops_to_tensor(np.random.default_rng(1).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8))
    with torch.inference_mode():
        # fp16 storage: outputs agree to fp16 precision
        assert torch.allclose(model(x), loaded(x), atol=2e-2)
    assert json.loads(card_path(path).read_text())["normalisation"]["rgb_mean"] == [0.5, 0.5, 0.5]


def test_checkpoint_files_follow_the_umask(tmp_path):
    """Weights another account can read (a service serving them); safetensors' save_file makes them 0600."""
    import os

    old = os.umask(0o022)
    try:
        _, path = _saved(tmp_path)
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777, card_path(path).stat().st_mode & 0o777) == (0o644, 0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, card_path(path).name])


def test_checkpoint_mismatch_says_what_is_wrong(tmp_path):
    _, path = _saved(tmp_path)
    card = json.loads(card_path(path).read_text())
    card["architecture"]["head_hidden"] = 64
    card_path(path).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=r"head\.0\.weight.*\(128, 1280\).*\(64, 1280\)"):
        load_checkpoint(path)
    card["architecture"]["input_mode"] = "srm"
    card["architecture"]["head_hidden"] = 128
    card_path(path).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="conv_stem"):
        load_checkpoint(path)


def test_missing_or_untrained_checkpoints(tmp_path):
    with pytest.raises(NoTrainedModelError, match="no trained detector is installed"):
        load_checkpoint(tmp_path / "none.safetensors")
    _, path = _saved(tmp_path, trained=False)
    with pytest.raises(NoTrainedModelError, match="untrained"):
        load_checkpoint(path)
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(path, require_trained=False)
    card_path(path).unlink()
    with pytest.raises(CheckpointError, match="no model card"):
        load_checkpoint(path)


def test_the_cards_normalisation_builds_the_network(tmp_path):
    """Preprocessing travels with the weights: a card whose normalisation differs loads a network that uses it
    (it had been shown and keyed but never read: the constants were built in whatever the card said)."""
    from pipeline.card import Normalisation, read_card
    from pipeline.runtime import graph_key

    model, path = _saved(tmp_path)
    x = crops_to_tensor(np.random.default_rng(1).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8))
    plain, card = load_checkpoint(path)
    other = Normalisation(rgb_mean=(0.485, 0.456, 0.406), rgb_std=(0.229, 0.224, 0.225), srm_truncate=2.0)
    retrained = DeepfakeDetector(model.spec, other)  # the same weights, saved as trained on other inputs
    retrained.load_state_dict(model.state_dict())
    save_checkpoint(retrained, card.model_copy(update={"normalisation": other}), path)
    loaded, _ = load_checkpoint(path)
    assert loaded.normalisation == other and torch.allclose(loaded.rgb_std.flatten(), torch.tensor(other.rgb_std) * 255)
    assert loaded.srm.truncate == 2.0
    with torch.inference_mode():
        assert not torch.allclose(plain(x), loaded(x), atol=1e-3)
    assert graph_key(plain, 64) != graph_key(loaded, 64)  # an exported ONNX graph is not reused across them
    with pytest.raises(CheckpointError):
        save_checkpoint(plain, read_card(path), tmp_path / "again.safetensors")  # the card must describe the model
    (tmp_path / "m.json").write_text((tmp_path / "m.json").read_text().replace('"srm_truncate"', '"srm_trunc"'))
    with pytest.raises(CheckpointError):
        read_card(path)  # a misspelt key is refused, not ignored
