"""The network and optimiser a run starts from (jobs/training/build.py)."""

from __future__ import annotations

import pytest
import torch

from jobs.training.train import fit

from training_fixtures import toy_config, toy_dataset


def test_init_starts_from_a_trained_detector_and_refuses_another_geometry(tmp_path):
    import hashlib

    from jobs.training.build import build_model
    from pipeline.checkpoint import load_checkpoint
    from pipeline.errors import CheckpointError

    fit(toy_config(tmp_path, epochs=2))
    start = tmp_path / "run" / "best.safetensors"
    trained, _ = load_checkpoint(start)
    config = toy_config(tmp_path / "ft", epochs=1, init=start)
    built = build_model(config, 32, 0.2)  # every tensor the checkpoint's, the head's too (not a seeded fresh one)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in built.state_dict().items())
    assert not torch.equal(build_model(toy_config(tmp_path / "plain", epochs=1), 32, 0.2).head[0].weight, built.head[0].weight)
    with pytest.raises(ValueError, match="does not point to a file"):  # pydantic's, before any crop is read
        toy_config(tmp_path / "none", init=tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="this run builds"):
        build_model(config, 48, 0.2)  # crops of another size: the checkpoint is not this run's network
    state = fit(config)  # one epoch fine-tuning from it keeps the toy task solved from the first validation
    assert state["history"][0]["val_video_auc"] == 1.0
    _, card = load_checkpoint(tmp_path / "ft" / "run" / "best.safetensors")
    assert card.training["init"] == {"version": "dev", "sha256": hashlib.sha256(start.read_bytes()).hexdigest()}


def test_drop_path_skips_blocks_in_training_only_and_adds_no_weights(tmp_path):
    from jobs.training.build import build_model

    config = toy_config(tmp_path, epochs=1, drop_path=0.5)
    model, plain = build_model(config, 32, 0.2), build_model(config.model_copy(update={"drop_path": 0.0}), 32, 0.2)
    assert model.state_dict().keys() == plain.state_dict().keys()  # the card's network: checkpoints load either way
    def rates(net):
        return [getattr(b.drop_path, "drop_prob", 0.0) for stage in net.encoder.blocks for b in stage]

    skip = rates(model)
    assert skip[-1] == pytest.approx(0.5 * (len(skip) - 1) / len(skip)) and skip == sorted(skip)
    assert not any(rates(plain))
    plain.load_state_dict(model.state_dict())
    x = torch.rand(4, 3, 32, 32) * 255
    model.eval()
    plain.eval()
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))  # identity at inference
        model.train()
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        assert not torch.allclose(a, model(x))  # random in training


def test_layer_decay_slows_the_encoder_s_lower_layers_and_only_when_asked(tmp_path):
    from jobs.training.build import build_model, build_optimizer

    config = toy_config(tmp_path, epochs=1, layer_decay=0.8)
    model = build_model(config, 32, 0.2)
    assert len(build_optimizer(model, config.model_copy(update={"layer_decay": 0.0})).param_groups) == 1
    groups = build_optimizer(model, config).param_groups
    owner = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert len(owner) == sum(len(g["params"]) for g in groups) == len(list(model.parameters()))  # each once
    lr = dict((name, owner[id(p)]) for name, p in model.named_parameters())
    assert lr["head.0.weight"] == lr["encoder.conv_head.weight"] == config.lr
    assert lr["encoder.conv_stem.weight"] == pytest.approx(config.lr * 0.8 ** 16)  # 16 layers below the top
    assert lr["encoder.conv_stem.weight"] < lr["encoder.blocks.3.0.conv_pw.weight"] < lr["encoder.conv_head.weight"]
    # a real run: the scheduler drives every group, and the stem moves far less than the top
    start = {k: v.clone() for k, v in model.state_dict().items()}
    fit(config)
    trained = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["model"]
    moved = {k: float((trained[k].float() - start[k].float()).abs().mean()) for k in ("encoder.conv_stem.weight", "encoder.conv_head.weight")}
    assert 0 < moved["encoder.conv_stem.weight"] < 0.25 * moved["encoder.conv_head.weight"]


def test_datasets_cropped_differently_are_refused(tmp_path):
    from jobs.training.build import crop_geometry

    a, b = toy_dataset(tmp_path / "a", per_class=4), toy_dataset(tmp_path / "b", per_class=4, margin=0.3)
    assert crop_geometry([a, a]) == (32, 0.2)
    with pytest.raises(ValueError, match="differ in"):
        crop_geometry([a, b])
