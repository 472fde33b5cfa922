"""The auxiliary blend-map head and its loss (jobs/training/blendmap.py)."""

from __future__ import annotations

import pytest
import torch


def test_blend_map_head_reads_the_stride_16_grid_of_the_latest_forward():
    import copy

    from jobs.training.blendmap import BlendMapHead
    from pipeline.card import ModelSpec
    from pipeline.model import DeepfakeDetector

    model = DeepfakeDetector(ModelSpec(input_size=64))
    head = BlendMapHead(model.encoder)
    with pytest.raises(RuntimeError, match="first"):
        head()
    model(torch.rand(3, 3, 64, 64) * 255)
    assert head().shape == (3, 1, 4, 4)
    ema = copy.deepcopy(model)  # an EMA copy keeps the hook but brings no copy of the head's weights
    assert sum(p.numel() for p in ema.parameters()) == sum(p.numel() for p in model.parameters())
    ema(torch.rand(2, 3, 64, 64) * 255)
    assert head().shape == (2, 1, 4, 4)
    head.remove()
    model(torch.rand(1, 3, 64, 64) * 255)
    assert head().shape[0] == 2  # no longer listening


def test_blend_map_loss_counts_only_known_maps():
    from jobs.training.blendmap import blend_map_loss

    logits = torch.full((3, 1, 2, 2), -2.0)  # not 0: at 0 BCE is ln 2 whatever the target
    maps = torch.zeros(3, 8, 8)
    maps[0, :4, :4] = 1.0
    known = torch.tensor([True, True, False])
    base = blend_map_loss(logits, maps, known)
    other = maps.clone()
    other[2] = 1.0  # an unknown map changes nothing
    assert float(blend_map_loss(logits, other, known)) == pytest.approx(float(base))
    other[1] = 1.0  # a known one does
    assert float(blend_map_loss(logits, other, known)) != pytest.approx(float(base))
    # the target is the map averaged onto the logits' grid: a logit that says so exactly has the least loss
    exact = torch.full((3, 1, 2, 2), -20.0)
    exact[0, 0, 0, 0] = 20.0
    assert float(blend_map_loss(exact, maps, known)) < 1e-6
    logits.requires_grad_(True)
    none = blend_map_loss(logits, maps, torch.zeros(3, dtype=torch.bool))
    none.backward()  # no known map: a zero that still backpropagates, so a batch of real fakes needs no branch
    assert float(none.detach()) == 0.0 and logits.grad is not None
