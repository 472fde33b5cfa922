"""Sharpness-aware minimisation (jobs/training/sam.py): the perturbation, its undoing, BatchNorm left alone, and a
toy run that still learns with it on."""

import math

import pytest
import torch

from jobs.training.sam import ascend, descend, frozen_norm_stats
from jobs.training.train import fit

from training_fixtures import toy_config


def _params(*values):
    return [torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for v in values]


def test_ascend_moves_rho_up_the_gradient_and_descend_undoes_it():
    params = _params([1.0, -2.0], [0.5])
    loss = sum((p ** 4).sum() for p in params)
    loss.backward()
    before = [p.detach().clone() for p in params]
    grads = torch.cat([p.grad.flatten() for p in params])
    moves = ascend(params, 0.05)
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(params, before)])
    assert math.isclose(float(step.norm()), 0.05, rel_tol=1e-9)                 # moved exactly rho in all
    assert torch.allclose(step, grads / grads.norm() * 0.05)                     # along the gradient
    # the gradient SAM steps with is the perturbed point's: 4 (w + e)^3, not 4 w^3
    for p in params:
        p.grad = None
    sum((p ** 4).sum() for p in params).backward()
    perturbed = torch.cat([p.grad.flatten() for p in params])
    assert torch.allclose(perturbed, 4 * (torch.cat([b.flatten() for b in before]) + step) ** 3)
    assert not torch.allclose(perturbed, grads)
    descend(moves)
    for p, b in zip(params, before):
        assert torch.equal(p.detach(), b)                                         # the step starts from w itself


@pytest.mark.parametrize("grad", [0.0, float("inf"), float("nan")])
def test_ascend_leaves_weights_alone_on_a_zero_or_overflowed_gradient(grad):
    (p,) = _params([1.0, 2.0])
    p.grad = torch.full_like(p, grad)
    assert ascend([p], 0.05) is None
    assert torch.equal(p.detach(), torch.tensor([1.0, 2.0], dtype=torch.float64))
    q = torch.nn.Parameter(torch.ones(2))  # no gradient at all: nothing to move
    assert ascend([q], 0.05) is None


def test_perturbed_pass_leaves_batchnorm_statistics_as_they_were():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).train()
    bn = net[1]
    net(torch.randn(16, 3))
    mean, var, count = bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)
    with frozen_norm_stats(net):
        net(torch.randn(16, 3) * 5 + 3)
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert int(bn.num_batches_tracked) == count and bn.momentum == 0.1           # restored
    net(torch.randn(16, 3) * 5 + 3)
    assert not torch.equal(bn.running_mean, mean)                               # and live again after


def test_training_with_sam_still_learns(tmp_path):
    state = fit(toy_config(tmp_path, sam_rho=0.05))
    losses = [h["train_loss"] for h in state["history"]]
    assert losses[-1] < losses[0] * 0.7
    assert state["history"][-1]["val_video_auc"] == 1.0
