"""Weight averaging: the soup is the mean of its ingredients, names them, and refuses mismatched networks."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from jobs.training.soup import soup
from pipeline.card import read_card
from pipeline.checkpoint import imagenet_init_checkpoint, load_checkpoint, save_checkpoint
from pipeline.errors import CheckpointError


@pytest.fixture(scope="module")
def ingredients(tmp_path_factory):
    """Two real Lite0 detectors that differ in every floating tensor (the second one's weights shifted)."""
    folder = tmp_path_factory.mktemp("soup")
    first = imagenet_init_checkpoint(folder / "a.safetensors", "run-a", "soup test")
    model, card = load_checkpoint(first, require_trained=False)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(0.25 if "running_var" not in name else 0.5)
    second = save_checkpoint(model, card.model_copy(update={"version": "run-b"}), folder / "b.safetensors")
    return first, second


def test_soup_is_the_mean_of_its_ingredients_and_names_them(ingredients, tmp_path):
    a, b = ingredients
    card = soup([a, b], tmp_path / "s.safetensors", "soup-test")
    wa, wb, ws = (load_file(str(p)) for p in (a, b, tmp_path / "s.safetensors"))
    head = "head.0.weight"
    assert not torch.equal(wa[head], wb[head])
    for key in (head, "encoder.conv_stem.weight", "encoder.bn1.running_var"):
        expected = ((wa[key].float() + wb[key].float()) / 2).half()
        assert torch.equal(ws[key], expected), key
    assert read_card(tmp_path / "s.safetensors") == card
    assert [i["version"] for i in card.training["ingredients"]] == ["run-a", "run-b"]
    assert all(len(i["sha256"]) == 64 for i in card.training["ingredients"])
    assert card.threshold == 0.5 and card.target_fpr is None  # to be fitted on validation, not inherited
    model, _ = load_checkpoint(tmp_path / "s.safetensors")  # loads as a normal detector
    assert model.spec == card.architecture


def test_soup_refuses_different_architectures(ingredients, tmp_path):
    from pipeline.model import DeepfakeDetector

    a, b = ingredients
    model, card = load_checkpoint(b)
    wider = card.architecture.model_copy(update={"crop_margin": 0.15})  # same tensors, crops of another margin
    other = DeepfakeDetector(wider)
    other.load_state_dict(model.state_dict())
    other_path = save_checkpoint(other, card.model_copy(update={"architecture": wider}), tmp_path / "c.safetensors")
    with pytest.raises(CheckpointError, match="different architecture"):
        soup([a, other_path], tmp_path / "s.safetensors", "x")
    # b's weights under that card: not a checkpoint of another architecture but a mismatch, refused on load
    copied = tmp_path / "d.safetensors"
    copied.write_bytes(b.read_bytes())
    copied.with_suffix(".json").write_text(other_path.with_suffix(".json").read_text())
    with pytest.raises(CheckpointError, match="saved for crop_margin=0.3"):
        soup([a, copied], tmp_path / "s.safetensors", "x")
    with pytest.raises(CheckpointError, match="at least two"):
        soup([a], tmp_path / "s.safetensors", "x")
    assert not (tmp_path / "s.safetensors").exists()


def test_soup_command_reports_a_code_not_a_traceback(ingredients, tmp_path):
    a, _ = ingredients
    missing = tmp_path / "missing.safetensors"
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "soup", str(a), str(missing), "-o", str(tmp_path / "s.safetensors"),
                           "--version", "x"], capture_output=True, text=True, timeout=120)
    # a mistyped input is named as such, not taken for "no trained detector is installed"
    assert proc.returncode == 2 and proc.stderr.strip() == f"checkpoint_error: checkpoint {missing} does not exist"
    assert "Traceback" not in proc.stderr


def test_runs_of_any_seed_start_from_one_network(tmp_path):
    """Soups average runs: their heads must start equal, or the hidden units of the two would not line up."""
    from jobs.training.train import TrainConfig, build_model

    heads = []
    for seed in (0, 7):
        torch.manual_seed(seed)  # whatever the caller's generator holds
        model = build_model(TrainConfig(dataset=tmp_path, out_dir=tmp_path, seed=seed, imagenet=False), 64)
        heads.append(model.state_dict()["head.0.weight"])
    assert torch.equal(*heads)
