"""Weight averaging ("model soup", Wortsman et al. 2022): one detector whose weights are the mean of
several runs fine-tuned from the same ImageNet start.

Why: runs that differ only in their pseudo-fakes (self-blends vs cross-identity blends) fail on different
unseen reals; their average scores like one network, at one network's cost (docs/training.md, v11 and v13)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from pipeline.card import ModelCard
from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.errors import CheckpointError

# what a card keeps of each ingredient's training record (its per-epoch history stays in the run folder)
_INGREDIENT_KEYS = ("best_epoch", "hyperparameters", "train_seconds", "hardware")


def soup(checkpoints: list[Path], output: Path, version: str) -> ModelCard:
    """Average ``checkpoints`` (same architecture) into ``output``; the card names each ingredient.

    Floating tensors are averaged, counters (BatchNorm's num_batches_tracked) come from the first. The
    operating point is left unset (threshold 0.5, no target FPR): fit it with ``evaluate --fit``."""
    if len(checkpoints) < 2:
        raise CheckpointError("a soup needs at least two checkpoints")
    loaded = [load_checkpoint(p) for p in checkpoints]  # each checked against its own card
    (model, first), rest = loaded[0], loaded[1:]
    for path, (_, card) in zip(checkpoints[1:], rest):
        if card.architecture != first.architecture:
            raise CheckpointError(f"{path} is a different architecture ({card.architecture.model_dump()}) "
                                  f"from {checkpoints[0]} ({first.architecture.model_dump()})")
        if card.normalisation != first.normalisation:  # weights trained on other inputs do not average
            raise CheckpointError(f"{path} was trained on other inputs ({card.normalisation.model_dump()}) "
                                  f"than {checkpoints[0]} ({first.normalisation.model_dump()})")
    states = [m.state_dict() for m, _ in loaded]
    with torch.no_grad():
        for key, tensor in states[0].items():
            if tensor.is_floating_point():
                tensor.copy_(torch.stack([s[key] for s in states]).mean(0))
    training = {k: v for k, v in first.training.items() if k not in (*_INGREDIENT_KEYS, "history")}
    training["hyperparameters"] = {"method": "uniform weight average (model soup)", "ingredients": len(loaded)}
    training["ingredients"] = [{"version": c.version, "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest(),
                                **{k: c.training[k] for k in _INGREDIENT_KEYS if k in c.training}}
                               for p, (_, c) in zip(checkpoints, loaded)]
    card = ModelCard(version=version, architecture=first.architecture, normalisation=first.normalisation,
                     min_track_frames=first.min_track_frames, training=training)
    save_checkpoint(model, card, output)
    return card
