"""Weights and their card agree (pipeline/checkpoint.py): the weights' metadata says what they are, a load checks it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save

from pipeline.card import ModelCard, ModelSpec, card_path, pack_checkpoint, read_card, write_card
from pipeline.checkpoint import check_card, load_checkpoint, save_checkpoint
from pipeline.errors import CheckpointError
from pipeline.model import DeepfakeDetector


def _saved(path, version: str, **spec):
    torch.manual_seed(0)
    model = DeepfakeDetector(ModelSpec(**{"input_size": 64, **spec}))
    return save_checkpoint(model, ModelCard(version=version, architecture=model.spec), path)


def _refused(path, packed=None) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path, packed=packed)
    assert caught.value.code == "checkpoint_error"
    return str(caught.value)


def test_the_weights_say_what_they_are_and_a_card_beside_other_weights_is_refused(tmp_path):
    ours = _saved(tmp_path / "ours.safetensors", "run-a")
    with safe_open(str(ours), "pt") as weights:
        metadata = weights.metadata()
    assert metadata["version"] == "run-a" and json.loads(metadata["architecture"]) == read_card(ours).architecture.model_dump()
    # another run's card, same network (the tensors fit it; a size changes none): another version, size and margin
    other = _saved(tmp_path / "other" / "best.safetensors", "run-b", input_size=96, crop_margin=0.15)
    shutil.copy(card_path(other), card_path(ours))
    said = _refused(ours)
    assert "version 'run-a', the card says 'run-b'" in said and "crop_margin=0.3" in said and "input_size=64" in said
    assert "input_size=64" in _refused(ours, packed=pack_checkpoint(ours))  # a scan worker's load checks it too
    with pytest.raises(CheckpointError) as caught:  # and the scan's driver, from the header alone, before Ray starts
        check_card(ours, pack_checkpoint(ours))
    assert str(caught.value) == said
    check_card(other, pack_checkpoint(other))
    with pytest.raises(CheckpointError, match="cannot read weights"):
        check_card(ours, (read_card(ours), b"not a safetensors file"))
    load_checkpoint(other)  # its own card: loads


def test_weights_that_record_name_and_version_only_load_with_their_card(tmp_path, detector_checkpoint):
    """The shipped detector predates the architecture in the metadata: what it does say is still checked."""
    load_checkpoint(detector_checkpoint)
    path = tmp_path / "old.safetensors"
    torch.manual_seed(0)
    model = DeepfakeDetector(ModelSpec(input_size=64))
    card = ModelCard(version="v1", architecture=model.spec)
    path.write_bytes(save({k: v.contiguous() for k, v in model.state_dict().items()}, metadata={"version": "v1", "name": card.name}))
    write_card(card, path)
    assert load_checkpoint(path)[1].version == "v1"
    card.architecture.crop_margin = 0.15  # unknown to these weights: not refused
    card.threshold = 0.7
    write_card(card, path)
    assert load_checkpoint(path)[1].threshold == 0.7
    card.version = "v2"
    write_card(card, path)
    assert "version 'v1', the card says 'v2'" in _refused(path)


def test_an_edited_normalisation_is_refused_where_the_weights_record_theirs(tmp_path):
    """The card's normalisation builds the network, so an edited ``rgb_mean`` would change every score silently."""
    from pipeline.config import DEFAULT_CHECKPOINT

    ours = _saved(tmp_path / "ours.safetensors", "run-a")
    with safe_open(str(ours), "pt") as weights:
        assert json.loads(weights.metadata()["normalisation"]) == read_card(ours).normalisation.model_dump(mode="json")
    card = json.loads(card_path(ours).read_text())
    card["normalisation"]["rgb_mean"] = [0.485, 0.456, 0.406]
    card_path(ours).write_text(json.dumps(card))
    said = _refused(ours)
    assert "saved for rgb_mean=(0.5, 0.5, 0.5), the card says (0.485, 0.456, 0.406)" in said, said
    with pytest.raises(CheckpointError, match="rgb_mean"):  # the scan's driver, from the header alone
        check_card(ours, pack_checkpoint(ours))
    # weights written before it say no normalisation and load with their card as it is: the shipped v16 ...
    with safe_open(str(DEFAULT_CHECKPOINT), "pt") as weights:
        assert "normalisation" not in weights.metadata()
    assert load_checkpoint(DEFAULT_CHECKPOINT)[1].version == read_card(DEFAULT_CHECKPOINT).version
    # ... and a run's that records its architecture only
    with safe_open(str(ours), "pt") as weights:
        tensors = {k: weights.get_tensor(k) for k in weights.keys()}
        older = {k: v for k, v in weights.metadata().items() if k != "normalisation"}
    ours.write_bytes(save(tensors, metadata=older))
    assert load_checkpoint(ours)[1].normalisation.rgb_mean == (0.485, 0.456, 0.406)
