"""Weight averaging ("model soup", Wortsman et al. 2022): one detector whose weights are the mean of
several runs fine-tuned from the same ImageNet start.

Why: runs that differ only in their pseudo-fakes (self-blends vs cross-identity blends) fail on different
unseen reals; their average scores like one network, at one network's cost (docs/training.md, v11)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from pipeline.card import ModelCard, read_card, trained_card
from pipeline.checkpoint import save_checkpoint
from pipeline.errors import CheckpointError
from pipeline.model import DeepfakeDetector

# what a card keeps of each ingredient's training record (its per-epoch history stays in the run folder)
_INGREDIENT_KEYS = ("best_epoch", "hyperparameters", "train_seconds", "hardware")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def average_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean of the floating tensors in fp32; counters (BatchNorm's num_batches_tracked) from the first."""
    first = states[0]
    for i, state in enumerate(states[1:], 2):
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in first):
            raise CheckpointError(f"ingredient {i} does not have the first one's tensors: not the same network")
    return {k: torch.stack([s[k].float() for s in states]).mean(0) if v.is_floating_point() else v.clone()
            for k, v in first.items()}


def soup(checkpoints: list[Path], output: Path, version: str) -> ModelCard:
    """Average ``checkpoints`` (same architecture) into ``output``; the card names each ingredient.

    The operating point is left unset (threshold 0.5, no target FPR): fit it with ``evaluate --fit``."""
    if len(checkpoints) < 2:
        raise CheckpointError("a soup needs at least two checkpoints")
    cards = [trained_card(read_card(p), p) for p in checkpoints]
    spec = cards[0].architecture
    for path, card in zip(checkpoints[1:], cards[1:]):
        if card.architecture != spec:
            raise CheckpointError(f"{path} is a different architecture ({card.architecture.model_dump()}) "
                                  f"from {checkpoints[0]} ({spec.model_dump()})")
    try:
        states = [load_file(str(p)) for p in checkpoints]
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read weights: {exc}") from exc
    model = DeepfakeDetector(spec)
    try:
        model.load_state_dict(average_state(states))
    except RuntimeError as exc:  # names or shapes the card's architecture does not have
        raise CheckpointError(f"the ingredients do not fit architecture {spec.model_dump()}: {str(exc)[:300]}") from exc
    base = cards[0].training
    training = {k: v for k, v in base.items() if k not in (*_INGREDIENT_KEYS, "history")}
    training["hyperparameters"] = {"method": "uniform weight average (model soup)", "ingredients": len(cards)}
    training["ingredients"] = [{"version": c.version, "sha256": _sha256(p),
                                **{k: c.training[k] for k in _INGREDIENT_KEYS if k in c.training}}
                               for p, c in zip(checkpoints, cards)]
    card = ModelCard(version=version, architecture=spec, normalisation=cards[0].normalisation,
                     min_track_frames=cards[0].min_track_frames, training=training)
    save_checkpoint(model, card, output)
    return card
