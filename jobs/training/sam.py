"""Sharpness-aware minimisation (Foret et al., ICLR 2021), as SBI's own training uses it.

Each step's gradient is taken at the weights moved ``rho`` up the normalised gradient, so the optimiser prefers
minima that stay low around them (flat), which is said to transfer better to data unlike the training's. Twice
the cost of a plain step: two forward and backward passes on the same batch."""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch


def ascend(params: Iterable[torch.nn.Parameter], rho: float) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Move every parameter with a gradient by ``rho * g / ||g||`` (one norm over all of them); return the moves
    to undo (each parameter with its original value), or None (nothing moved) when the gradient is zero or not
    finite (an AMP overflow step)."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return None
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.detach()) for p in params]))
    if not torch.isfinite(norm) or norm == 0:
        return None
    moves = []
    with torch.no_grad():
        for p in params:
            moves.append((p, p.detach().clone()))
            p.add_(p.grad * (rho / norm))
    return moves


def descend(moves: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Undo ``ascend`` exactly (a copy back, not a subtraction that rounds): the optimiser steps from the original
    weights with the perturbed point's gradient."""
    with torch.no_grad():
        for p, original in moves:
            p.copy_(original)


@contextlib.contextmanager
def frozen_norm_stats(module: torch.nn.Module) -> Iterator[None]:
    """BatchNorm's running statistics are left as the first pass set them: the perturbed pass sees weights that
    are never shipped, so its activations must not leak into the statistics."""
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
