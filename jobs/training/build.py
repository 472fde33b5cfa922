"""The network and optimiser a run starts from: one start for every seed (soups need it), ImageNet's encoder or
a trained detector's whole network, and optional layer-wise learning rates."""

from __future__ import annotations

import torch
from timm.optim import param_groups_layer_decay

from jobs.training.config import TrainConfig
from jobs.training.prepare import read_manifest
from pipeline.card import ModelSpec
from pipeline.checkpoint import load_checkpoint
from pipeline.crop import DEFAULT_MARGIN
from pipeline.errors import CheckpointError
from pipeline.imagenet import load_imagenet_lite
from pipeline.model import DeepfakeDetector


def crop_geometry(datasets: list) -> tuple[int, float]:
    """(crop size, margin) shared by every prepared dataset; the model is built for it and its card says so."""
    found = {}
    for dataset in datasets:
        manifest = read_manifest(dataset)
        found[str(dataset)] = (int(manifest["crop_size"]), float(manifest.get("margin", DEFAULT_MARGIN)))
    if len(set(found.values())) > 1:
        raise ValueError(f"prepared datasets differ in (crop size, margin): {found}; prepare them alike")
    return next(iter(found.values()))


def build_model(config: TrainConfig, input_size: int, crop_margin: float = DEFAULT_MARGIN) -> DeepfakeDetector:
    # One start for every run, whatever its seed: runs are averaged into soups (jobs/training/soup.py), and
    # two heads initialised apart hold their hidden units in different orders, so their mean is no network.
    torch.manual_seed(0)
    model = DeepfakeDetector(ModelSpec(encoder=config.encoder, input_mode=config.input_mode, input_size=input_size,
                                       crop_margin=crop_margin), drop_path_rate=config.drop_path)
    if config.init:  # whole network, head included; its card must describe the network this run builds
        start, card = load_checkpoint(config.init)
        if card.architecture != model.spec:
            raise CheckpointError(f"--init {config.init} is {card.architecture.model_dump()}, this run builds "
                                  f"{model.spec.model_dump()}: prepare crops of its size and margin, same encoder")
        model.load_state_dict(start.state_dict())
    elif config.imagenet:
        model.load_encoder_imagenet(load_imagenet_lite(config.encoder))
    return model


def build_optimizer(model: DeepfakeDetector, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; with ``layer_decay`` one group per encoder layer (timm's grouping: stem, each block, conv head)
    at lr x decay**(layers above it), the new head at the full lr. Weight decay stays on every parameter
    as in the one-group optimizer, so layer decay is the only difference between the two."""
    if not config.layer_decay:
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    groups = param_groups_layer_decay(model.encoder, config.weight_decay, weight_decay_exclude_1d=False,
                                      layer_decay=config.layer_decay)
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    groups.append({"params": [p for p in model.parameters() if id(p) not in encoder_ids], "lr_scale": 1.0,
                   "weight_decay": config.weight_decay})
    for group in groups:
        group["lr"] = config.lr * group.pop("lr_scale")
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
